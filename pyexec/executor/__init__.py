"""Executors: how a task is started and stopped; ``new_executor`` picks one by
kind and ``reattach`` rebuilds one from a handle.

The container and universal kinds need the compiled shim, which only Linux
has: they are imported on Linux only, so that the portable kind (and this
package) work everywhere.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, Mapping, Optional, Type, Union

from ..errors import ConfigError
from ..handles import parse_handle
from .base import Executor
from .portable import PortableExecutor

if sys.platform.startswith("linux"):
    from .container import ContainerExecutor
    from .universal import UniversalExecutor

__all__ = ["Executor", "new_executor", "reattach", "KINDS"]

KINDS = ("container", "universal", "portable")

_CLASSES: Dict[str, Type[Executor]] = {"portable": PortableExecutor}
if sys.platform.startswith("linux"):
    _CLASSES.update(container=ContainerExecutor, universal=UniversalExecutor)


def new_executor(kind: Optional[str] = None, **options: Any) -> Executor:
    """An executor of ``kind``: "container" (namespaces; needs root),
    "universal" (on the host, own session, cgroup when possible; any user) or
    "portable" (a plain child process; Windows' only kind). ``None``: the
    default of this system, "container" on Linux and "portable" elsewhere."""
    if kind is None:
        kind = "container" if sys.platform.startswith("linux") else "portable"
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        if kind in KINDS:
            raise ConfigError("kind", kind, f"is not available on {sys.platform} (only Linux has it)")
        raise ConfigError("kind", kind, f"is not an executor kind ({', '.join(KINDS)})")
    return cls(**options)


def reattach(handle: Union[str, Mapping[str, Any]]) -> Executor:
    """An executor for the task of ``handle`` (from ``Executor.handle()``),
    with the full API. A task that ended while no caller was alive gives its
    recorded ExitResult at once (``wait()``); one whose state is gone (taken
    over and finished by another caller, or cleaned) raises TaskExitedError."""
    h = parse_handle(handle)
    executor = new_executor(h["kind"], state_root=h["state_root"], cgroup_parent=h["cgroup_parent"])
    executor.adopt(h)
    return executor
