"""A task's files on the caller's side: its task directory and its stdio.

``prepare_task_dir`` makes ``task_dir`` and ``task_dir/local``;
``StdioFiles`` opens the task's stdin/stdout/stderr (or the log pipes a
monitor turns into rotated files); ``user_environment`` adds the user's
USER/LOGNAME/HOME; ``check_host_isolation`` refuses, for executors without
namespaces, the isolation they cannot give. Used by every executor kind,
so nothing here is Linux-only.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from ..config import ExecCommand
from ..errors import ConfigError
from ..users import TaskUser

__all__ = ["StdioFiles", "check_host_isolation", "user_environment", "prepare_task_dir"]


# Close-on-exec and no controlling tty on POSIX; binary mode on Windows.
_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def check_host_isolation(cmd: ExecCommand, kind: str) -> None:
    """Refuse, before anything exists, the isolation an executor without
    namespaces cannot give: a root file system, mounts, a hostname. The rest
    of ``Isolation`` (the namespace set, masks, capabilities) describes the
    container and is ignored here; rlimits are honoured where the executor can."""
    isolation = cmd.isolation
    needs = "needs the container executor"
    if isolation.rootfs is not None:
        raise ConfigError("isolation.rootfs", isolation.rootfs, f"{needs} (the {kind} executor has none)")
    if isolation.mounts:
        raise ConfigError("isolation.mounts", [m.target for m in isolation.mounts],
                          f"{needs} (the {kind} executor has no mount namespace)")
    if isolation.hostname is not None:
        raise ConfigError("isolation.hostname", isolation.hostname,
                          f"{needs} (the {kind} executor has no uts namespace)")


def user_environment(env: Optional[Dict[str, str]], user: TaskUser) -> Dict[str, str]:
    """The task's environment with USER, LOGNAME and HOME of ``user`` unless set."""
    out = dict(env or {})
    name = user.name or str(user.uid)
    out.setdefault("USER", name)
    out.setdefault("LOGNAME", name)
    out.setdefault("HOME", user.home)
    return out


def prepare_task_dir(task_dir: str) -> Optional[str]:
    """Create ``task_dir`` (when missing) and ``task_dir/local``; returns
    ``task_dir`` when this call created it, so a failed launch can remove it."""
    made = None
    if not os.path.isdir(task_dir):
        os.makedirs(task_dir)
        made = task_dir
    os.makedirs(os.path.join(task_dir, "local"), exist_ok=True)
    return made


class StdioFiles:
    """The task's stdin/stdout/stderr fds, opened by us or given by the caller.

    Default: stdin from /dev/null. stdout/stderr without a path or fd go to
    ``task_dir/logs``: with ``log_pipes`` through a pipe each whose read end
    (``log_fds``) the task's monitor turns into rotated files
    (``<name>.stdout.N``); without, appended to ``<name>.stdout.0`` directly.
    """

    def __init__(self, cmd: ExecCommand, log_pipes: bool = False) -> None:
        self._opened: List[int] = []
        self.log_fds: List[int] = [-1, -1]
        self.log_dir: Optional[str] = None
        given = cmd.stdio_fds or (None, None, None)
        logs = os.path.join(cmd.task_dir, "logs")
        try:
            stdin = given[0] if given[0] is not None else self._open("stdin_path", cmd.stdin_path or os.devnull,
                                                                     os.O_RDONLY)
            out: List[int] = []
            for index, stream in ((1, "stdout"), (2, "stderr")):
                path = getattr(cmd, f"{stream}_path")
                fd = given[index]
                if fd is not None:
                    out.append(fd)
                elif path is None and log_pipes:
                    out.append(self._log_pipe(index - 1, logs))
                else:
                    out.append(self._open_log(f"{stream}_path", path, logs, f"{cmd.name}.{stream}.0"))
            self.fds: Tuple[int, int, int] = (stdin, out[0], out[1])
        except BaseException:
            self.close()
            raise

    def _log_pipe(self, slot: int, logs: str) -> int:
        os.makedirs(logs, exist_ok=True)
        self.log_dir = logs
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        self._opened += [read_end, write_end]
        self.log_fds[slot] = read_end
        return write_end

    def _open(self, field: str, path: str, flags: int) -> int:
        try:
            fd = os.open(path, flags | _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise ConfigError(field, path, f"cannot be opened: {exc.strerror}") from None
        self._opened.append(fd)
        return fd

    def _open_log(self, field: str, path: Optional[str], logs: str, default_name: str) -> int:
        if path is None:
            os.makedirs(logs, exist_ok=True)
            path = os.path.join(logs, default_name)
        return self._open(field, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def close(self) -> None:
        while self._opened:
            os.close(self._opened.pop())
