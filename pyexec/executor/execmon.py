"""The monitor of one command exec'd into a task, as its caller sees it.

An exec's monitor (pyexec-monitor, below the exec's init) is the caller's
child: ``ExecMonitor`` holds its pidfd, the status pipe its init reports the
command's wait status on, and the write end of its lifeline (closing it
makes the monitor kill the command, its process group and everything it
adopted, then exit). It is reaped exactly once, under a lock.

A dropped ``ExecProcess`` cannot wait for its monitor: ``abandon`` kills the
command and keeps the monitor in a registry, and ``reap_abandoned`` (run at
the start of every exec) reaps those that have exited, as subprocess does
with its ``_active`` list, so no zombie stays.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import List, Optional, Tuple

from ..process import decode_wait_status
from ..shim import Child
from .taskproc import read_exit_record, readable

__all__ = ["ExecMonitor", "KILL_GRACE", "abandon", "reap_abandoned", "abandoned_count"]

KILL_GRACE = 5.0  # seconds for the monitor to kill and exit once the lifeline is closed


class ExecMonitor:
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
            return readable(pidfd, timeout)
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
            if self.result is not None or readable(self.pidfd, 0):
                return False
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
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
            record = read_exit_record(self.status_fd) if self.status_fd >= 0 else None
            if record is not None:
                self.result = decode_wait_status(int(record.status))
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

    def finish(self, grace: float = KILL_GRACE) -> Tuple[int, Optional[int]]:
        """Kill (lifeline), give the monitor ``grace`` seconds, then SIGKILL it; reap."""
        self.cut_lifeline()
        if not self.exited(grace):
            self.signal(signal.SIGKILL)
        return self.reap()


class _Abandoned:
    """Monitors of commands whose ExecProcess was dropped while running."""

    monitors: List[ExecMonitor] = []
    lock = threading.Lock()


def abandon(monitor: ExecMonitor) -> None:
    """Kill the command of ``monitor`` and leave its reaping to ``reap_abandoned``."""
    monitor.cut_lifeline()
    with _Abandoned.lock:
        _Abandoned.monitors.append(monitor)


def reap_abandoned() -> None:
    """Reap the abandoned monitors that have exited (never blocks)."""
    with _Abandoned.lock:
        pending = list(_Abandoned.monitors)
    for monitor in pending:
        if monitor.exited(0):
            monitor.reap()
            with _Abandoned.lock:
                _Abandoned.monitors.remove(monitor)


def abandoned_count() -> int:
    """How many abandoned monitors are still waiting to be reaped."""
    with _Abandoned.lock:
        return len(_Abandoned.monitors)
