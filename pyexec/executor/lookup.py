"""Finding a task's program the way Nomad's universal executor does.

This module owns the search order shared by the executors that run a program
straight from the host file system (portable, universal):

1. a bare name (``"server"``): ``task_dir/local/server``, ``task_dir/server``,
   then every entry of the task's PATH in order;
2. a relative path with a separator (``"bin/server"``): under
   ``task_dir/local`` first, then under ``task_dir`` (never the caller's cwd);
3. an absolute path: as is.

Only regular files count: a directory (or a device, a fifo) of that name is
skipped and the search goes on. On Windows the extensions of PATHEXT are tried
too. The result is an absolute path.

The execute bit: artifacts unpacked into a task directory often lose their
mode, so a file found *inside the task directory* (symlinks resolved: a link
in local/ to a host file is a host file) that has no execute bit at all gets
``u+x,g+x,o+x`` (``chmod +x``, for every class: the task may run as another
user than the file's owner; Nomad does the same) and runs. Host
files found through PATH or an absolute path outside the task directory are
never modified: the PATH search skips files without an execute bit (as
``execvp`` does) and an absolute path is returned as is, so a non-executable
host file fails at exec with EACCES instead of being made executable on the
task's say-so.

Pure apart from that chmod: no process state, no logging side effects beyond
debug lines; safe to call from any executor.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Iterable, Iterator, List, Optional

from ..config import DEFAULT_PATH
from ..errors import LaunchError

__all__ = ["find_program"]

log = logging.getLogger(__name__)

_WINDOWS = os.name == "nt"
_EXEC_BITS = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _has_separator(name: str) -> bool:
    return os.sep in name or bool(os.altsep and os.altsep in name)


def _with_extensions(path: str) -> List[str]:
    """``path`` itself and, on Windows, ``path`` + each PATHEXT extension."""
    if not _WINDOWS:
        return [path]
    exts = [e for e in os.environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD").split(os.pathsep) if e]
    if any(path.lower().endswith(e.lower()) for e in exts):
        return [path]  # "tool.exe" is not also tried as "tool.exe.exe"
    return [path] + [path + e for e in exts]


def _regular_file(path: str) -> Optional[os.stat_result]:
    """The stat of ``path`` when it is a regular file (symlinks followed), else None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: embedded NUL
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _inside(path: str, directory: str) -> bool:
    """True when ``path`` resolves to somewhere below ``directory``."""
    real_dir = os.path.realpath(directory)
    try:
        return os.path.commonpath([os.path.realpath(path), real_dir]) == real_dir
    except ValueError:  # Windows: on another drive
        return False


def _make_executable(path: str, st: os.stat_result) -> None:
    if _WINDOWS or st.st_mode & _EXEC_BITS:
        return  # Windows has no execute bit; any x bit at all: leave the owner's choice alone
    mode = stat.S_IMODE(st.st_mode) | _EXEC_BITS
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise LaunchError("chmod", path, exc.errno or errno.EPERM) from None
    log.debug("made %s executable (mode %o)", path, mode)


def _task_candidates(name: str, task_dir: str) -> Iterator[str]:
    for base in (os.path.join(task_dir, "local"), task_dir):
        yield from _with_extensions(os.path.normpath(os.path.join(base, name)))


def _path_candidates(name: str, env_path: Optional[str]) -> Iterator[str]:
    search = DEFAULT_PATH if env_path is None else env_path
    for entry in search.split(os.pathsep):
        # An empty entry means "the current directory" to a shell: that is the
        # caller's cwd here, not the task's, so it is never searched.
        if entry and os.path.isabs(entry):
            yield from _with_extensions(os.path.join(entry, name))


def find_program(name: str, task_dir: str, env_path: Optional[str]) -> str:
    """The absolute path of the program ``name`` for a task in ``task_dir``.

    ``env_path`` is the PATH of the task's environment (``None``: the default
    PATH of pyexec, as execvp uses a default when PATH is unset; ``""``: no
    PATH search). Raises ``LaunchError("exec", name, ENOENT)`` when nothing
    is found, ``LaunchError("chmod", path, errno)`` when a file in the task
    directory cannot be made executable.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise LaunchError("exec", str(name), errno.ENOENT)
    task_dir = os.path.abspath(os.fspath(task_dir))
    if os.path.isabs(name):
        found = _first(_with_extensions(os.path.normpath(name)), task_dir, require_x=False)
        if found is None and os.path.isdir(name):
            raise LaunchError("exec", name, errno.EISDIR, "is a directory, not a program")
    else:
        found = _first(_task_candidates(name, task_dir), task_dir, require_x=False)
        if found is None and not _has_separator(name):
            found = _first(_path_candidates(name, env_path), task_dir, require_x=True)
    if found is None:
        raise LaunchError("exec", name, errno.ENOENT)
    return found


def _first(candidates: Iterable[str], task_dir: str, require_x: bool) -> Optional[str]:
    """The first regular file among ``candidates``; one inside the task
    directory is made executable, one outside is taken as is or, with
    ``require_x``, skipped unless executable."""
    for candidate in candidates:
        st = _regular_file(candidate)
        if st is None:
            continue
        if _inside(candidate, task_dir):
            _make_executable(candidate, st)
        elif require_x and not _WINDOWS and not os.access(candidate, os.X_OK):
            continue
        return candidate
    return None
