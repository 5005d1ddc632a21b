"""The cpuset controller: the cpuset_cpus / cpuset_mems limits on v1 and v2.

v1 quirk owned here: a new v1 cpuset cgroup starts with empty cpuset.cpus and
cpuset.mems, and attaching a task to it fails (ENOSPC) until both are filled,
so every cgroup we create (the parent too) first copies its parent's values.
On v2 an empty cpuset.cpus means "inherit", so nothing needs copying.
There are no cpuset fields in CgroupStats, hence no stat_* functions.
"""
from __future__ import annotations

import logging
import os

from ..config import Resources
from .base import read_text, require_file, write_value

__all__ = ["init_cpuset_v1", "check_cpuset_v1", "set_cpuset_v1", "check_cpuset_v2", "set_cpuset_v2"]

log = logging.getLogger(__name__)


def init_cpuset_v1(path: str) -> None:
    """Copy the parent's cpuset.cpus/mems into a freshly made v1 cgroup ``path``
    where they are empty (the parent must already be initialised)."""
    parent = os.path.dirname(path)
    for filename in ("cpuset.cpus", "cpuset.mems"):
        own = os.path.join(path, filename)
        if not os.path.exists(own) or read_text(own):
            continue
        value = read_text(os.path.join(parent, filename))
        log.debug("cpuset: copy %s=%r from %s", filename, value, parent)
        with open(own, "w") as f:
            f.write(value)


def _check(path: str, res: Resources) -> None:
    if res.cpuset_cpus is not None:
        require_file(path, "cpuset.cpus", "cpuset_cpus", res.cpuset_cpus, "cpuset")
    if res.cpuset_mems is not None:
        require_file(path, "cpuset.mems", "cpuset_mems", res.cpuset_mems, "cpuset")


def _set(path: str, res: Resources) -> None:
    # The kernel answers EINVAL when the list is not a subset of the parent's;
    # write_value turns that into a ConfigError naming the field.
    if res.cpuset_cpus is not None:
        write_value(os.path.join(path, "cpuset.cpus"), res.cpuset_cpus, "cpuset_cpus", res.cpuset_cpus)
    if res.cpuset_mems is not None:
        write_value(os.path.join(path, "cpuset.mems"), res.cpuset_mems, "cpuset_mems", res.cpuset_mems)


check_cpuset_v1 = check_cpuset_v2 = _check
set_cpuset_v1 = set_cpuset_v2 = _set
