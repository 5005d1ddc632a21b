"""A Linux task's main process as its caller sees it: pidfd, status pipe, exit records.

``TaskProcess`` owns the pidfd and the one reap of the process. Any number of
threads (``wait``) and coroutines on any number of event loops (``wait_async``)
may wait at once; the first to see the pidfd readable reaps under a lock and
every waiter returns that same ``ExitResult``. No SIGCHLD handler is installed:
readiness comes from poll() on the pidfd (or the loop's reader), and the pid
cannot be reused before our own wait4(), so signals never hit a stranger.

``AdoptedProcess`` is the monitor of a task another caller launched
(``pyexec.reattach``): never our child, so never reaped here; its exit is the
pidfd turning readable, its result the ``exit.json`` the monitor wrote.
``read_exit_record`` decodes the init's ``struct px_exit`` from a status
pipe, for tasks and for execs into them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal as _signal
import threading
import time
from typing import Any, Dict, Optional, Tuple

from ..native import ffi
from ..process import ExitResult, OnExit, decode_wait_status, rusage_usage
from ..stats.usage import ResourceUsage
from .state import exit_file

__all__ = ["TaskProcess", "AdoptedProcess", "read_exit_record", "readable"]

log = logging.getLogger(__name__)


def readable(fd: int, timeout: Optional[float]) -> bool:
    """Whether ``fd`` (a pidfd: its process exited; a pipe) is readable
    within ``timeout`` seconds (None: wait as long as it takes)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000.0))


def read_exit_record(status_fd: int) -> Optional[Any]:
    """The init's ``struct px_exit`` (wait status and the task's own CPU
    times) from its status pipe, or None when it wrote none (it died first).
    Reads without blocking when the pipe is non-blocking; never closes it."""
    record = ffi.new("struct px_exit *")
    buffer = ffi.buffer(record)
    try:
        data = os.read(status_fd, len(buffer))
    except (BlockingIOError, OSError):
        return None
    if len(data) != len(buffer):
        return None
    buffer[:] = data
    return record


class _LoopWaiters:
    """The coroutines of one event loop awaiting the exit: one future, one reader."""

    __slots__ = ("future", "count")

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future
        self.count = 0


class TaskProcess:
    """The main process of one task. ``status_fd`` is the init's status pipe (or -1)."""

    def __init__(self, pid: int, pidfd: int, status_fd: int, started_at: float,
                 on_exit: Optional[OnExit] = None) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._status_fd = status_fd
        self.started_at = started_at
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._pollers = 0
        self._result: Optional[ExitResult] = None
        self._futures: Dict[asyncio.AbstractEventLoop, _LoopWaiters] = {}

    @property
    def result(self) -> Optional[ExitResult]:
        return self._result

    # -- waiting -----------------------------------------------------------
    def wait(self, timeout: Optional[float] = None) -> ExitResult:
        """Block until the task exits; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._result is not None:
                    return self._result
                self._pollers += 1
                pidfd = self._pidfd
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                ready = poller.poll(None if remaining is None else remaining * 1000.0)
            finally:
                with self._lock:
                    self._pollers -= 1
                    self._maybe_close_pidfd()
            if ready:
                return self._reap()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task pid {self.pid} still running after {timeout}s")

    def poll(self) -> Optional[ExitResult]:
        """The result if the task has exited (reaping it), else None; never blocks."""
        try:
            return self.wait(0)
        except TimeoutError:
            return None

    async def wait_async(self) -> ExitResult:
        """Await the exit on the running loop (a reader on the pidfd, one per loop).

        Cancelling it is fine: when the last coroutine of a loop stops waiting
        before the exit, that loop's reader goes and the pidfd is not pinned.
        """
        if self._result is not None:
            return self._result
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._result is not None:
                return self._result
            waiters = self._futures.get(loop)
            if waiters is None:
                waiters = self._futures[loop] = _LoopWaiters(loop.create_future())
                self._pollers += 1
                loop.add_reader(self._pidfd, self._on_readable, loop)
            waiters.count += 1
        try:
            return await asyncio.shield(waiters.future)
        finally:
            with self._lock:
                waiters.count -= 1
                if waiters.count == 0 and self._futures.get(loop) is waiters:
                    # Every waiter of this loop gave up before the exit.
                    loop.remove_reader(self._pidfd)
                    del self._futures[loop]
                    waiters.future.cancel()
                    self._pollers -= 1
                    self._maybe_close_pidfd()

    def _on_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self._pidfd)
        with self._lock:
            self._pollers -= 1
            future = self._futures.pop(loop).future
        try:
            result = self._reap()
        except BaseException as exc:  # surface to the awaiting coroutines, not the loop
            if not future.done():
                future.set_exception(exc)
            return
        finally:
            # Another waiter may have reaped first while this reader still
            # counted as a poller: the last one out closes the pidfd.
            with self._lock:
                self._maybe_close_pidfd()
        if not future.done():
            future.set_result(result)

    # -- reaping -----------------------------------------------------------
    def _read_task_exit(self) -> Optional[Any]:
        """The init's px_exit record (status and the task's own rusage), if it wrote one."""
        if self._status_fd < 0:
            return None
        try:
            return read_exit_record(self._status_fd)
        finally:
            os.close(self._status_fd)
            self._status_fd = -1

    def _exit_status(self) -> Tuple[int, Optional[ResourceUsage], float]:
        """(raw wait status, usage, finished_at) of the exited process: reaped
        here with wait4; the monitor's record, when there is one, wins."""
        finished_at = time.time()
        usage = None
        try:
            _, status, rusage = os.wait4(self.pid, 0)
            usage = rusage_usage(rusage.ru_utime, rusage.ru_stime, finished_at)
        except ChildProcessError:  # reaped behind our back (SIGCHLD set to SIG_IGN)
            status = 0
        record = self._read_task_exit()
        if record is not None:
            status = record.status
            usage = rusage_usage(record.utime_us / 1e6, record.stime_us / 1e6, finished_at)
        return status, usage, finished_at

    def _reap(self) -> ExitResult:
        with self._lock:
            if self._result is not None:
                return self._result
            status, usage, finished_at = self._exit_status()
            exit_code, sig = decode_wait_status(status)
            result = ExitResult(exit_code=exit_code, signal=sig, oom_killed=False,
                                started_at=self.started_at, finished_at=finished_at, usage=usage)
            if self._on_exit is not None:
                result = self._on_exit(result)
            self._result = result
            self._maybe_close_pidfd()
            return result

    def _maybe_close_pidfd(self) -> None:
        # Called with the lock held: another waiter may still be polling the fd.
        if self._result is not None and self._pollers == 0 and self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def dup_pidfd(self) -> int:
        """A new pidfd of the process (the caller closes it), or -1 once it has
        exited: a pidfd opened by pid could name a stranger that reused it."""
        with self._lock:
            if self._result is not None or self._pidfd < 0:
                return -1
            return os.dup(self._pidfd)

    # -- signals -----------------------------------------------------------
    def send_signal(self, sig: int) -> bool:
        """Signal the process; False when it has already exited."""
        with self._lock:
            if self._result is not None or self._pidfd < 0:
                return False
            # An exited but not yet reaped process would "accept" the signal.
            probe = select.poll()
            probe.register(self._pidfd, select.POLLIN)
            if probe.poll(0):
                return False
            try:
                _signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                return False
            return True


class AdoptedProcess(TaskProcess):
    """A task's monitor that another caller launched: never our child, so
    never reaped here; its exit is the pidfd turning readable, its result the
    monitor's exit.json. ``pidfd`` -1: already gone, the result is final now."""

    def __init__(self, pid: int, pidfd: int, state_dir: str, started_at: float,
                 on_exit: Optional[OnExit] = None) -> None:
        self._exit_file = exit_file(state_dir)
        super().__init__(pid, pidfd, -1, started_at, on_exit)
        if pidfd < 0:
            self._reap()

    def _exit_status(self) -> Tuple[int, Optional[ResourceUsage], float]:
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
            state_dir = os.path.dirname(self._exit_file)
            return _signal.SIGKILL, None, os.path.getmtime(state_dir) if os.path.isdir(state_dir) else 0.0

    def send_signal(self, sig: int) -> bool:
        if self._pidfd < 0:
            return False
        return super().send_signal(sig)
