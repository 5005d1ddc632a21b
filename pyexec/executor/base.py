"""The executor interface every kind of executor implements.

An executor runs exactly one task: ``launch`` once, then ``wait``/``wait_async``,
``signal`` and ``shutdown``; it is a context manager whose exit shuts the task
down. Shared behaviour (state checks, shutdown's signal-grace-kill sequence,
stdio and task_dir preparation) lives here once; subclasses supply how a task
starts and how all of its processes are killed.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import os
import signal as _signal
import threading
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..config import ExecCommand
from ..users import TaskUser
from ..errors import ConfigError, PyexecError, TaskExitedError
from ..process import ExecResult, ExitResult, ProcessState, TaskHandle
from ..stats.usage import ResourceUsage

if TYPE_CHECKING:
    from .exec_streaming import ExecProcess

__all__ = ["Executor", "StdioFiles", "check_host_isolation", "user_environment", "prepare_task_dir"]

log = logging.getLogger(__name__)


class Executor(abc.ABC):
    """Runs one task. Thread-safe: any thread may wait, signal or shut down."""

    kind: str = "abstract"

    def __init__(self) -> None:
        self._proc: Optional[TaskHandle] = None
        self._cmd: Optional[ExecCommand] = None
        self._launch_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()

    # -- public API --------------------------------------------------------
    def launch(self, cmd: ExecCommand) -> ProcessState:
        """Start the task; returns once it has exec'd, or raises (leaving nothing behind)."""
        if not isinstance(cmd, ExecCommand):
            raise TypeError(f"launch() takes an ExecCommand, not {type(cmd).__name__}")
        with self._launch_lock:
            if self._cmd is not None or self._proc is not None:
                raise PyexecError("this executor has already launched a task; make a new one")
            self._cmd = cmd
            try:
                self._proc = self._start(cmd)
            except BaseException:
                self._cmd = None
                raise
        return ProcessState(pid=self._proc.pid, started_at=self._proc.started_at)

    def handle(self) -> Dict[str, Any]:
        """A small JSON-serialisable value from which ``pyexec.reattach()``
        rebuilds this executor, in this or any later process, while the task
        runs and after it ended (its exit is recorded)."""
        raise PyexecError(f"the {self.kind} executor cannot hand its task over (it has no monitor)")

    def _adopt(self, handle: Dict[str, Any]) -> None:
        """Take over the task of a parsed handle (``pyexec.reattach``)."""
        raise PyexecError(f"the {self.kind} executor cannot take a task over (it has no monitor)")

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def wait(self, timeout: Optional[float] = None) -> ExitResult:
        """The task's ExitResult; every waiter gets the same one. ``TimeoutError`` on timeout."""
        return self._running().wait(timeout)

    async def wait_async(self) -> ExitResult:
        return await self._running().wait_async()

    def stats(self, per_process: bool = False) -> ResourceUsage:
        """A usage sample of the whole task now; once it has exited, its last
        sample (``ExitResult.usage``). ``per_process`` adds each process's own
        figures (``processes``) next to a cgroup's totals; samples of the
        process-tree collector always carry them."""
        proc = self._running()
        if proc.result is None:
            try:
                return self._sample(per_process)
            except (FileNotFoundError, TaskExitedError) as exc:
                # The exit won the race and took the cgroup along; its final
                # sample is in the result (the reap holds it until then).
                try:
                    proc.wait(1.0)
                except TimeoutError:
                    raise exc from None
        usage = proc.wait().usage
        if usage is None:
            raise TaskExitedError("the task has exited and left no usage sample")
        return usage

    def stats_stream(self, interval: float = 1.0, per_process: bool = False) -> Iterator[ResourceUsage]:
        """Yield a sample every ``interval`` seconds while the task runs, then its
        final sample, then stop. ``cpu.percent`` of each covers the interval."""
        _check_interval(interval)
        proc = self._running()
        while proc.result is None:
            sample = self.stats(per_process)
            if proc.result is not None:
                break
            yield sample
            try:
                proc.wait(interval)
            except TimeoutError:
                continue
        final = proc.wait().usage
        if final is not None:
            yield final

    async def stats_stream_async(self, interval: float = 1.0,
                                 per_process: bool = False) -> AsyncIterator[ResourceUsage]:
        """``stats_stream`` for asyncio: the wait between samples does not block the loop."""
        _check_interval(interval)
        proc = self._running()
        exited = asyncio.ensure_future(proc.wait_async())
        try:
            while not exited.done():
                sample = self.stats(per_process)
                if proc.result is not None:
                    break
                yield sample
                await asyncio.wait([exited], timeout=interval)
            final = (await exited).usage
        finally:
            if not exited.done():
                exited.cancel()
        if final is not None:
            yield final

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the task's main process; False if the task has exited."""
        return self._running().send_signal(int(sig))

    def shutdown(self, signal: int = _signal.SIGTERM, grace: float = 5.0) -> Optional[ExitResult]:
        """Stop the task: ``signal``, up to ``grace`` s, then SIGKILL to every process.

        Idempotent; returns the ExitResult (None if nothing was launched).
        """
        proc = self._proc
        if proc is None:
            return None
        with self._shutdown_lock:
            if proc.result is None and grace > 0 and proc.send_signal(int(signal)):
                try:
                    return proc.wait(grace)
                except TimeoutError:
                    log.debug("task %d ignored signal %d for %.1fs; killing it", proc.pid, signal, grace)
            if proc.result is None:
                self._kill_all()
            return proc.wait()

    def exec(self, argv: Sequence[str], timeout: Optional[float] = 5.0, env: Optional[Mapping[str, str]] = None,
             cwd: Optional[str] = None, user: Optional[str] = None, output_limit: int = 64 * 1024) -> ExecResult:
        """Run ``argv`` inside the running task and wait for it: the task's
        namespaces, root, cgroup, user, capabilities, no_new_privs, rlimits
        and seccomp filter. ``env`` (the whole environment), ``cwd`` and
        ``user`` default to the task's. Its stdout and stderr, interleaved,
        are kept up to ``output_limit`` bytes (the rest is read, dropped and
        marked: ``truncated``). After ``timeout`` seconds the command and
        every process it started are killed and ``TimeoutError`` is raised;
        the task itself is untouched. ``LaunchError`` when the command cannot
        start (say, no such program in the task's root); ``TaskExitedError``
        when the task has exited."""
        raise PyexecError(f"the {self.kind} executor cannot exec into its task; "
                          f"the container and universal executors can")

    def exec_streaming(self, argv: Sequence[str], stdin: bool = True, tty: bool = False,
                       env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                       user: Optional[str] = None) -> "ExecProcess":
        """Start ``argv`` inside the running task like ``exec`` and return at
        once: an ``ExecProcess`` with ``stdin`` (a pipe, or None without
        ``stdin``), ``stdout`` (stdout and stderr in one pipe; with ``tty`` a
        pseudo-terminal that is the command's stdin, stdout, stderr and
        controlling terminal), ``wait()``, ``kill()``; as a context manager it
        kills what still runs and reaps it."""
        raise PyexecError(f"the {self.kind} executor cannot exec into its task; "
                          f"the container and universal executors can")

    def close(self) -> None:
        self.shutdown(grace=0)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- for subclasses ----------------------------------------------------
    def _running(self) -> TaskHandle:
        if self._proc is None:
            raise PyexecError("no task has been launched by this executor")
        return self._proc

    @abc.abstractmethod
    def _start(self, cmd: ExecCommand) -> TaskHandle:
        """Start the task and return its process; clean up everything on failure."""

    @abc.abstractmethod
    def _sample(self, per_process: bool) -> ResourceUsage:
        """A usage sample of the running task (``processes`` filled when asked)."""

    @abc.abstractmethod
    def _kill_all(self) -> None:
        """SIGKILL every process of the task (the main one last is fine)."""


# Close-on-exec and no controlling tty on POSIX; binary mode on Windows.
_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def check_host_isolation(cmd: ExecCommand, kind: str) -> None:
    """Refuse, before anything exists, the isolation an executor without
    namespaces cannot give: a root file system, mounts, a hostname. The rest
    of ``Isolation`` (the namespace set, masks, capabilities) describes the
    container and is ignored here; rlimits are honoured where the executor can."""
    isolation = cmd.isolation
    needs = "needs the container executor"
    if isolation.rootfs is not None:
        raise ConfigError("isolation.rootfs", isolation.rootfs, f"{needs} (the {kind} executor has none)")
    if isolation.mounts:
        raise ConfigError("isolation.mounts", [m.target for m in isolation.mounts],
                          f"{needs} (the {kind} executor has no mount namespace)")
    if isolation.hostname is not None:
        raise ConfigError("isolation.hostname", isolation.hostname,
                          f"{needs} (the {kind} executor has no uts namespace)")


def user_environment(env: Optional[Dict[str, str]], user: TaskUser) -> Dict[str, str]:
    """The task's environment with USER, LOGNAME and HOME of ``user`` unless set."""
    out = dict(env or {})
    name = user.name or str(user.uid)
    out.setdefault("USER", name)
    out.setdefault("LOGNAME", name)
    out.setdefault("HOME", user.home)
    return out


def prepare_task_dir(task_dir: str) -> Optional[str]:
    """Create ``task_dir`` (when missing) and ``task_dir/local``; returns
    ``task_dir`` when this call created it, so a failed launch can remove it."""
    made = None
    if not os.path.isdir(task_dir):
        os.makedirs(task_dir)
        made = task_dir
    os.makedirs(os.path.join(task_dir, "local"), exist_ok=True)
    return made


def _check_interval(interval: float) -> None:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ConfigError("interval", interval, "is not a positive number of seconds")


class StdioFiles:
    """The task's stdin/stdout/stderr fds, opened by us or given by the caller.

    Default: stdin from /dev/null. stdout/stderr without a path or fd go to
    ``task_dir/logs``: with ``log_pipes`` through a pipe each whose read end
    (``log_fds``) the task's monitor turns into rotated files
    (``<name>.stdout.N``); without, appended to ``<name>.stdout.0`` directly.
    """

    def __init__(self, cmd: ExecCommand, log_pipes: bool = False) -> None:
        self._opened: List[int] = []
        self.log_fds: List[int] = [-1, -1]
        self.log_dir: Optional[str] = None
        given = cmd.stdio_fds or (None, None, None)
        logs = os.path.join(cmd.task_dir, "logs")
        try:
            stdin = given[0] if given[0] is not None else self._open("stdin_path", cmd.stdin_path or os.devnull,
                                                                     os.O_RDONLY)
            out = []
            for index, stream in ((1, "stdout"), (2, "stderr")):
                path = getattr(cmd, f"{stream}_path")
                if given[index] is not None:
                    out.append(given[index])
                elif path is None and log_pipes:
                    out.append(self._log_pipe(index - 1, logs))
                else:
                    out.append(self._open_log(f"{stream}_path", path, logs, f"{cmd.name}.{stream}.0"))
            self.fds: Tuple[int, int, int] = (stdin, out[0], out[1])
        except BaseException:
            self.close()
            raise

    def _log_pipe(self, slot: int, logs: str) -> int:
        os.makedirs(logs, exist_ok=True)
        self.log_dir = logs
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        self._opened += [read_end, write_end]
        self.log_fds[slot] = read_end
        return write_end

    def _open(self, field: str, path: str, flags: int) -> int:
        try:
            fd = os.open(path, flags | _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise ConfigError(field, path, f"cannot be opened: {exc.strerror}") from None
        self._opened.append(fd)
        return fd

    def _open_log(self, field: str, path: Optional[str], logs: str, default_name: str) -> int:
        if path is None:
            os.makedirs(logs, exist_ok=True)
            path = os.path.join(logs, default_name)
        return self._open(field, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def close(self) -> None:
        while self._opened:
            os.close(self._opened.pop())
