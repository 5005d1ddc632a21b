"""Exec into a running task: ``Executor.exec`` and ``Executor.exec_streaming``.

A command run this way is one more process of the task: the shim's child
joins the task's namespaces with ``setns`` on a pidfd of the task's monitor
(csrc/nsenter.c, join mode), so it sees the task's root, hostname, network
and processes; it is born in the task's cgroup and takes the task's
identity: user, groups, capabilities, no_new_privs, rlimits, oom_score_adj
and seccomp filter, rebuilt from a record made at launch (``exec_record``)
and kept in the state directory's task.json, so a reattached executor has
it too. argv, and optionally the environment, the working directory and the
user, are the caller's. The executor hands this module an ``ExecTarget``
(the task's monitor pid and a pidfd of it, the record, the cgroup), never
itself.

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
import os
import select
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..cgroups import CgroupManager
from ..config import DEFAULT_PATH, ExecCommand, check_argv, check_container_path, check_env, check_user
from ..errors import ConfigError, LaunchError, TaskExitedError
from ..process import ExecResult
from ..shim import Child, MonitorPlan, SpawnPlan, abort_setup, finish
from ..users import TaskUser, resolve_user
from .execmon import KILL_GRACE, ExecMonitor, reap_abandoned
from .launch import Identity, capability_sets, namespaces_to_join, open_monitor, spawn_into_cgroup, spawn_plan
from .lookup import find_program
from .taskproc import readable

__all__ = ["ExecResult", "ExecTarget", "DEFAULT_OUTPUT_LIMIT", "EXITED", "exec_record", "exec_plan", "start_exec",
           "run_exec"]

DEFAULT_OUTPUT_LIMIT = 64 * 1024
TRUNCATION_MARKER = b"\n[pyexec: output truncated, %d bytes dropped]\n"
EXITED = "the task has exited; cannot exec into it"
RECORD_VERSION = 1
DRAIN_IDLE = 0.5      # after the monitor exited, stop reading output silent this long
_CHUNK = 64 * 1024


@dataclass
class ExecTarget:
    """The running task an exec goes into, as its executor hands it over:
    the task monitor's host pid and a pidfd of it (a copy of the one opened
    at launch or checked against the handle at reattach: one opened by pid
    now could name a stranger; ``close`` closes it), the task's exec record
    and its cgroup (None: the task has none)."""

    pid: int
    pidfd: int
    record: Mapping[str, Any]
    cgroup: Optional[CgroupManager]

    def exited(self) -> bool:
        """Whether the task's monitor has exited (reaped or not)."""
        return self.pidfd < 0 or readable(self.pidfd, 0)

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> "ExecTarget":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the task's identity ---------------------------------------------------------

def _user_record(user: Optional[TaskUser]) -> Optional[Dict[str, Any]]:
    if user is None:
        return None
    return {"uid": user.uid, "gid": user.gid, "groups": list(user.groups), "name": user.name, "home": user.home}


def _user_from_record(record: Optional[Mapping[str, Any]]) -> Optional[TaskUser]:
    if record is None:
        return None
    return TaskUser(uid=int(record["uid"]), gid=int(record["gid"]), groups=tuple(int(g) for g in record["groups"]),
                    name=record.get("name"), home=str(record.get("home") or "/"))


def exec_record(kind: str, cmd: ExecCommand, plan: SpawnPlan, identity: Identity,
                capabilities: Optional[Sequence[str]] = None,
                uid_map: Optional[Sequence[Tuple[int, int, int]]] = None) -> Dict[str, Any]:
    """What an exec needs of the task launched from ``cmd`` as ``plan`` with
    ``identity``, as JSON: stored in task.json, so a reattached executor can
    exec too. ``capabilities``: the set the task asked for (None: the
    default), recomputed for an exec's own user; ``uid_map``: the task's
    user namespace map, to give a tty to the exec's user."""
    return {
        "version": RECORD_VERSION,
        "kind": kind,
        "env": dict(cmd.env or {}),
        "cwd": plan.cwd,
        "user": _user_record(identity.user),
        "set_caps": identity.capabilities is not None,
        "capabilities": list(capabilities) if capabilities is not None else None,
        "no_new_privs": bool(identity.no_new_privs),
        "rlimits": [list(entry) for entry in identity.rlimits],
        "seccomp_filter": base64.b64encode(identity.seccomp_filter).decode() if identity.seccomp_filter else None,
        "oom_score_adj": identity.oom_score_adj,
        "task_dir": str(cmd.task_dir),
        "uid_map": [list(entry) for entry in uid_map] if uid_map else None,
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
    search_path = environment.get("PATH", DEFAULT_PATH)
    # A container's program is searched by the shim, in the task's root; a
    # host task's the universal executor's way.
    program = argv[0] if kind == "container" else find_program(argv[0], record["task_dir"], search_path)
    capabilities = None
    if record["set_caps"]:
        requested = record["capabilities"]
        assert task_user is not None
        capabilities = capability_sets(tuple(requested) if requested is not None else None, task_user.uid)
    seccomp = record["seccomp_filter"]
    identity = Identity(
        user=task_user,
        capabilities=capabilities,
        no_new_privs=bool(record["no_new_privs"]),
        rlimits=[(int(r), int(s), int(h), str(n)) for r, s, h, n in record["rlimits"]],
        seccomp_filter=base64.b64decode(seccomp) if seccomp else None,
        oom_score_adj=record["oom_score_adj"],
    )
    return spawn_plan(program, argv, environment, search_path, cwd or record["cwd"], identity, subreaper=True)


# -- starting one -----------------------------------------------------------------

def _host_uid(record: Mapping[str, Any], uid: int) -> int:
    for start, outside, count in record.get("uid_map") or [[0, 0, 1 << 32]]:
        if start <= uid < start + count:
            return int(outside + uid - start)
    return -1


def start_exec(target: ExecTarget, argv: Sequence[str], env: Optional[Mapping[str, str]], cwd: Optional[str],
               user: Optional[str], stdio: Tuple[int, int, int], tty: int = -1) -> ExecMonitor:
    """Spawn the command into the task of ``target``; returns its monitor once
    the command has exec'd (LaunchError when it could not, TaskExitedError
    when the task is gone). ``tty`` >= 0: stdio is that terminal, made the
    command's controlling terminal and handed to its user."""
    reap_abandoned()
    pid, pidfd = target.pid, target.pidfd
    if target.exited():
        raise TaskExitedError(EXITED)
    fds: List[int] = []
    child: Optional[Child] = None
    lifeline = -1
    try:
        plan = exec_plan(target.record, argv, env, cwd, user, f"/proc/{pid}/root")
        plan.clone_flags = namespaces_to_join(pid)  # the task's monitor lives in all of them
        if target.exited():  # gone while we read its /proc: that /proc/<pid> may be a stranger's
            raise TaskExitedError(EXITED)
        if plan.clone_flags:
            plan.join_pidfd = pidfd
        plan.stdio = stdio
        if tty >= 0:
            plan.set_ctty = True
            owner = _host_uid(target.record, plan.credentials.uid) if plan.credentials is not None else -1
            if owner >= 0:
                try:
                    os.fchown(tty, owner, -1)  # like grantpt(): the terminal is its user's
                except OSError:
                    pass
        exe_fd = open_monitor()
        fds.append(exe_fd)
        lifeline_read, lifeline = os.pipe2(os.O_CLOEXEC)
        fds.append(lifeline_read)
        plan.monitor = MonitorPlan(exe_fd=exe_fd, lifeline_fd=lifeline_read, log_name="exec")
        child = spawn_into_cgroup(plan, target.cgroup)
        try:
            finish(child)
        except LaunchError as exc:
            if target.exited():
                raise TaskExitedError(EXITED) from exc
            raise
        return ExecMonitor(child, lifeline)
    except BaseException:
        if child is not None:
            abort_setup(child)
            ExecMonitor(child, lifeline).finish(grace=2.0)
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


def _pump(out_fd: int, monitor: ExecMonitor, sink: _CappedOutput, deadline: Optional[float]) -> bool:
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


def run_exec(target: ExecTarget, argv: Sequence[str], timeout: Optional[float] = 5.0,
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
            monitor = start_exec(target, argv, env, cwd, user, (devnull, write_end, write_end))
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
