"""``Executor.exec_streaming``: exec into a running task with the caller
holding the command's stdin and stdout (pipes, or a pty of the task's own
devpts with ``tty=True``). The command starts, runs and dies like one of
``exec`` (exec.py owns that part); this module owns the pipes, the pty and
``ExecProcess``, the handle the caller gets.

    with ex.exec_streaming(["sh"], tty=True) as p:
        p.stdin.write(b"tty; exit 3\\n")
        p.stdout.read()
        p.wait().exit_code                        # 3
"""
from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
import struct
import warnings
from typing import Any, BinaryIO, List, Mapping, Optional, Sequence, Tuple, cast

from ..errors import ConfigError, TaskExitedError
from ..native import lib
from ..process import ExecResult
from .exec import EXITED, ExecTarget, start_exec
from .execmon import ExecMonitor, abandon

__all__ = ["ExecProcess", "start_streaming"]

# ioctls Python's termios lacks, from the kernel's headers (pyexec/_build_shim.py):
_TIOCSPTLCK = lib.TIOCSPTLCK    # unlock a pty pair
_TIOCGPTPEER = lib.TIOCGPTPEER  # open the slave of a master without a path lookup (Linux 4.13)
_PTMX_RDEV = os.makedev(5, 2)         # /dev/ptmx's fixed device number (devices.txt)


# -- exec_streaming: the caller holds the pipes ------------------------------------

class _PtyReader(io.RawIOBase):
    """A pty master as a readable raw file: EIO (the other side is gone) is EOF."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: Any) -> int:
        try:
            return os.readv(self._fd, [buffer])
        except OSError as exc:
            if exc.errno == errno.EIO:
                return 0
            raise

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


def _task_ptmx(target: ExecTarget) -> int:
    """The ptmx of the task's own devpts (so the command's ``tty`` names a
    /dev/pts entry it can see), reached from /proc/<pid>/root without
    following any link the task could have planted, opened only once fstat
    shows the ptmx device."""
    if target.exited():
        raise TaskExitedError(EXITED)
    fd = os.open(f"/proc/{target.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if target.exited():  # that /proc/<pid> may have been a stranger's
        os.close(fd)
        raise TaskExitedError(EXITED)
    try:
        for name in ("dev", "pts"):
            inner = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        node = os.open("ptmx", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        st = os.fstat(node)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != _PTMX_RDEV:
            raise OSError(errno.ENODEV, "not a ptmx")
        return os.open(f"/proc/self/fd/{node}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(node)


def _open_pty(target: ExecTarget) -> Tuple[int, int]:
    """(master, slave): in the task's devpts when it has one, else os.openpty()."""
    try:
        master = _task_ptmx(target)
    except OSError:
        master = -1
    if master >= 0:
        try:
            fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            return master, slave
        except OSError:
            os.close(master)
    return os.openpty()  # both non-inheritable


class ExecProcess:
    """A command running in the task (``Executor.exec_streaming``).

    ``stdin``: a writable, unbuffered binary file (None when not asked for);
    ``stdout``: a readable binary file of the command's stdout and stderr (the
    pty's master with ``tty=True``; its end reads as EOF). ``pid`` is the host
    pid of the exec's monitor, the process this caller reaps. ``wait()``
    gives an ExecResult (``output`` empty: read ``stdout``); ``kill()`` kills
    the command and everything it started; leaving a ``with`` block kills
    what still runs, reaps and closes the pipes.
    """

    def __init__(self, monitor: ExecMonitor, argv: Tuple[str, ...], stdin: Optional[BinaryIO],
                 stdout: BinaryIO, tty: bool) -> None:
        self._monitor = monitor
        self.argv = argv
        self.stdin = stdin
        self.stdout = stdout
        self.tty = tty
        self._result: Optional[ExecResult] = None

    @property
    def pid(self) -> int:
        return self._monitor.pid

    @property
    def result(self) -> Optional[ExecResult]:
        return self._result

    def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Block until the command ended; ``TimeoutError`` after ``timeout`` seconds."""
        if self._result is None:
            if not self._monitor.exited(timeout):
                raise TimeoutError(f"exec {list(self.argv)!r} still running after {timeout}s")
            code, sig = self._monitor.reap()
            self._result = ExecResult(exit_code=code, signal=sig)
        return self._result

    def poll(self) -> Optional[ExecResult]:
        try:
            return self.wait(0)
        except TimeoutError:
            return None

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` to the command (through its monitor); False once it ended."""
        return self._monitor.signal(int(sig))

    def kill(self) -> None:
        """Kill the command, its process group and every process it adopted."""
        self._monitor.cut_lifeline()

    def close(self) -> ExecResult:
        """Kill what still runs, reap, close the pipes; the ExecResult."""
        try:
            if self._result is None:
                code, sig = self._monitor.finish()
                self._result = ExecResult(exit_code=code, signal=sig)
            return self._result
        finally:
            for stream in (self.stdin, self.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def __enter__(self) -> "ExecProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        monitor = getattr(self, "_monitor", None)
        if monitor is None or monitor.result is not None:
            return
        warnings.warn(f"exec {list(self.argv)!r} dropped while running: killed", ResourceWarning, source=self)
        abandon(monitor)

    def __repr__(self) -> str:
        state = "running" if self._result is None else f"exit_code={self._result.exit_code}"
        return f"<ExecProcess pid={self.pid} {list(self.argv)!r} {state}>"


def start_streaming(target: ExecTarget, argv: Sequence[str], stdin: bool = True, tty: bool = False,
                    env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                    user: Optional[str] = None) -> ExecProcess:
    """``Executor.exec_streaming``: see there."""
    if not isinstance(stdin, bool):
        raise ConfigError("stdin", stdin, "must be True or False")
    if not isinstance(tty, bool):
        raise ConfigError("tty", tty, "must be True or False")
    ours: List[int] = []      # to close whatever happens
    theirs: List[int] = []    # ours until ExecProcess owns them
    try:
        if tty:
            master, slave = _open_pty(target)
            theirs.append(master)
            ours.append(slave)
            stdio = (slave, slave, slave)
            input_fd = os.dup(master) if stdin else -1
            if input_fd >= 0:
                theirs.append(input_fd)
            output_fd = master
        else:
            output_fd, out_w = os.pipe2(os.O_CLOEXEC)
            theirs.append(output_fd)
            ours.append(out_w)
            if stdin:
                in_r, input_fd = os.pipe2(os.O_CLOEXEC)
                theirs.append(input_fd)
                ours.append(in_r)
            else:
                in_r, input_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
                ours.append(in_r)
            stdio = (in_r, out_w, out_w)
        monitor = start_exec(target, argv, env, cwd, user, stdio, tty=stdio[0] if tty else -1)
    except BaseException:
        for fd in theirs:
            os.close(fd)
        raise
    finally:
        for fd in ours:
            os.close(fd)
    stdout: BinaryIO
    if tty:
        stdout = io.BufferedReader(_PtyReader(output_fd))
    else:
        stdout = io.open(output_fd, "rb")
    stdin_file = cast(BinaryIO, io.open(input_fd, "wb", buffering=0)) if input_fd >= 0 else None
    return ExecProcess(monitor, tuple(argv), stdin_file, stdout, tty)
