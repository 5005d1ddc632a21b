"""Cgroup management for pyexec tasks: one manager per task, v1 or v2 backend.

This package owns everything under /sys/fs/cgroup that pyexec touches:
detecting the host's cgroup layout (``detect_mode``), picking the backend
(``new_manager``), and the ``CgroupManager`` interface the executor uses
(samples are ``pyexec.stats.ResourceUsage``)::

    with new_manager("task-1", Resources(memory="64M", pids=100)) as m:
        m.add_pid(pid)
        ...
        print(m.stats().memory.usage, m.oom_killed())

Backends: ``v1.V1Manager`` (v1 and hybrid hosts; one directory per
hierarchy) and ``v2.V2Manager`` (unified hierarchy). Controller specifics are
in memory.py, cpu.py, pids.py, cpuset.py and io.py.
"""
from __future__ import annotations

import errno
import functools
import os
from typing import List, Optional, Sequence, Set

from ..config import Resources
from .base import CgroupManager
from .devices import DeviceRule
from .mounts import cgroup_mounts
from .v1 import V1Manager, v1_mounts
from .v2 import V2Manager, placement_base, unified_root

__all__ = ["detect_mode", "new_manager", "parent_dirs", "task_names", "may_create_cgroups", "CgroupManager",
           "V1Manager", "V2Manager"]


# A name=systemd-only v1 mount (tracking, no controller) does not make a v1 host.
_KERNEL_V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc",
})


@functools.lru_cache(maxsize=None)
def detect_mode() -> str:
    """The host's cgroup layout, cached for the life of the process:

    * ``"v2"`` -- cgroup2 mounted at /sys/fs/cgroup (unified);
    * ``"hybrid"`` -- v1 controller hierarchies plus a cgroup2 mount
      (normally /sys/fs/cgroup/unified, usually without controllers);
    * ``"v1"`` -- v1 hierarchies only.

    Raises FileNotFoundError when no cgroup file system is mounted.
    """
    mounts = cgroup_mounts()
    v2 = [m.mountpoint for m in mounts if m.fstype == "cgroup2"]
    v1 = [m for m in mounts if m.fstype == "cgroup" and _KERNEL_V1_CONTROLLERS.intersection(m.options)]
    if "/sys/fs/cgroup" in v2:
        return "v2"
    if v1:
        return "hybrid" if v2 else "v1"
    if v2:
        return "v2"
    raise FileNotFoundError(errno.ENOENT, "no cgroup file system is mounted (see /proc/self/mountinfo)")


def new_manager(name: str, resources: Resources, parent: str = "pyexec",
                devices: Optional[Sequence[DeviceRule]] = None) -> CgroupManager:
    """A manager for the task cgroup ``<parent>/<name>`` with ``resources``
    (and device rules, see devices.py): the v1 backend on v1 and hybrid hosts,
    v2 on unified ones. Nothing is created until ``create()`` (or ``with``)."""
    manager: CgroupManager
    if detect_mode() == "v2":
        manager = V2Manager(name, resources, parent, root=unified_root())
    else:
        manager = V1Manager(name, resources, parent)
    manager.device_rules = devices
    return manager


def parent_dirs(parent: str = "pyexec") -> List[str]:
    """The directories of the parent cgroup ``parent`` in every hierarchy a
    task may join (whether they exist or not). Executors keep them between
    tasks; everything below them is a task's."""
    if detect_mode() == "v2":
        tops = [placement_base(unified_root())]
    else:
        tops = sorted(set(v1_mounts().values()))
    return [os.path.join(top, parent.strip("/")) for top in tops]


def task_names(parent: str = "pyexec") -> List[str]:
    """Names of the task cgroups that exist under ``parent`` in any hierarchy
    (a crashed caller may leave one in some hierarchies only)."""
    names: Set[str] = set()
    for directory in parent_dirs(parent):
        try:
            names.update(entry.name for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
    return sorted(names)


def may_create_cgroups() -> bool:
    """Whether this process may create task cgroups: root with writable
    hierarchies, or (v2) a caller whose own cgroup was delegated to it. The
    universal executor runs without cgroups when this is False."""
    try:
        mode = detect_mode()
    except FileNotFoundError:
        return False
    if mode == "v2":
        base = placement_base(unified_root())
        return os.access(base, os.W_OK) and os.access(os.path.join(base, "cgroup.procs"), os.W_OK)
    mounts = [m for c, m in v1_mounts().items() if c != "unified"]
    return bool(mounts) and all(os.access(m, os.W_OK) for m in mounts)
