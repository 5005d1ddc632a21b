"""Handles and reattach: a later caller takes over a task another caller launched.

This module owns what a handle holds (a small JSON-serialisable dict), how a
process is recognised as the task's monitor again (pid + start time since
boot + boot id, and the monitor's program name: start times count clock
ticks, 10 ms here, so a process that reused the pid within the same tick
matches on time alone; a stale handle must never signal a stranger), and
``AdoptedProcess``: waiting for a monitor that is not
our child through a pidfd, its result read from the ``exit.json`` that the
monitor writes atomically into the task's state directory before it exits.

    h = ex.handle()                 # store it anywhere (json.dumps(h) works)
    ...                             # the caller restarts
    ex = pyexec.reattach(h)         # the full executor API again
    ex.wait(); ex.stats(); ex.shutdown()
"""
from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import ConfigError
from .process import OnExit, TaskProcess
from .stats.usage import ResourceUsage

__all__ = ["HANDLE_VERSION", "EXIT_FILE", "make_handle", "parse_handle", "process_identity",
           "open_identified", "AdoptedProcess", "reattach"]

log = logging.getLogger(__name__)

HANDLE_VERSION = 1
EXIT_FILE = "exit.json"
_KEYS = {"pyexec_handle": int, "kind": str, "task_id": str, "state_root": str, "cgroup_parent": str,
         "pid": int, "pid_start": int, "boot_id": str, "started_at": float}


def _boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def process_identity(pid: int) -> Optional[Tuple[int, str]]:
    """(start time in clock ticks since boot, boot id) of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19]), _boot_id()  # field 22 of proc(5); the split starts at field 3
    except (OSError, IndexError, ValueError):
        return None


MONITOR_NAME = b"pyexec-monitor"


def _is_monitor(pid: int) -> bool:
    """Whether ``pid`` runs pyexec-monitor (its name, world-readable in /proc)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == MONITOR_NAME
    except OSError:
        return False


def make_handle(kind: str, task_id: str, state_root: str, cgroup_parent: str, pid: int,
                started_at: float) -> Dict[str, Any]:
    """The handle of a running task whose monitor is ``pid``."""
    identity = process_identity(pid)
    if identity is None:
        raise ProcessLookupError(f"pid {pid} is gone; the task has no handle")
    return {"pyexec_handle": HANDLE_VERSION, "kind": kind, "task_id": task_id, "state_root": state_root,
            "cgroup_parent": cgroup_parent, "pid": pid, "pid_start": identity[0], "boot_id": identity[1],
            "started_at": started_at}


def parse_handle(handle: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """A validated handle dict from a handle or its JSON text (ConfigError otherwise)."""
    value = handle
    if isinstance(handle, (str, bytes)):
        try:
            value = json.loads(handle)
        except ValueError:
            raise ConfigError("handle", handle, "is not a pyexec handle (not JSON)") from None
    if not isinstance(value, Mapping) or value.get("pyexec_handle") != HANDLE_VERSION:
        raise ConfigError("handle", handle, f"is not a pyexec handle (version {HANDLE_VERSION})")
    out = dict(value)
    for key, kind in _KEYS.items():
        item = out.get(key)
        if kind is float and isinstance(item, int) and not isinstance(item, bool):
            item = out[key] = float(item)
        if not isinstance(item, kind) or isinstance(item, bool):
            raise ConfigError(f"handle.{key}", item, f"is missing or not a {kind.__name__}")
    if "/" in out["task_id"] or out["task_id"] in ("", ".", ".."):
        raise ConfigError("handle.task_id", out["task_id"], "is not a task id")
    return out


def open_identified(pid: int, pid_start: int, boot_id: str) -> int:
    """A pidfd of ``pid`` if it still is the process the handle names, else -1.

    The pidfd is opened first and the identity checked after: if the check
    passes, the pidfd refers to that very process whatever happens to the pid later.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    if process_identity(pid) != (pid_start, boot_id) or not _is_monitor(pid):
        os.close(pidfd)
        log.info("pid %d is no longer the task's monitor (exited, pid reused or rebooted)", pid)
        return -1
    return pidfd


class AdoptedProcess(TaskProcess):
    """A task's monitor that another caller launched: never our child, so
    never reaped here; its exit is the pidfd turning readable, its result the
    monitor's exit.json. ``pidfd`` -1: already gone, the result is final now."""

    def __init__(self, pid: int, pidfd: int, state_dir: str, started_at: float,
                 on_exit: Optional[OnExit] = None) -> None:
        self._exit_file = os.path.join(state_dir, EXIT_FILE)
        super().__init__(pid, pidfd, -1, started_at, on_exit)
        if pidfd < 0:
            self._reap()

    def _exit_status(self) -> Tuple[int, Optional[ResourceUsage], float]:
        from .process import rusage_usage

        if self._pidfd >= 0:
            # Our child after all when we are a subreaper that adopted it: reap
            # the zombie (through the pidfd: exactly that process, or ECHILD).
            try:
                os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                pass

        try:
            with open(self._exit_file) as f:
                record = json.load(f)
            finished_at = float(record["finished_at"])
            usage = rusage_usage(record["utime_us"] / 1e6, record["stime_us"] / 1e6, finished_at)
            return int(record["status"]), usage, finished_at
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Only a SIGKILL stops the monitor before it writes its record.
            log.warning("task monitor %d left no exit record (%s): reporting SIGKILL", self.pid, exc)
            return signal.SIGKILL, None, os.path.getmtime(os.path.dirname(self._exit_file)) \
                if os.path.isdir(os.path.dirname(self._exit_file)) else 0.0

    def send_signal(self, sig: int) -> bool:
        if self._pidfd < 0:
            return False
        return super().send_signal(sig)


def reattach(handle: Union[str, Mapping[str, Any]]):
    """An executor for the task of ``handle`` (from ``Executor.handle()``),
    with the full API. A task that ended while no caller was alive gives its
    recorded ExitResult at once (``wait()``); one whose state is gone (taken
    over and finished by another caller, or cleaned) raises TaskExitedError."""
    from .executor import new_executor

    h = parse_handle(handle)
    executor = new_executor(h["kind"], state_root=h["state_root"], cgroup_parent=h["cgroup_parent"])
    executor._adopt(h)
    return executor
