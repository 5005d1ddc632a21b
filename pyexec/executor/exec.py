"""Exec into a running task: ``Executor.exec`` and ``Executor.exec_streaming``.

A command run this way is one more process of the task: the shim's child
joins the task's namespaces with ``setns`` on a pidfd of the task's monitor
(csrc/nsenter.c, join mode), so it sees the task's root, hostname, network
and processes; it is born in the task's cgroup and takes the task's
identity: user, groups, capabilities, no_new_privs, rlimits, oom_score_adj
and seccomp filter, rebuilt from a record made at launch (``exec_record``)
and kept in the state directory's task.json, so a reattached executor has
it too. argv, and optionally the environment, the working directory and the
user, are the caller's.

Like a task, the command runs below an init that execs pyexec-monitor: it
reaps the command, reports its status through the status pipe and holds the
read end of a lifeline whose write end the caller keeps. Closing that end
(a timeout, ``kill()``, or the caller dying) makes the monitor kill the
command's process group and every process it adopted; the monitor then
exits and the caller reaps it. No thread of the caller is needed.

    ex.exec(["hostname"])                        # ExecResult(exit_code=0, signal=None, output=b"web\\n", ...)

``exec_streaming`` (the caller holds the pipes or a pty) is in exec_streaming.py.
"""
from __future__ import annotations

import base64
import errno
import os
import select
import signal as _signal
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import _shim
from ..config import DEFAULT_PATH, ExecCommand, check_argv, check_container_path, check_env, check_user
from ..errors import ConfigError, LaunchError, TaskExitedError
from ..process import ExecResult, decode_wait_status
from ..shim import CapabilitySets, Child, Credentials, MonitorPlan, SpawnPlan, abort_setup, finish
from ..users import TaskUser, resolve_user
from .base import user_environment

if TYPE_CHECKING:
    from .linux import LinuxExecutor

__all__ = ["ExecResult", "DEFAULT_OUTPUT_LIMIT", "exec_record", "run_exec"]

ffi = _shim.ffi
lib = _shim.lib

DEFAULT_OUTPUT_LIMIT = 64 * 1024
TRUNCATION_MARKER = b"\n[pyexec: output truncated, %d bytes dropped]\n"
EXITED = "the task has exited; cannot exec into it"
RECORD_VERSION = 1
KILL_GRACE = 5.0      # seconds for the monitor to kill and exit once the lifeline is closed
DRAIN_IDLE = 0.5      # after the monitor exited, stop reading output silent this long
_CHUNK = 64 * 1024



# -- the task's identity ---------------------------------------------------------

_ROOT = TaskUser(uid=0, gid=0, groups=(0,), name="root", home="/root")


def _user_record(user: Optional[TaskUser]) -> Optional[Dict[str, Any]]:
    if user is None:
        return None
    return {"uid": user.uid, "gid": user.gid, "groups": list(user.groups), "name": user.name, "home": user.home}


def _user_from_record(record: Optional[Mapping[str, Any]]) -> Optional[TaskUser]:
    if record is None:
        return None
    return TaskUser(uid=int(record["uid"]), gid=int(record["gid"]), groups=tuple(int(g) for g in record["groups"]),
                    name=record.get("name"), home=str(record.get("home") or "/"))


def exec_record(kind: str, cmd: ExecCommand, plan: SpawnPlan) -> Dict[str, Any]:
    """What an exec needs of the task launched from ``cmd`` as ``plan``, as
    JSON: stored in task.json, so a reattached executor can exec too."""
    isolation = cmd.isolation
    if kind == "container":
        user: Optional[TaskUser] = _ROOT if cmd.user is None else resolve_user(cmd.user, isolation.rootfs or "/")
        capabilities = list(isolation.capabilities) if isolation.capabilities is not None else None
        uid_map = [list(entry) for entry in isolation.uid_map] if "user" in isolation.namespaces \
            and isolation.uid_map else None
    else:
        user = None if cmd.user is None else resolve_user(cmd.user, "/")
        capabilities, uid_map = None, None
    return {
        "version": RECORD_VERSION,
        "kind": kind,
        "env": dict(cmd.env or {}),
        "cwd": plan.cwd,
        "user": _user_record(user),
        "set_caps": plan.capabilities is not None,
        "capabilities": capabilities,
        "no_new_privs": bool(plan.no_new_privs),
        "rlimits": [list(entry) for entry in plan.rlimits],
        "seccomp_filter": base64.b64encode(plan.seccomp_filter).decode() if plan.seccomp_filter else None,
        "oom_score_adj": plan.oom_score_adj,
        "task_dir": str(cmd.task_dir),
        "uid_map": uid_map,
    }


def _check_request(argv: Sequence[str], env: Optional[Mapping[str, str]], cwd: Optional[str],
                   user: Optional[str]) -> Tuple[Tuple[str, ...], Optional[Dict[str, str]]]:
    """The same rules as ExecCommand's for the fields an exec overrides."""
    checked_argv = check_argv(argv)
    checked_env = None
    if env is not None:
        if not isinstance(env, Mapping):
            raise ConfigError("env", env, "must be a mapping of names to strings")
        checked_env = dict(env)
        check_env(checked_env)
    if cwd is not None:
        check_container_path("cwd", cwd)
    if user is not None:
        check_user(user)
    return checked_argv, checked_env


def exec_plan(record: Mapping[str, Any], argv: Sequence[str], env: Optional[Mapping[str, str]],
              cwd: Optional[str], user: Optional[str], task_root: str) -> SpawnPlan:
    """The SpawnPlan of one exec: the task's identity from ``record`` with the
    caller's argv and overrides. ``user`` is looked up in ``task_root`` (the
    task's own /etc, through /proc/<pid>/root)."""
    argv, env = _check_request(argv, env, cwd, user)
    kind = record["kind"]
    if user is None:
        task_user = _user_from_record(record["user"])
    elif kind == "container":
        task_user = resolve_user(user, task_root)
    else:
        task_user = resolve_user(user, "/")
        if os.geteuid() != 0 and (task_user.uid, task_user.gid) != (os.geteuid(), os.getegid()):
            raise ConfigError("user", user, "can only be switched by a root caller")
    environment = dict(record["env"]) if env is None else env
    if task_user is not None:
        environment = user_environment(environment, task_user)
    if kind == "container":
        search_path = (record["env"] if env is None else env).get("PATH", DEFAULT_PATH)
        program = argv[0]  # searched by the shim, in the task's root
    else:
        from .lookup import find_program

        search_path = environment.get("PATH", DEFAULT_PATH)
        program = find_program(argv[0], record["task_dir"], search_path)
    capabilities: Optional[CapabilitySets] = None
    if record["set_caps"]:
        from .container import capability_sets

        requested = record["capabilities"]
        assert task_user is not None
        capabilities = capability_sets(tuple(requested) if requested is not None else None, task_user.uid)
    seccomp = record["seccomp_filter"]
    return SpawnPlan(
        program=program,
        argv=argv,
        env=[f"{k}={v}" for k, v in environment.items()],
        search_path=search_path,
        use_init=True,
        subreaper=True,
        rlimits=[(int(r), int(s), int(h), str(n)) for r, s, h, n in record["rlimits"]],
        credentials=None if task_user is None else Credentials(task_user.uid, task_user.gid, task_user.groups),
        capabilities=capabilities,
        no_new_privs=bool(record["no_new_privs"]),
        seccomp_filter=base64.b64decode(seccomp) if seccomp else None,
        oom_score_adj=record["oom_score_adj"],
        cwd=cwd or record["cwd"],
    )


# -- the exec's monitor, as seen from here ----------------------------------------

def _readable(fd: int, timeout: Optional[float]) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000.0))


class _Monitor:
    """The exec's monitor process (our child): its pidfd, status pipe and the
    write end of its lifeline. Reaped exactly once, under a lock."""

    def __init__(self, child: Child, lifeline: int) -> None:
        self.pid = child.pid
        self.pidfd = child.pidfd
        self.status_fd = child.status_fd
        self.lifeline = lifeline
        self.result: Optional[Tuple[int, Optional[int]]] = None
        self._lock = threading.Lock()
        self._pollers = 0  # threads polling the pidfd: the last one out closes it after the reap

    def cut_lifeline(self) -> None:
        """The monitor kills the command, its group and its adoptees, then exits."""
        with self._lock:
            lifeline, self.lifeline = self.lifeline, -1
        if lifeline >= 0:
            os.close(lifeline)

    def exited(self, timeout: Optional[float] = 0) -> bool:
        with self._lock:
            if self.result is not None:
                return True
            self._pollers += 1
            pidfd = self.pidfd
        try:
            return _readable(pidfd, timeout)
        finally:
            with self._lock:
                self._pollers -= 1
                self._maybe_close_pidfd()

    def _maybe_close_pidfd(self) -> None:
        if self.result is not None and self._pollers == 0 and self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def signal(self, sig: int) -> bool:
        with self._lock:
            if self.result is not None or _readable(self.pidfd, 0):
                return False
            try:
                _signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                return False
            return True

    def reap(self) -> Tuple[int, Optional[int]]:
        """Block until the monitor exits; (exit_code, signal) of the command."""
        with self._lock:
            if self.result is not None:
                return self.result
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped behind our back (SIGCHLD set to SIG_IGN)
                status = 0
            record = self._read_record()
            if record is not None:
                self.result = decode_wait_status(record)
            else:
                # No report: the exec's init died before its command (the task
                # was shut down and its pid namespace went with it).
                code, sig = decode_wait_status(status)
                if sig is None and code > 128:
                    sig = code - 128
                self.result = (code, sig)
            for name in ("status_fd", "lifeline"):
                fd = getattr(self, name)
                if fd >= 0:
                    os.close(fd)
                    setattr(self, name, -1)
            self._maybe_close_pidfd()
            return self.result

    def _read_record(self) -> Optional[int]:
        if self.status_fd < 0:
            return None
        record = ffi.new("struct px_exit *")
        buffer = ffi.buffer(record)
        try:
            data = os.read(self.status_fd, len(buffer))
        except OSError:
            return None
        if len(data) != len(buffer):
            return None
        buffer[:] = data
        return int(record.status)

    def finish(self, grace: float = KILL_GRACE) -> Tuple[int, Optional[int]]:
        """Kill (lifeline), give the monitor ``grace`` seconds, then SIGKILL it; reap."""
        self.cut_lifeline()
        if not self.exited(grace):
            self.signal(_signal.SIGKILL)
        return self.reap()


# Monitors of ExecProcess objects dropped while running: killed then, reaped
# at the next exec (like subprocess's _active list), so no zombie stays.
_orphans: List[_Monitor] = []
_orphans_lock = threading.Lock()


def _reap_orphans() -> None:
    with _orphans_lock:
        pending = list(_orphans)
    for monitor in pending:
        if monitor.exited(0):
            monitor.reap()
            with _orphans_lock:
                _orphans.remove(monitor)


# -- starting one -----------------------------------------------------------------

def _fresh_pidfd(executor: "LinuxExecutor") -> Tuple[int, int]:
    """(pid, pidfd) of the task's monitor, which must still run. A copy of the
    executor's own pidfd (opened at launch or, after reattach, checked against
    the handle's start time): one opened by pid now could name a stranger."""
    proc = executor._running()
    dup = getattr(proc, "dup_pidfd", None)
    pidfd = dup() if dup is not None and proc.result is None else -1
    if pidfd < 0:
        raise TaskExitedError(EXITED)
    if proc.result is not None or _readable(pidfd, 0):  # exited, not reaped yet
        os.close(pidfd)
        raise TaskExitedError(EXITED)
    return proc.pid, pidfd


_NAMESPACE_FLAGS = {"mnt": lib.CLONE_NEWNS, "uts": lib.CLONE_NEWUTS, "ipc": lib.CLONE_NEWIPC,
                    "net": lib.CLONE_NEWNET, "pid": lib.CLONE_NEWPID, "user": lib.CLONE_NEWUSER,
                    "cgroup": lib.CLONE_NEWCGROUP, "time": lib.CLONE_NEWTIME}


def _namespaces_of(pid: int) -> int:
    """CLONE_NEW* flags of the namespaces of ``pid`` (the task's monitor, which
    lives in all of the task's) that are not ours: those an exec joins. Read
    now rather than recorded at launch: a network namespace the task joined
    (netns:PATH) counts, and so does a reattaching caller's own."""
    flags = 0
    for name, flag in _NAMESPACE_FLAGS.items():
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            continue  # a kernel without this namespace type
        if theirs != os.readlink(f"/proc/self/ns/{name}"):
            flags |= flag
    return flags


def _host_uid(record: Mapping[str, Any], uid: int) -> int:
    for start, outside, count in record.get("uid_map") or [[0, 0, 1 << 32]]:
        if start <= uid < start + count:
            return outside + uid - start
    return -1


def _start(executor: "LinuxExecutor", argv: Sequence[str], env: Optional[Mapping[str, str]], cwd: Optional[str],
           user: Optional[str], stdio: Tuple[int, int, int], tty: int = -1) -> _Monitor:
    """Spawn the command into the task; returns once it has exec'd (LaunchError
    when it could not, TaskExitedError when the task is gone)."""
    from .linux import MONITOR_PATH, spawn_into_cgroup

    _reap_orphans()
    record = executor._exec_identity()
    pid, pidfd = _fresh_pidfd(executor)
    fds = [pidfd]
    child: Optional[Child] = None
    lifeline = -1
    try:
        plan = exec_plan(record, argv, env, cwd, user, f"/proc/{pid}/root")
        plan.clone_flags = _namespaces_of(pid)
        if _readable(pidfd, 0):  # gone while we read its /proc: that /proc/<pid> may be a stranger's
            raise TaskExitedError(EXITED)
        if plan.clone_flags:
            plan.join_pidfd = pidfd
        plan.stdio = stdio
        if tty >= 0:
            plan.set_ctty = True
            owner = _host_uid(record, plan.credentials.uid) if plan.credentials is not None else -1
            if owner >= 0:
                try:
                    os.fchown(tty, owner, -1)  # like grantpt(): the terminal is its user's
                except OSError:
                    pass
        try:
            exe_fd = os.open(MONITOR_PATH, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LaunchError("monitor", MONITOR_PATH, errno.ENOENT,
                              "missing: pyexec is not built (pip install .)") from None
        fds.append(exe_fd)
        lifeline_read, lifeline = os.pipe2(os.O_CLOEXEC)
        fds.append(lifeline_read)
        plan.monitor = MonitorPlan(exe_fd=exe_fd, lifeline_fd=lifeline_read, log_name="exec")
        child = spawn_into_cgroup(plan, executor._cgroup)
        try:
            finish(child)
        except LaunchError as exc:
            if executor._running().result is not None or _readable(pidfd, 0):
                raise TaskExitedError(EXITED) from exc
            raise
        return _Monitor(child, lifeline)
    except BaseException:
        if child is not None:
            abort_setup(child)
            _Monitor(child, lifeline).finish(grace=2.0)
        elif lifeline >= 0:
            os.close(lifeline)
        raise
    finally:
        for fd in fds:
            os.close(fd)


# -- exec: run to the end, collect the output ---------------------------------------

class _CappedOutput:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: List[bytes] = []
        self.kept = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.limit - self.kept
        if room > 0:
            head = data[:room]
            self.parts.append(head)
            self.kept += len(head)
        self.dropped += max(0, len(data) - max(0, room))

    def value(self) -> bytes:
        out = b"".join(self.parts)
        return out + TRUNCATION_MARKER % self.dropped if self.dropped else out


def _pump(out_fd: int, monitor: _Monitor, sink: _CappedOutput, deadline: Optional[float]) -> bool:
    """Read the command's output until EOF and the monitor's exit; False when
    ``deadline`` passes first. Everything beyond the cap is read and dropped,
    so the command never blocks on a full pipe."""
    poller = select.poll()
    poller.register(out_fd, select.POLLIN)
    poller.register(monitor.pidfd, select.POLLIN)
    open_out, exited = True, False
    while open_out or not exited:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return False
        if exited:
            # Every process of the exec is dead; a writer still holding the
            # pipe is none of ours: take what comes, but do not wait for it.
            timeout = DRAIN_IDLE if timeout is None else min(timeout, DRAIN_IDLE)
        events = poller.poll(None if timeout is None else timeout * 1000.0)
        if not events and exited:
            break
        for fd, _ in events:
            if fd == out_fd:
                data = os.read(out_fd, _CHUNK)
                if data:
                    sink.add(data)
                else:
                    open_out = False
                    poller.unregister(out_fd)
            elif not exited:
                exited = True
                poller.unregister(monitor.pidfd)
    return True


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ConfigError("timeout", timeout, "is not a positive number of seconds (or None)")


def run_exec(executor: "LinuxExecutor", argv: Sequence[str], timeout: Optional[float] = 5.0,
             env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None, user: Optional[str] = None,
             output_limit: int = DEFAULT_OUTPUT_LIMIT) -> ExecResult:
    """``Executor.exec``: see there."""
    _check_timeout(timeout)
    if isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 0:
        raise ConfigError("output_limit", output_limit, "is not a number of bytes >= 0")
    started = time.monotonic()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            monitor = _start(executor, argv, env, cwd, user, (devnull, write_end, write_end))
        finally:
            os.close(devnull)
            os.close(write_end)
        sink = _CappedOutput(output_limit)
        try:
            finished = _pump(read_end, monitor, sink, None if timeout is None else started + timeout)
            if not finished:
                monitor.cut_lifeline()
                _pump(read_end, monitor, sink, time.monotonic() + KILL_GRACE)
                monitor.finish()
                raise TimeoutError(f"exec {list(argv)!r} still ran after {timeout}s; it was killed "
                                   f"(the task runs on)")
            code, sig = monitor.reap()
        finally:
            if monitor.result is None:
                monitor.finish()
    finally:
        os.close(read_end)
    return ExecResult(exit_code=code, signal=sig, output=sink.value(), truncated=sink.dropped > 0)
