"""Executors: how a task is started and stopped; ``new_executor`` picks one by kind."""
from __future__ import annotations

import sys
from typing import Any, Dict, Optional

from ..errors import ConfigError
from .base import Executor

__all__ = ["Executor", "new_executor", "KINDS"]

KINDS = ("container", "universal", "portable")


def new_executor(kind: Optional[str] = None, **options: Any) -> Executor:
    """An executor of ``kind``: "container" (namespaces; needs root),
    "universal" (on the host, own session, cgroup when possible; any user) or
    "portable" (a plain child process; Windows' only kind). ``None``: the
    default of this system, "container" on Linux and "portable" elsewhere."""
    if kind is None:
        kind = "container" if sys.platform.startswith("linux") else "portable"
    cls = _classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        cls = _classes[kind] = _import_class(kind)
    return cls(**options)


# Imported on first use (the container and universal kinds need the compiled
# shim, which Windows lacks), then kept: no import statement per launch.
_classes: Dict[str, type] = {}


def _import_class(kind: Any) -> type:
    if kind == "container":
        from .container import ContainerExecutor
        return ContainerExecutor
    if kind == "universal":
        from .universal import UniversalExecutor
        return UniversalExecutor
    if kind == "portable":
        from .portable import PortableExecutor
        return PortableExecutor
    raise ConfigError("kind", kind, f"is not an executor kind ({', '.join(KINDS)})")
