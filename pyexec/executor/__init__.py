"""Executors: how a task is started and stopped (container; universal in a later issue)."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Executor

__all__ = ["Executor", "new_executor"]


def new_executor(kind: str = "container", **options: Any) -> Executor:
    """An executor of ``kind``: "container" (namespaces; needs root)."""
    if kind == "container":
        from .container import ContainerExecutor
        return ContainerExecutor(**options)
    raise ConfigError("kind", kind, "is not an executor kind (container)")
