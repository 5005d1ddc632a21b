"""The portable executor: a task as a plain child process, no namespaces, no cgroups.

The executor of Windows, forceable on Linux (``new_executor("portable")``).
This module owns its launch (``subprocess.Popen`` in a session / process group
of its own, the program found by ``find_program``), its process object
(``PopenProcess``, the one reap shared by every waiter) and how the task's
processes are found for stats and kills: psutil's tree below the main process
plus every process of its session (POSIX: a double-forked daemon stays in it)
or of its Job Object (Windows; ``winjob`` holds all Windows-specific code).

* cwd defaults to the task directory; ``user`` (POSIX; another user needs a
  root caller) comes from the host's /etc and sets USER/LOGNAME/HOME unless
  given; without it the task runs as the caller. When the main process exits, the rest of the task is
  killed before the reap, as a container's cgroup removal would do.
* ``ExitResult.usage``: POSIX reaps with wait4, so it holds the CPU times of
  the main process and the children it reaped (``source="rusage"``); Windows
  has no rusage: the last ``stats()`` sample, or None.
* Refused (ConfigError): ``isolation.rootfs``/``mounts``/``hostname``; any
  ``Resources`` limit on POSIX (no cgroup), any but ``memory`` (the job's
  limit) on Windows. Every other ``Isolation`` field is ignored.
* Not contained on Linux: a process that calls setsid() leaves the session
  and, once its parent is gone, the tree, so it escapes stats and the final
  kill. Only a cgroup catches that: use the universal or container executor.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil

from ..config import ExecCommand, Resources
from ..errors import ConfigError, LaunchError, TaskExitedError
from ..process import ExitResult, decode_wait_status, rusage_usage
from ..stats.pidtree import PidCollector
from ..stats.usage import ResourceUsage
from ..users import TaskUser, resolve_user
from . import winjob
from .base import Executor
from .lookup import find_program
from .taskfiles import StdioFiles, check_host_isolation, prepare_task_dir, user_environment

__all__ = ["PortableExecutor", "PopenProcess"]

log = logging.getLogger(__name__)

_WINDOWS = os.name == "nt"
_KILL_TIMEOUT = 5.0  # seconds of kill rounds before giving up on a task that keeps forking
_NO_CGROUPS = "needs cgroups: use the universal or container executor"


class PopenProcess:
    """The main process of a portable task, reaped exactly once by a thread of its own.

    The reaper thread waits for the exit *without* reaping (POSIX:
    ``waitid(WNOWAIT)``; Windows: the Popen's handle pins the pid), runs
    ``before_reap`` while the zombie still pins the pid, group and session ids
    (so killing stragglers cannot hit a stranger), reaps (``wait4`` for the
    rusage), runs ``on_exit`` once and wakes every ``wait``/``wait_async``
    with that same ``ExitResult``. Call ``start()`` once the owner holds it.
    """

    def __init__(self, popen: subprocess.Popen, started_at: float, *,
                 before_reap: Optional[Callable[[], None]] = None,
                 on_exit: Optional[Callable[[ExitResult], ExitResult]] = None) -> None:
        self.pid: int = popen.pid
        self.started_at = started_at
        self._popen = popen
        self._before_reap, self._on_exit = before_reap, on_exit
        self._lock = threading.Lock()
        self._exited = False  # the exit was seen: no more signals to the main process
        #: True once wait4 freed the pid (set under the lock): it and its group
        #: and session ids may name a stranger now.
        self.reaped = False
        #: The ExitResult once reaped and the on_exit hook ran; None before.
        self.result: Optional[ExitResult] = None
        self._done = threading.Event()
        self._futures: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._thread = threading.Thread(target=self._reaper, name=f"pyexec-reap-{self.pid}", daemon=True)

    def start(self) -> None:  # not in __init__: the owner must hold this object before hooks run
        self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> ExitResult:
        """Block until the task exits; ``TimeoutError`` after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"task pid {self.pid} still running after {timeout}s")
        assert self.result is not None
        return self.result

    async def wait_async(self) -> ExitResult:
        """Await the exit without blocking the loop (the reaper thread wakes it); cancellable."""
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._lock:
            if self.result is not None:
                return self.result
            self._futures.append(entry)
        try:
            return await entry[1]
        finally:
            with self._lock:
                if entry in self._futures:  # cancelled before the exit
                    self._futures.remove(entry)

    def send_signal(self, sig: int) -> bool:
        """Signal the main process (Windows: see ``winjob.send_signal``); False once it has exited."""
        with self._lock:
            if self._exited:
                return False
            if _WINDOWS:
                if self._popen.poll() is not None:
                    return False
                winjob.send_signal(self._popen, sig)
                return True
            try:
                # An exited but unreaped process still "accepts" signals: ask first.
                if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return False
                os.kill(self.pid, sig)
            except (ChildProcessError, ProcessLookupError):
                return False
            return True

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the task's process group (POSIX), unless the pid is released."""
        with self._lock:
            if not self.reaped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, sig)  # a session leader's pid is its pgid

    # -- the reaper thread -------------------------------------------------
    def _reaper(self) -> None:
        result: Optional[ExitResult] = None
        try:
            if _WINDOWS:
                self._popen.wait()
            else:
                with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: _reap copes
                    os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            with self._lock:
                self._exited = True
            self._hook("before_reap", self._before_reap)
            result = self._reap()
            result = self._hook("on_exit", self._on_exit, result) or result
        except BaseException:  # never leave waiters hanging
            log.exception("task pid %d: reaping failed", self.pid)
        result = result or ExitResult(exit_code=255, signal=None, oom_killed=False,
                                      started_at=self.started_at, finished_at=time.time())
        with self._lock:
            self._exited = True
            self.result = result
            futures, self._futures = self._futures, []
        self._done.set()
        for loop, future in futures:
            try:
                loop.call_soon_threadsafe(_resolve, future, result)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                pass

    def _hook(self, name: str, hook: Optional[Callable[..., Any]], *args: Any) -> Any:
        """Run a hook; its failure is logged, never stops the reap nor the waiters."""
        try:
            return None if hook is None else hook(*args)
        except Exception:
            log.exception("task pid %d: %s failed", self.pid, name)
            return None

    def _reap(self) -> ExitResult:
        usage = None
        if _WINDOWS:
            # No signals on Windows: terminate() and TerminateJobObject() make it exit 1.
            exit_code, sig, finished_at = self._popen.wait(), None, time.time()
            self.reaped = True
        else:
            with self._lock:
                self.reaped = True
                try:
                    _, status, rusage = os.wait4(self.pid, 0)
                    finished_at = time.time()
                    usage = rusage_usage(rusage.ru_utime, rusage.ru_stime, finished_at)
                except ChildProcessError:
                    status, finished_at = 0, time.time()
                exit_code, sig = decode_wait_status(status)
                # The Popen must never wait on the pid itself: it is not ours any more.
                self._popen.returncode = -sig if sig else exit_code
        return ExitResult(exit_code=exit_code, signal=sig, oom_killed=False,
                          started_at=self.started_at, finished_at=finished_at, usage=usage)


def _resolve(future: asyncio.Future, result: ExitResult) -> None:
    if not future.done():
        future.set_result(result)


def _check_resources(resources: Resources) -> None:
    for name in Resources.__dataclass_fields__:
        value = getattr(resources, name)
        if value is not None and not (_WINDOWS and name == "memory"):
            raise ConfigError(name, value, "cannot be enforced on Windows (only memory is)"
                              if _WINDOWS else _NO_CGROUPS)


class PortableExecutor(Executor):
    """Runs a task as a plain child process (see the module docstring for its limits)."""

    kind = "portable"

    def __init__(self) -> None:
        super().__init__()
        self._collector: Optional[PidCollector] = None
        self._task: Optional[PopenProcess] = None  # = self._proc, but set before the reaper runs
        self._job: Optional[winjob.JobObject] = None
        self._made_task_dir: Optional[str] = None
        self._last_usage: Optional[ResourceUsage] = None

    # -- launch ------------------------------------------------------------
    def _start(self, cmd: ExecCommand) -> PopenProcess:
        check_host_isolation(cmd, self.kind)  # refuse what cannot be honoured before anything exists
        _check_resources(cmd.resources)
        env, user = dict(cmd.env or {}), None
        if cmd.user is not None:
            if _WINDOWS:
                raise ConfigError("user", cmd.user, "cannot be switched by the portable executor on Windows")
            user = resolve_user(cmd.user, "/")
            if os.geteuid() != 0 and (user.uid, user.gid) != (os.geteuid(), os.getegid()):
                raise ConfigError("user", cmd.user, "can only be switched by a root caller")
            env = user_environment(env, user)
        # Looked up before anything is made: a missing program leaves no trace.
        program = find_program(cmd.argv[0], str(cmd.task_dir), env.get("PATH"))
        cwd = cmd.cwd or str(cmd.task_dir)
        stdio: Optional[StdioFiles] = None
        popen: Optional[subprocess.Popen] = None
        job: Optional[winjob.JobObject] = None
        try:
            self._made_task_dir = prepare_task_dir(str(cmd.task_dir))
            if not os.path.isdir(cwd):
                raise LaunchError("chdir", cwd, errno.ENOENT)
            if _WINDOWS:
                job = winjob.JobObject(_memory_bytes(cmd.resources))
            stdio = StdioFiles(cmd)
            started_at = time.time()
            popen = _popen(cmd, program, env, cwd, stdio.fds, user)  # (finally: ours are closed)
            if job is not None:
                job.assign(popen.pid)  # not atomic: what the task starts before this is outside the job
            else:
                _set_oom_score_adj(popen.pid, cmd.oom_score_adj)
        except BaseException:
            if popen is not None:
                _abort(popen, job)
            if job is not None:
                job.close()
            if self._made_task_dir is not None:
                shutil.rmtree(self._made_task_dir, ignore_errors=True)
                self._made_task_dir = None
            raise
        finally:
            if stdio is not None:
                stdio.close()
        self._job = job
        self._task = PopenProcess(popen, started_at, before_reap=self._kill_all, on_exit=self._on_exit)
        self._collector = PidCollector(popen.pid, extra_pids=job.pids if job is not None else self._session)
        self._task.start()
        log.debug("portable task %s launched as pid %d (%s)", cmd.name, popen.pid, program)
        return self._task

    def _session(self) -> List[int]:
        """Every process of the task's session, daemons that left the tree included."""
        task = self._task
        if task is None or task.reaped:
            return []  # a released session id may be a stranger's
        members = []
        for pid in psutil.pids():
            try:
                if os.getsid(pid) == task.pid:
                    members.append(pid)
            except OSError:
                continue
        return members

    # -- running -----------------------------------------------------------
    def _sample(self, per_process: bool = True) -> ResourceUsage:
        if self._collector is None:
            raise TaskExitedError("the task has not started")
        usage = self._last_usage = self._collector.sample()  # kept: Windows' ExitResult.usage
        return usage

    def update_resources(self, resources: Resources) -> None:
        """POSIX: nothing can be changed (no cgroups); Windows: the job's memory limit."""
        if not isinstance(resources, Resources):
            raise TypeError("update_resources() takes a Resources")
        _check_resources(resources)
        if self._running().result is not None:
            raise TaskExitedError("the task has exited")
        if self._job is not None and resources.memory is not None:
            self._job.set_memory_limit(_memory_bytes(resources))

    # -- the end -----------------------------------------------------------
    def _kill_all(self) -> None:
        """Kill the job, the tree and the session until nothing is left (or
        ``_KILL_TIMEOUT``). Also the reaper's ``before_reap``: what the task
        left running dies with its main process."""
        collector, task, job = self._collector, self._task, self._job
        if job is not None:
            job.terminate(1)
        if collector is None or task is None:
            return
        kill = signal.SIGTERM if _WINDOWS else signal.SIGKILL  # psutil: TerminateProcess on Windows
        deadline = time.monotonic() + _KILL_TIMEOUT
        while True:
            signalled = collector.kill_tree(kill)  # rescans: the tree and every session member
            if not _WINDOWS:
                task.signal_group(kill)
            if not signalled or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if signalled:
            log.warning("pid %d: processes %s still alive after %.0fs of kill rounds", task.pid, signalled,
                        _KILL_TIMEOUT)

    def _on_exit(self, result: ExitResult) -> ExitResult:
        if result.usage is None and self._last_usage is not None:
            result = dataclasses.replace(result, usage=self._last_usage)
        job, self._job = self._job, None
        if job is not None:
            job.close()  # KILL_ON_JOB_CLOSE: anything that slipped through dies now
        return result


def _popen(cmd: ExecCommand, program: str, env: Dict[str, str], cwd: str, fds: Tuple[int, int, int],
           user: Optional[TaskUser]) -> subprocess.Popen:
    """Start the task; a failure of the child before or at its exec becomes a LaunchError."""
    options: Dict[str, Any] = dict(executable=program, stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                   cwd=cwd, env=env, close_fds=True)
    if _WINDOWS:
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        # A session of its own: its pid is its process group and session id,
        # which is how the task's processes are found again.
        options.update(start_new_session=True, pass_fds=(), restore_signals=True)
        if user is not None:
            options.update(user=user.uid, group=user.gid, extra_groups=list(user.groups))
    try:
        return subprocess.Popen(list(cmd.argv), **options)
    except OSError as exc:
        err = exc.errno or errno.EIO
        if exc.filename == program:
            raise LaunchError("exec", program, err) from None
        # CPython names the cwd for every failure before exec (chdir, setgroups, setgid, setuid).
        step, path = ("credentials", str(cmd.user)) if user and os.path.isdir(cwd) else ("chdir", cwd)
        raise LaunchError(step, path, err) from None


def _memory_bytes(resources: Resources) -> Optional[int]:
    """``resources.memory`` in bytes (Resources has parsed a size text already)."""
    return None if resources.memory is None else int(resources.memory)


def _set_oom_score_adj(pid: int, value: int) -> None:
    """Write the task's oom_score_adj (Linux). Racy: from its exec to this write the
    task has the caller's value, and a child it forks then keeps it (the container
    executor writes it before exec; here no code may run in the child to do so)."""
    path = f"/proc/{pid}/oom_score_adj"
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as exc:
        # No /proc (not Linux), the task already exited, or the default that a
        # caller without CAP_SYS_RESOURCE cannot set below its own: best effort.
        if isinstance(exc, (FileNotFoundError, ProcessLookupError)) or value == 0:
            log.debug("pid %d: oom_score_adj not written: %s", pid, exc)
            return
        raise LaunchError("oom_score_adj", path, exc.errno or errno.EIO) from None


def _abort(popen: subprocess.Popen, job: Optional[winjob.JobObject]) -> None:
    """Kill and reap a task whose launch failed after it started."""
    with contextlib.suppress(OSError):
        if job is not None:
            job.terminate(1)
        if _WINDOWS:
            popen.kill()
        else:
            os.killpg(popen.pid, signal.SIGKILL)  # it leads its own group
    popen.wait()
