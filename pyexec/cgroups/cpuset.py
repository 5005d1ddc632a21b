"""The cpuset controller: the cpuset_cpus / cpuset_mems limits on v1 and v2.

v1 quirk owned here: a new v1 cpuset cgroup starts with empty cpuset.cpus and
cpuset.mems, and attaching a task to it fails (ENOSPC) until both are filled,
so every cgroup we create (the parent too) first copies its parent's values.
On v2 an empty cpuset.cpus means "inherit", so nothing needs copying.

On v1 a requested list is checked against what the parent cgroup may use
before anything is written (cgroupspy's cpuset controller reads and parses
the parent's lists), so the error names the CPUs that are available rather
than the kernel's bare EINVAL. There are no cpuset stats.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Set

from cgroupspy.controllers import CpuSetController
from cgroupspy.interfaces import CommaDashSetFile
from cgroupspy.nodes import Node

from ..config import Resources
from ..errors import ConfigError
from .fscommon import read_text, require_file, write_text, write_value

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
        write_text(own, value)


_LIST = CommaDashSetFile("cpuset.cpus")


def parse_list(text: str) -> Set[int]:
    """The numbers of a kernel list like "0-3,6" (cgroupspy's parser)."""
    return _LIST.sanitize_get(text)


def _allowed(parent: str, field_name: str) -> Optional[Set[int]]:
    """What the parent cgroup may use (v1 cpuset.cpus / cpuset.mems); None when unknown."""
    controller = CpuSetController(Node(parent.encode()))
    try:
        return controller.cpus if field_name == "cpuset_cpus" else controller.mems
    except (OSError, ValueError):
        return None


def _check_subset_v1(path: str, field_name: str, value: str) -> None:
    allowed = _allowed(os.path.dirname(path), field_name)
    if allowed is None:
        return
    outside = parse_list(value) - allowed
    if outside:
        what = "CPUs" if field_name == "cpuset_cpus" else "memory nodes"
        available = ",".join(str(n) for n in sorted(allowed)) or "none"
        raise ConfigError(field_name, value, f"names {what} this host does not offer here "
                                             f"({','.join(str(n) for n in sorted(outside))}; "
                                             f"available: {available})")


def _check(path: str, res: Resources) -> None:
    if res.cpuset_cpus is not None:
        require_file(path, "cpuset.cpus", "cpuset_cpus", res.cpuset_cpus, "cpuset")
    if res.cpuset_mems is not None:
        require_file(path, "cpuset.mems", "cpuset_mems", res.cpuset_mems, "cpuset")


def check_cpuset_v1(path: str, res: Resources) -> None:
    """Files present, and the lists within the parent's (checked before any write)."""
    _check(path, res)
    for field_name in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(res, field_name)
        if value is not None:
            _check_subset_v1(path, field_name, value)


def _set(path: str, res: Resources) -> None:
    # The kernel answers EINVAL when the list is not a subset of the parent's;
    # write_value turns that into a ConfigError naming the field.
    if res.cpuset_cpus is not None:
        write_value(os.path.join(path, "cpuset.cpus"), res.cpuset_cpus, "cpuset_cpus", res.cpuset_cpus)
    if res.cpuset_mems is not None:
        write_value(os.path.join(path, "cpuset.mems"), res.cpuset_mems, "cpuset_mems", res.cpuset_mems)


check_cpuset_v2 = _check
set_cpuset_v1 = set_cpuset_v2 = _set
