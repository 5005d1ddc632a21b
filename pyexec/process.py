"""Waiting on a task's main process through its pidfd, for threads and coroutines.

``TaskProcess`` owns the pidfd and the one reap of the process. Any number of
threads (``wait``) and coroutines on any number of event loops (``wait_async``)
may wait at once; the first to see the pidfd readable reaps under a lock and
every waiter returns that same ``ExitResult``. No SIGCHLD handler is installed:
readiness comes from poll() on the pidfd (or the loop's reader), and the pid
cannot be reused before our own wait4(), so signals never hit a stranger.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal as _signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Protocol, Tuple

from .stats.usage import CpuUsage, ResourceUsage

__all__ = ["ProcessState", "ExitResult", "ExecResult", "TaskHandle", "TaskProcess", "decode_wait_status", "rusage_usage"]


@dataclass(frozen=True)
class ProcessState:
    """A launched task: its main process (as seen from the host) and when it started."""

    pid: int
    started_at: float


@dataclass(frozen=True)
class ExitResult:
    """How the task ended. ``exit_code`` is 128 + ``signal`` when a signal killed it."""

    exit_code: int
    signal: Optional[int]
    oom_killed: bool
    started_at: float
    finished_at: float
    #: The last usage sample: the task cgroup's, read after the main process
    #: exited and before the cgroup was removed; without a cgroup, the CPU
    #: times the kernel accounted to the task and the children it reaped.
    usage: Optional[ResourceUsage] = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and self.signal is None


@dataclass(frozen=True)
class ExecResult:
    """How a command run inside a task (``Executor.exec``) ended. ``exit_code``
    is 128 + ``signal`` when a signal killed it. ``output``: its stdout and
    stderr interleaved, at most ``output_limit`` bytes and then, when
    ``truncated``, a marker line saying how many bytes were dropped; empty
    for ``exec_streaming`` (the caller reads the pipe itself)."""

    exit_code: int
    signal: Optional[int]
    output: bytes = b""
    truncated: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and self.signal is None


def rusage_usage(user_s: float, system_s: float, timestamp: float) -> ResourceUsage:
    """A ResourceUsage holding only CPU times from wait4()'s rusage. No max RSS:
    until its exec the task borrows the memory of its init (the caller's, or a
    copy), and the kernel's high-water mark would count that memory."""
    return ResourceUsage(cpu=CpuUsage(usage_total_s=user_s + system_s, user_s=user_s, system_s=system_s),
                         source="rusage", timestamp=timestamp)


def decode_wait_status(status: int) -> tuple:
    """(exit_code, signal) of a raw wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 255, None


OnExit = Callable[[ExitResult], ExitResult]


class TaskHandle(Protocol):
    """What an executor needs of its task's main process: ``TaskProcess``
    (pidfd, Linux) and the portable executor's ``PopenProcess`` provide it."""

    pid: int
    started_at: float

    @property
    def result(self) -> Optional[ExitResult]: ...

    def wait(self, timeout: Optional[float] = None) -> ExitResult: ...

    async def wait_async(self) -> ExitResult: ...

    def send_signal(self, sig: int) -> bool: ...


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
    def _read_task_exit(self):
        """The init's px_exit record (status and the task's own rusage), if it wrote one."""
        if self._status_fd < 0:
            return None
        from . import _shim  # the compiled shim: Linux only, so imported when used

        record = _shim.ffi.new("struct px_exit *")
        buffer = _shim.ffi.buffer(record)
        try:
            data = os.read(self._status_fd, len(buffer))
        except BlockingIOError:
            data = b""
        finally:
            os.close(self._status_fd)
            self._status_fd = -1
        if len(data) != len(buffer):
            return None
        buffer[:] = data
        return record

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
