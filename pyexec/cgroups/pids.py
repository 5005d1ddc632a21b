"""The pids controller: the ``pids`` limit and the pids.current/pids.max stats.

The files are the same on v1 and v2 (pids.max, pids.current); the *_v1 and
*_v2 names exist so every controller module has the same shape.
"""
from __future__ import annotations

import os
from typing import Optional

from ..config import Resources
from ..stats.usage import PidsUsage
from .fscommon import read_int, read_int_or_max, require_file, write_value

__all__ = ["check_pids_v1", "set_pids_v1", "stat_pids_v1", "check_pids_v2", "set_pids_v2", "stat_pids_v2"]


def check_pids(path: str, res: Resources) -> None:
    """Raise ConfigError when pids is set and pids.max is missing."""
    if res.pids is not None:
        require_file(path, "pids.max", "pids", res.pids, "pids")


def set_pids(path: str, res: Resources) -> None:
    """Write pids.max."""
    if res.pids is not None:
        write_value(os.path.join(path, "pids.max"), res.pids, "pids", res.pids)


def stat_pids(path: Optional[str]) -> PidsUsage:
    """pids.current and pids.max (None = "max") of a cgroup; all None without one."""
    if path is None:
        return PidsUsage()
    current = read_int(os.path.join(path, "pids.current"))
    if current is None:  # no such file (or directory): read rather than looked for
        return PidsUsage()
    return PidsUsage(current=current, limit=read_int_or_max(os.path.join(path, "pids.max")))


check_pids_v1 = check_pids_v2 = check_pids
set_pids_v1 = set_pids_v2 = set_pids
stat_pids_v1 = stat_pids_v2 = stat_pids
