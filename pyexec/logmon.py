"""Rotated log files of a task, for callers that hand their own fifos or pipes.

This module owns the Python face of the rotation written once in C
(csrc/logmon.c, compiled into the shim and reached through ``pyexec.native``;
the per-task monitor process uses the same code): ``RotatingLog`` writes
``<base>.0``, ``<base>.1``, ... in one directory, and ``LogMon`` pumps a
stdout and a stderr fifo (or pipe) into ``<name>.stdout.N`` /
``<name>.stderr.N`` from one background thread.
``libexec/pyexec-logmon`` runs a ``LogMon`` in a process of its own.

Rules (see csrc/logmon.h): a file is rotated before it passes
``LogConfig.max_file_size``, at the last newline that fits, or at the first
newline within a slack of min(max_file_size/16, 64 KiB) past the limit, else
hard; the newest ``max_files`` files are kept; a restart appends to the
highest index. Symlinks, fifos or hard links planted at a file name are
replaced by a fresh file, never written through.

Bounded buffer, backpressure, full disks: nothing is buffered beyond the
pipe itself (64 KiB by default) and one 64 KiB read per stream. When the disk
is slower than the writer, the pipe fills and the writer blocks in write(2)
until we catch up: output is slowed down, never lost and never piled up in
memory. A failing disk does not block it: a write error (ENOSPC, EIO, EDQUOT,
EFBIG) drops that chunk at once, counts it in ``dropped`` and logs one
warning per episode; the first write that succeeds afterwards is preceded by
a line ``[pyexec-logmon: N bytes dropped: <reason>]``. Only a disk whose
write(2) never returns (a hung network mount) stalls the pump and, once the
pipe is full, the writer: no timeout is added on top of the kernel's.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import stat
import sys
import termios
import threading
from typing import Dict, List, Optional, Tuple, Union

from .config import LogConfig
from .native import ffi, lib

__all__ = ["RotatingLog", "LogMon", "CHUNK"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  #: bytes read from a stream at a time
_PathLike = Union[str, "os.PathLike[str]"]


# LogConfig is frozen: one default instance serves every caller.
DEFAULT_LOG_CONFIG = LogConfig()

class RotatingLog:
    """``<base>.N`` files in ``directory`` (which must exist), rotated by ``config``.

    ``write`` never raises for disk errors: it returns the bytes dropped by that
    call (0 when everything was written). One instance is used by one thread at
    a time; a lock makes ``write`` and ``close`` from different threads safe.
    """

    def __init__(self, directory: _PathLike, base: str, config: LogConfig = DEFAULT_LOG_CONFIG) -> None:
        self.path = os.fspath(directory)
        self.base = base
        raw = os.fsencode(base)
        if b"\0" in raw:
            raise ValueError(f"log file base with NUL: {base!r}")
        self._lock = threading.Lock()
        self._log = ffi.new("struct px_log *")
        self._log.fd = -1
        self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        err = lib.px_log_open(self._log, self._dir_fd, raw, config.max_file_size, config.max_files)
        if err < 0:
            lib.px_log_close(self._log)
            os.close(self._dir_fd)
            self._dir_fd = -1
            raise OSError(-err, f"{os.strerror(-err)}: {base}.N in {self.path}")

    @property
    def index(self) -> int:
        """N of the file currently written."""
        return int(self._log.index)

    @property
    def size(self) -> int:
        return int(self._log.size)

    @property
    def dropped(self) -> int:
        """Bytes given up after write errors, since open."""
        return int(self._log.dropped)

    @property
    def last_errno(self) -> int:
        return int(self._log.last_errno)

    @property
    def closed(self) -> bool:
        return self._dir_fd < 0

    def write(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """Writes data, rotating as needed; returns the bytes dropped (0: none)."""
        if not data:
            return 0
        with self._lock:
            if self._dir_fd < 0:
                raise ValueError("write to a closed RotatingLog")
            before = self._log.dropped
            was_failing = self._log.unreported > 0
            err = lib.px_log_write(self._log, ffi.from_buffer(data), len(data))
            lost = int(self._log.dropped - before)
        if err < 0 and not was_failing:
            log.warning("%s.N in %s: %s; dropping output until writes succeed again",
                        self.base, self.path, os.strerror(-err))
        elif err == 0 and was_failing:
            log.info("%s.N in %s: writing again", self.base, self.path)
        return lost

    def close(self) -> None:
        with self._lock:
            if self._dir_fd < 0:
                return
            lib.px_log_close(self._log)
            os.close(self._dir_fd)
            self._dir_fd = -1

    def __enter__(self) -> "RotatingLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_fifo(path: str) -> int:
    """A fifo opened O_RDWR (defined on Linux): we count as a writer ourselves,
    so a writer that closes or restarts never gives us EOF, and the open does
    not wait for a writer; only stop() ends the pump."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a fifo: {path}")
    return fd


class LogMon:
    """Pumps a stdout and a stderr stream into rotated files, from one thread.

    ``stdout_fifo``/``stderr_fifo`` are fifo paths (either may be None). They
    are opened O_RDWR, so EOF never comes while we hold them: writers may come
    and go, and ``stop()`` ends the pump. ``from_fds`` takes already-open read
    ends instead (owned and closed by us); a pipe's EOF ends that stream
    (call ``stop()`` all the same, to close the files).
    Files: ``<name>.stdout.N`` and ``<name>.stderr.N`` in ``directory``.
    ``stop(drain=True)`` writes what the streams hold at that moment, from the
    pump thread or, when never started, from the caller's thread.
    """

    def __init__(self, stdout_fifo: Optional[_PathLike], stderr_fifo: Optional[_PathLike],
                 directory: _PathLike, name: str, config: LogConfig = DEFAULT_LOG_CONFIG) -> None:
        fds: List[Optional[int]] = []
        try:
            for path in (stdout_fifo, stderr_fifo):
                fds.append(None if path is None else _open_fifo(os.fspath(path)))
        except BaseException:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
            raise
        self._setup(fds[0], fds[1], directory, name, config)

    @classmethod
    def from_fds(cls, stdout_fd: Optional[int], stderr_fd: Optional[int],
                 directory: _PathLike, name: str, config: LogConfig = DEFAULT_LOG_CONFIG) -> "LogMon":
        """A LogMon over open read ends of pipes or fifos; it owns and closes them."""
        self = cls.__new__(cls)
        for fd in (stdout_fd, stderr_fd):
            if fd is not None:
                os.set_blocking(fd, False)
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self._setup(stdout_fd, stderr_fd, directory, name, config)
        return self

    def _setup(self, stdout_fd: Optional[int], stderr_fd: Optional[int],
               directory: _PathLike, name: str, config: LogConfig) -> None:
        self.name = name
        self._streams: List[Tuple[int, RotatingLog]] = []
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._closed = False
        self._drain = True
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            for fd, stream in ((stdout_fd, "stdout"), (stderr_fd, "stderr")):
                if fd is not None:
                    self._streams.append((fd, RotatingLog(directory, f"{name}.{stream}", config)))
        except BaseException:
            self._close_all([fd for fd in (stdout_fd, stderr_fd) if fd is not None])
            raise

    @property
    def logs(self) -> List[RotatingLog]:
        return [rlog for _, rlog in self._streams]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "LogMon":
        if self._thread is not None:
            raise RuntimeError("LogMon already started")
        self._thread = threading.Thread(target=self._run, name=f"logmon-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: bool = True, timeout: Optional[float] = None) -> None:
        """Ends the pump. With drain, what the streams held when stop() was
        called is written first (later writes may be left unread). Closes all;
        a second call does nothing."""
        if self._closed:
            return
        self._drain = drain
        self._stopping = True
        if self._thread is not None:
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("logmon %s: the pump did not stop within %ss", self.name, timeout)
                return
        elif drain:
            self._drain_now({fd: rlog for fd, rlog in self._streams})
        self._close_all([fd for fd, _ in self._streams])

    def __enter__(self) -> "LogMon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_all(self, fds: List[int]) -> None:
        self._closed = True
        for fd in fds + [self._wake_r, self._wake_w]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        for _, rlog in self._streams:
            rlog.close()

    def _pump(self, fd: int, rlog: RotatingLog, limit: Optional[int] = None) -> bool:
        """Reads what is there (at most limit bytes); False at EOF."""
        while limit is None or limit > 0:
            try:
                data = os.read(fd, CHUNK if limit is None else min(CHUNK, limit))
            except BlockingIOError:
                return True
            except InterruptedError:
                continue
            if not data:
                return False
            rlog.write(data)
            if limit is not None:
                limit -= len(data)
            else:
                return True  # one chunk per stream per round: fair between the two
        return True

    def _run(self) -> None:
        poller = select.poll()
        live = {fd: rlog for fd, rlog in self._streams}
        for fd in live:
            poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while live and not self._stopping:
                for fd, _events in poller.poll():
                    if fd == self._wake_r or fd not in live:
                        continue
                    if not self._pump(fd, live[fd]):
                        poller.unregister(fd)
                        del live[fd]
            if self._stopping and self._drain:
                self._drain_now(live)
        except Exception:
            log.exception("logmon %s: the pump failed", self.name)

    def _drain_now(self, live: Dict[int, RotatingLog]) -> None:
        """Writes what each stream holds now (FIONREAD), not what comes later."""
        for fd, rlog in live.items():
            pending = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
            self._pump(fd, rlog, int.from_bytes(pending, sys.byteorder))
