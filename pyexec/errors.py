"""The error types of pyexec: one hierarchy, every error names what was wrong.

* ``ConfigError`` — bad input, raised before anything is created. Its text is
  ``"<field>: <value!r> <reason>"`` so a caller (or the CLI) can show it as is.
* ``LaunchError`` — the task could not be started (a failed mount, pivot_root,
  exec...). It names the step and the path, like ``exec /nope: No such file or
  directory``, and is raised only after everything launch made was removed.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Any, Optional

__all__ = ["PyexecError", "ConfigError", "LaunchError", "TaskExitedError"]


class PyexecError(Exception):
    """Base class of every error pyexec raises on purpose."""


class ConfigError(PyexecError, ValueError):
    """Invalid configuration: names the field, the offending value and why."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {value!r} {reason}")


class LaunchError(PyexecError, OSError):
    """The task did not reach its first instruction.

    ``step`` is the stage of the shim that failed ("exec", "mount",
    "pivot_root", ...), ``path`` the file or directory it worked on and
    ``errno`` the kernel's error number (0 when the failure was not a syscall).
    """

    def __init__(self, step: str, path: str, err: int, detail: Optional[str] = None) -> None:
        self.step = step
        self.path = path
        reason = detail or (os.strerror(err) if err else "failed")
        text = f"{step} {path}: {reason}" if path else f"{step}: {reason}"
        OSError.__init__(self, err or _errno.EIO, text)
        self.errno = err
        self.strerror = text

    def __str__(self) -> str:
        return self.strerror or ""


class TaskExitedError(PyexecError):
    """An operation needs a running task, but the task has already exited."""
