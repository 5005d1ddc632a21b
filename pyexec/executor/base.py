"""The executor interface every kind of executor implements.

An executor runs exactly one task: ``launch`` once, then ``wait``/``wait_async``,
``signal`` and ``shutdown``; it is a context manager whose exit shuts the task
down. Shared behaviour (state checks, the stats stream, shutdown's
signal-grace-kill sequence) lives here once; subclasses supply how a task
starts, how it is sampled and how all of its processes are killed. This
module names no implementation: the files of a task are taskfiles.py's, the
Linux launch is linux.py's.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import signal as _signal
import threading
from typing import Any, AsyncIterator, Dict, Iterator, Mapping, Optional, Sequence

from ..config import ExecCommand
from ..errors import ConfigError, PyexecError, TaskExitedError
from ..process import ExecResult, ExecStream, ExitResult, ProcessState, TaskHandle
from ..stats.usage import ResourceUsage

__all__ = ["Executor"]

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

    def adopt(self, handle: Dict[str, Any]) -> None:
        """Take over the task of a parsed handle (``pyexec.handles.parse_handle``)
        instead of launching one: what ``pyexec.reattach`` does with a new
        executor of the handle's kind."""
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
                       user: Optional[str] = None) -> ExecStream:
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


def _check_interval(interval: float) -> None:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ConfigError("interval", interval, "is not a positive number of seconds")
