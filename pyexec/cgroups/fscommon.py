"""Reading and writing cgroup control files: the I/O every controller module,
both backends and the mount table use.

This module owns:

* plain reads (``read_all``, ``read_text``, ``read_int``, ``read_int_or_max``)
  and the parsing of flat-keyed files (``parse_keyed``, ``read_keyed``);
* writes (``write_text``; ``write_value``/``write_values`` for limits, which
  turn the kernel's refusal of a value into a ``ConfigError`` naming the
  Resources field, the file and the kernel's reason);
* ``require_file``: a limit whose control file is missing is an error, never
  silently dropped.

Every write(2) to a control file is logged at DEBUG on this module's logger
(``pyexec.cgroups.fscommon``), one record per write, with the file in the
record's ``cgroup_file`` attribute and the text written in ``cgroup_data``:
the cgroup side of a task can be followed, and checked by tests, without
tracing the process.

Nothing here knows a controller's file names; the callers pass the paths.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Dict, Optional, Sequence, Tuple, Union

from ..errors import ConfigError

__all__ = [
    "read_all", "read_text", "write_text", "read_int", "read_int_or_max", "parse_keyed", "read_keyed",
    "write_value", "write_values", "require_file",
]

log = logging.getLogger(__name__)

# errnos with which the kernel refuses a *value* (as opposed to refusing us).
_VALUE_ERRNOS = frozenset({errno.EINVAL, errno.EBUSY, errno.ERANGE, errno.EOVERFLOW, errno.ENOSPC})


def _log_write(path: str, data: str) -> None:
    log.debug("write %r > %s", data, path, extra={"cgroup_file": path, "cgroup_data": data})


def read_all(fd: int) -> bytes:
    """Everything left to read from ``fd`` (a control file or mountinfo), by plain reads."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_text(path: str) -> str:
    """The content of a control file, stripped. Plain os.open/os.read: a
    buffered file object costs more syscalls (fstat, lseek, ioctl) than the
    read itself, and a launch reads and writes dozens of these files."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_all(fd).decode().strip()
    finally:
        os.close(fd)


def write_text(path: str, data: str) -> None:
    """One write(2) of ``data`` to a control file (the kernel takes each write whole)."""
    if log.isEnabledFor(logging.DEBUG):  # asked before building the record: launches write dozens
        _log_write(path, data)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read_int(path: str) -> Optional[int]:
    """An integer control file; None when the file does not exist."""
    try:
        return int(read_text(path))
    except FileNotFoundError:
        return None


def read_int_or_max(path: str) -> Optional[int]:
    """A file holding an int or ``max``; ``max`` and a missing file give None."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        return None
    return None if text == "max" else int(text)


def parse_keyed(text: str) -> Dict[str, int]:
    """Parse a flat-keyed file (``key value`` per line, like memory.stat, cpu.stat,
    memory.events, memory.oom_control). Lines whose value is not an int are skipped."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return out


def read_keyed(path: str) -> Optional[Dict[str, int]]:
    """``parse_keyed`` of a file; None when the file does not exist."""
    try:
        return parse_keyed(read_text(path))
    except FileNotFoundError:
        return None


def write_value(path: str, text: Union[str, int], field_name: str, value: object) -> None:
    """Write ``text`` to a control file for the Resources field ``field_name``.

    When the kernel refuses the value (EINVAL, EBUSY, ERANGE, ...) the error is a
    ``ConfigError`` naming the field, the file and the kernel's reason; any
    other OSError (permissions, a vanished cgroup) propagates unchanged.
    """
    write_values(path, [(text, field_name, value)])


def write_values(path: str, items: Sequence[Tuple[Union[str, int], str, object]]) -> None:
    """``write_value`` of each (text, field_name, value) in turn through one open fd:
    each write(2) is a request of its own (devices.allow takes one rule per write)."""
    if not items:
        return
    text, field_name, value = items[0]  # the write being made, for the error
    debug = log.isEnabledFor(logging.DEBUG)  # asked once, not per item
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for text, field_name, value in items:  # noqa: B007 (the failing item's, named in the error)
                if debug:
                    _log_write(path, str(text))
                os.write(fd, str(text).encode())
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in _VALUE_ERRNOS:
            data = str(text)
            raise ConfigError(field_name, value,
                              f"was rejected by the kernel: writing {data!r} to {path}: "
                              f"{os.strerror(e.errno)}") from e
        raise


def require_file(directory: str, filename: str, field_name: str, value: object,
                 controller: str, hint: str = "") -> str:
    """The path of ``directory/filename``; a ``ConfigError`` naming the controller
    and the file when it does not exist (a limit is never silently dropped)."""
    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        extra = f" ({hint})" if hint else ""
        raise ConfigError(field_name, value,
                          f"needs {filename} of the '{controller}' cgroup controller, "
                          f"which this host does not provide in {directory}{extra}")
    return path
