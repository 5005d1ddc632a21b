"""User-namespace id maps of a task (``Isolation.uid_map``/``gid_map``).

This module owns normalising a caller's maps into tuples of
``(inside_id, host_id, count)``, the default map of a task that asks for the
"user" namespace without maps (root's range in /etc/subuid or /etc/subgid, else
``DEFAULT_SUBID_RANGE``), and looking up the host id an inside id maps to.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .errors import ConfigError

__all__ = ["IdMap", "DEFAULT_SUBID_RANGE", "normalise_idmap", "default_idmap", "host_id"]

IdMap = Sequence[Tuple[int, int, int]]

#: The host range the task's ids map to when "user" is asked for without maps
#: and /etc/subuid (/etc/subgid) names no range for root: 65536 ids from 100000.
DEFAULT_SUBID_RANGE = (100000, 65536)


def normalise_idmap(field_name: str, value: Optional[IdMap]) -> Optional[Tuple[Tuple[int, int, int], ...]]:
    """``value`` as a tuple of (inside_id, host_id, count) tuples; None stays
    None; a ConfigError naming ``field_name`` for a bad or empty map."""
    if value is None:
        return None
    out: List[Tuple[int, int, int]] = []
    for entry in value:
        if (not isinstance(entry, (tuple, list)) or len(entry) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in entry)
                or entry[2] == 0):
            raise ConfigError(field_name, entry, "must be (inside_id, host_id, count) with count > 0")
        out.append((entry[0], entry[1], entry[2]))
    if not out:
        raise ConfigError(field_name, value, "must not be empty")
    return tuple(out)


def default_idmap(subid_file: str, owner: str = "root") -> Tuple[Tuple[int, int, int], ...]:
    """((0, first, count),) from ``owner``'s first range in /etc/subuid or
    /etc/subgid (``name:first:count`` lines), else DEFAULT_SUBID_RANGE."""
    try:
        with open(subid_file) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (owner, "0") and parts[1].isdigit() and parts[2].isdigit():
                    return ((0, int(parts[1]), int(parts[2])),)
    except OSError:
        pass
    return ((0,) + DEFAULT_SUBID_RANGE,)


def host_id(idmap: Tuple[Tuple[int, int, int], ...], inside: int) -> Optional[int]:
    """The host id that ``inside`` maps to, or None when it is not mapped."""
    for start, outside, count in idmap:
        if start <= inside < start + count:
            return outside + inside - start
    return None
