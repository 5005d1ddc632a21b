"""Executors: how a task is started and stopped; ``new_executor`` picks one by kind."""
from __future__ import annotations

import sys
from typing import Any, Optional

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
    if kind == "container":
        from .container import ContainerExecutor
        return ContainerExecutor(**options)
    if kind == "universal":
        from .universal import UniversalExecutor
        return UniversalExecutor(**options)
    if kind == "portable":
        from .portable import PortableExecutor
        return PortableExecutor(**options)
    raise ConfigError("kind", kind, f"is not an executor kind ({', '.join(KINDS)})")
