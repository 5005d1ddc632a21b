"""Signals as OCI clients name them, and sending them to a container's processes.

``kill ID 9``, ``kill ID KILL``, ``kill ID SIGKILL`` and ``kill ID kill`` mean
the same (runc's rule; no signal: SIGTERM). A container's process is never
signalled by pid alone: a pidfd is opened and the process's start time
checked against the record first, so a reused pid is never hit.
"""
from __future__ import annotations

import os
import signal
from typing import Iterable

from .state import process_start

__all__ = ["parse_signal", "signal_process", "signal_all"]


def parse_signal(text: str) -> int:
    """The signal number of ``text`` (a decimal number or a name); ValueError otherwise."""
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
        raise ValueError(f"invalid signal: {text}")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"invalid signal: {text}") from None


def signal_process(pid: int, start: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it still is the process that started at
    ``start``; False when it is gone (or another process has its pid)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if process_start(pid) != start:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def signal_all(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to every pid of a cgroup (``kill --all``); the ones that
    exited meanwhile are skipped. A cgroup only ever holds the container's
    processes, so its pids need no start-time check."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
