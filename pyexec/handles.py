"""Handles: the value from which a later caller takes over a running task.

This module owns what a handle holds (a small JSON-serialisable dict: its
format, ``make_handle`` and ``parse_handle``) and how a process is
recognised as the task's monitor again (pid + start time since boot + boot
id, and the monitor's program name: start times count clock ticks, 10 ms
here, so a process that reused the pid within the same tick matches on time
alone; a stale handle must never signal a stranger). ``pyexec.reattach``
(pyexec/executor/__init__.py) turns a handle back into an executor.

    h = ex.handle()                 # store it anywhere (json.dumps(h) works)
    ...                             # the caller restarts
    ex = pyexec.reattach(h)         # the full executor API again
    ex.wait(); ex.stats(); ex.shutdown()
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import ConfigError

__all__ = ["HANDLE_VERSION", "MONITOR_NAME", "make_handle", "parse_handle", "process_identity", "open_identified"]

log = logging.getLogger(__name__)

HANDLE_VERSION = 1
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
