"""What a launched task and a command run in it give back, on every system.

The result types (``ProcessState``, ``ExitResult``, ``ExecResult``), the
decoding of a raw wait status, and the protocols an executor's processes
follow: ``TaskHandle`` (a task's main process: the Linux executors' pidfd
based ``TaskProcess`` in pyexec/executor/taskproc.py, the portable
executor's ``PopenProcess``) and ``ExecStream`` (a command started with
``Executor.exec_streaming``). Nothing here is Linux-only: the portable
executor uses this module on every system.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Protocol, Tuple

from .stats.usage import CpuUsage, ResourceUsage

__all__ = ["ProcessState", "ExitResult", "ExecResult", "TaskHandle", "ExecStream", "OnExit", "decode_wait_status",
           "rusage_usage"]


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


def decode_wait_status(status: int) -> Tuple[int, Optional[int]]:
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


class ExecStream(Protocol):
    """A command started inside a task by ``Executor.exec_streaming``: the
    interface of ``pyexec.ExecProcess`` (see there)."""

    argv: Tuple[str, ...]
    stdin: Optional[BinaryIO]
    stdout: BinaryIO
    tty: bool

    @property
    def pid(self) -> int: ...

    @property
    def result(self) -> Optional[ExecResult]: ...

    def wait(self, timeout: Optional[float] = None) -> ExecResult: ...

    def poll(self) -> Optional[ExecResult]: ...

    def send_signal(self, sig: int) -> bool: ...

    def kill(self) -> None: ...

    def close(self) -> ExecResult: ...

    def __enter__(self) -> "ExecStream": ...

    def __exit__(self, *exc: object) -> None: ...
