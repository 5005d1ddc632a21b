"""Resource limits of a task (``Isolation.rlimits``): the names this host
knows, the values accepted, and the kernel numbers the shim sets them by.

This module owns normalising a caller's mapping (``{"nofile": 1024,
"core": (0, "unlimited")}``, names with or without ``RLIMIT_``, any case) into
``{name: (soft, hard)}`` of ints with RLIM_INFINITY for "unlimited", checking
that no soft limit is above its hard one, and ``rlimit_number``. The names are
those of Python's ``resource`` module on this host; where there is none
(Windows) every name is unknown.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple, Union

try:
    import resource
except ImportError:  # Windows: no rlimits; every name is then unknown
    resource = None  # type: ignore[assignment]

from .errors import ConfigError

__all__ = ["RlimitValue", "normalise_rlimits", "rlimit_number"]

_RLIMIT_NAMES = {name[len("RLIMIT_"):].lower(): getattr(resource, name)
                 for name in dir(resource) if name.startswith("RLIMIT_")} if resource else {}
_RLIM_INFINITY = resource.RLIM_INFINITY if resource else -1

RlimitValue = Union[int, str, None]


def _rlimit_value(field_name: str, value: RlimitValue) -> int:
    if value is None or value == -1 or (isinstance(value, str) and value.lower() in ("unlimited", "infinity")):
        return _RLIM_INFINITY
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field_name, value, "is not a limit (a non-negative int or 'unlimited')")
    return value


def normalise_rlimits(value: Mapping[str, Any]) -> Dict[str, Tuple[int, int]]:
    """``{name: (soft, hard)}`` of ``value``, names lower case without
    ``rlimit_``; a ConfigError naming the entry for anything else."""
    if not isinstance(value, Mapping):
        raise ConfigError("rlimits", value, "must be a mapping of name to (soft, hard)")
    out: Dict[str, Tuple[int, int]] = {}
    for raw_name, limits in value.items():
        name = str(raw_name).lower()
        if name.startswith("rlimit_"):
            name = name[len("rlimit_"):]
        if name not in _RLIMIT_NAMES:
            raise ConfigError("rlimits", raw_name, "is not a resource limit name (nofile, nproc, core, ...)")
        if isinstance(limits, (int, str)) or limits is None:
            limits = (limits, limits)
        if not isinstance(limits, (tuple, list)) or len(limits) != 2:
            raise ConfigError(f"rlimits.{name}", limits, "must be (soft, hard)")
        soft = _rlimit_value(f"rlimits.{name}", limits[0])
        hard = _rlimit_value(f"rlimits.{name}", limits[1])
        if hard != _RLIM_INFINITY and (soft == _RLIM_INFINITY or soft > hard):
            raise ConfigError(f"rlimits.{name}", tuple(limits), "soft limit is above the hard limit")
        out[name] = (soft, hard)
    return out


def rlimit_number(name: str) -> int:
    """The kernel's RLIMIT_* number of a normalised rlimit name."""
    number: int = _RLIMIT_NAMES[name]
    return number
