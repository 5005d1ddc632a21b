"""pyexec: run tasks isolated in Linux namespaces and limited by cgroups.

Public names are imported lazily (PEP 562), so ``import pyexec`` stays cheap
and a CLI or a worker process pays only for what it uses.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExecCommand": "pyexec.config",
    "Resources": "pyexec.config",
    "Isolation": "pyexec.config",
    "Mount": "pyexec.config",
    "LogConfig": "pyexec.config",
    "Device": "pyexec.config",
    "Bridge": "pyexec.config",
    "ProcessState": "pyexec.process",
    "ExitResult": "pyexec.process",
    "ExecResult": "pyexec.process",
    "ExecProcess": "pyexec.executor.exec_streaming",
    "ResourceUsage": "pyexec.stats",
    "new_executor": "pyexec.executor",
    "reattach": "pyexec.executor",
    "Executor": "pyexec.executor",
    "PyexecError": "pyexec.errors",
    "ConfigError": "pyexec.errors",
    "LaunchError": "pyexec.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyexec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(list(globals()) + list(_EXPORTS))
