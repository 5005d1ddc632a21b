"""The cgroup v1 backend (also used on hybrid hosts).

A v1 task cgroup is one directory ``<mount>/<parent>/<name>`` in every mounted
hierarchy that matters (memory, cpu, cpuacct, pids, blkio, devices, and
freezer when needed), so that stats and kill_all work even when no limit
is set; cpuset, hugetlb, net_cls and net_prio only when a field of theirs
is. Co-mounted controllers (``cpu,cpuacct``) share one directory.

On a hybrid host the task also joins ``<cgroup2 mount>/<parent>/<name>`` (key
"unified" in ``paths``): the controller-less v2 tree still tracks membership,
and its cgroup.kill (kernel 5.14+) kills the whole task in one atomic step,
forks in flight included, before the freezer loop is ever needed.

This module owns mount discovery for v1, creating/removing those directories
(including the cpuset copy-from-parent dance), moving pids into all of them,
and the freezer-based kill loop. Controller specifics live in memory.py,
cpu.py, pids.py, cpuset.py, io.py, iolimits.py, hugetlb.py and netcls.py.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
from typing import Dict, FrozenSet, List, Mapping, Optional, Tuple

from ..config import Resources
from ..errors import ConfigError
from ..stats.usage import ResourceUsage
from .base import CgroupManager, FreezeControl, fields_needing
from .cpu import check_cpu_v1, set_cpu_v1, stat_cpu_v1
from .cpuset import check_cpuset_v1, init_cpuset_v1, set_cpuset_v1
from .devices import set_devices_v1, set_devices_v2
from .fscommon import read_keyed, read_text, write_text
from .hugetlb import check_hugetlb_v1, set_hugetlb_v1
from .io import check_io_v1, enable_io_accounting_v1, set_io_v1, stat_io_v1
from .iolimits import check_iolimits_v1, set_iolimits_v1
from .memory import check_memory_v1, oom_kills_v1, set_memory_v1, stat_memory_v1
from .mounts import cgroup_mounts_cached
from .netcls import check_net_cls_v1, check_net_prio_v1, set_net_cls_v1, set_net_prio_v1
from .pids import check_pids_v1, set_pids_v1, stat_pids_v1
from .tree import freeze_kill_thaw, kill_pids, remove_empty_parents, retry_vanished_parent, tree_pids

__all__ = ["V1Manager", "V1_CONTROLLERS", "v1_mounts"]

log = logging.getLogger(__name__)

#: The v1 hierarchies a task joins, when mounted.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer",
                  "name=systemd", "hugetlb", "net_cls", "net_prio")

#: Hierarchies joined only when one of these Resources fields is set (each
#: joined hierarchy costs a mkdir, a pid write and an rmdir per task).
_JOINED_FOR = {"cpuset": ("cpuset_cpus", "cpuset_mems"), "hugetlb": ("hugetlb",),
               "net_cls": ("net_cls_classid",), "net_prio": ("net_prio_ifpriomap",)}

# Resources' controller names that are spelled differently on v1.
_V1_NAMES = {"io": "blkio"}



# What is derived from the cached mount entries, recomputed when they change:
# (entries, v1_mounts of them, {optional hierarchies wanted: a default V1Manager's mounts}).
_Derived = Tuple[object, Dict[str, str], Dict[FrozenSet[str], Dict[str, str]]]
_derived: _Derived = ((), {}, {})


def _optional_wanted(resources: Resources) -> FrozenSet[str]:
    return frozenset(ctl for ctl, fields in _JOINED_FOR.items()
                     if any(getattr(resources, name) is not None for name in fields))


def _derive() -> _Derived:
    global _derived
    entries = cgroup_mounts_cached()
    if _derived[0] is not entries:
        found: Dict[str, str] = {}
        for entry in entries:
            if entry.fstype == "cgroup2":
                found.setdefault("unified", entry.mountpoint)
                continue
            for opt in entry.options:
                if opt in V1_CONTROLLERS and opt not in found:
                    found[opt] = entry.mountpoint
        _derived = (entries, found, {})
    return _derived


def v1_mounts() -> Dict[str, str]:
    """Controller -> mount point of every v1 hierarchy in V1_CONTROLLERS (first
    mount wins), plus "unified" -> the cgroup2 mount of a hybrid host."""
    return dict(_derive()[1])


def _normalised(found: Mapping[str, str]) -> Dict[str, str]:
    return {c: os.path.normpath(found[c]) for c in V1_CONTROLLERS + ("unified",) if c in found}


def _default_mounts(resources: Resources) -> Dict[str, str]:
    """The hierarchies (normalised mount points) a task with ``resources``
    joins by default; they depend on the resources only by which optional
    hierarchies (_JOINED_FOR) they ask for, so the answers are kept per mount table."""
    _entries, found, by_wanted = _derive()
    key = _optional_wanted(resources)
    if key not in by_wanted:
        joined = joined_by_default(resources, found)
        by_wanted[key] = _normalised({c: m for c, m in found.items() if c in joined})
    return dict(by_wanted[key])


@functools.lru_cache(maxsize=None)
def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        numbers = os.uname().release.split("-")[0].split(".")
        return (int(numbers[0]), int(numbers[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def joined_by_default(resources: Resources, found: Mapping[str, str]) -> set:
    """The hierarchies a task joins: what its limits and stats need, no more.
    Every joined hierarchy costs a mkdir, a pid write and an rmdir per task.
    cpuset, hugetlb, net_cls and net_prio only with a limit of theirs (they
    can then not be added by an update); the freezer only when the v2 twin cannot kill (no cgroup.kill before 5.14);
    name=systemd never (pyexec's cgroups are not systemd's business)."""
    wanted = {"memory", "cpu", "cpuacct", "pids", "blkio", "devices", "unified"}
    wanted |= _optional_wanted(resources)
    if "unified" not in found or not _kernel_at_least(5, 14):
        wanted.add("freezer")
    return wanted


def _in_unified(ctl: str) -> str:
    """A hint when a hybrid host's cgroup2 tree holds the controller instead
    (a controller is in one hierarchy at a time: v2 until mounted as v1)."""
    unified = v1_mounts().get("unified")
    if unified is None:
        return ""
    try:
        available = read_text(os.path.join(unified, "cgroup.controllers")).split()
    except OSError:
        return ""
    if ctl not in available:
        return ""
    return f"; this hybrid host's cgroup2 tree at {unified} holds it, mount it as v1 to use it"


class V1Manager(CgroupManager):
    """A task cgroup on the v1 hierarchies.

    ``mounts`` (controller -> mount point) restricts or replaces the discovered
    hierarchies; by default the ones ``joined_by_default`` names.
    """

    def __init__(self, name: str, resources: Resources, parent: str = "pyexec",
                 mounts: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(name, resources, parent)
        self._mounts = _default_mounts(resources) if mounts is None else _normalised(mounts)
        if mounts is None:
            self._mounts.update(self._optional_in_use())
        if not set(self._mounts) - {"unified"}:
            raise FileNotFoundError(errno.ENOENT, "no cgroup v1 hierarchy is mounted (see /proc/self/mountinfo)")
        self._paths = {c: os.path.join(m, self.parent, self.name) for c, m in self._mounts.items()}
        self._dir_list = sorted(set(self._paths.values()))
        self._by_mount: Dict[str, List[str]] = {}  # mount -> its controllers (co-mounted ones share it)
        for ctl, mount in self._mounts.items():
            self._by_mount.setdefault(mount, []).append(ctl)

    def _optional_in_use(self) -> Dict[str, str]:
        """The optional hierarchies (cpuset, hugetlb, net_cls, net_prio) not
        asked for whose mount already has this cgroup: a manager reopened
        with no limits (pyexec-oci's kill and delete) must still see, kill
        and remove what the task's creator joined. One stat per such mount."""
        found = _derive()[1]
        out = {}
        for ctl in _JOINED_FOR:
            if ctl in found and ctl not in self._mounts:
                mount = os.path.normpath(found[ctl])
                if os.path.isdir(os.path.join(mount, self.parent, self.name)):
                    out[ctl] = mount
        return out

    def _dirs(self) -> List[str]:
        return list(self._dir_list)

    @property
    def paths(self) -> Dict[str, str]:
        return dict(self._paths)

    # -- validation and limits ---------------------------------------------------
    def _check_controllers(self, res: Resources) -> None:
        if res.unified is not None:
            raise ConfigError("unified", res.unified, "names cgroup v2 files, and this host's limits are cgroup v1")
        for ctl, fields in fields_needing(res, _V1_NAMES).items():
            if ctl not in self._paths:
                field_name, value = fields[0]
                if self.exists() and ctl in v1_mounts():
                    raise ConfigError(field_name, value, f"can only be set at launch on cgroup v1: the task "
                                                         f"did not join the '{ctl}' hierarchy")
                raise ConfigError(field_name, value,
                                  f"needs the cgroup v1 '{ctl}' controller, which is not mounted "
                                  f"(mounted: {', '.join(sorted(self._mounts))}){_in_unified(ctl)}")

    def _check_files(self, res: Resources) -> None:
        p = self._paths
        checks = (("memory", check_memory_v1), ("cpu", check_cpu_v1), ("cpuset", check_cpuset_v1),
                  ("pids", check_pids_v1), ("blkio", check_io_v1), ("blkio", check_iolimits_v1),
                  ("hugetlb", check_hugetlb_v1), ("net_cls", check_net_cls_v1), ("net_prio", check_net_prio_v1))
        for ctl, check in checks:
            if ctl in p:
                check(p[ctl], res)

    def _apply(self, res: Resources) -> None:
        p = self._paths
        setters = (("memory", set_memory_v1), ("cpu", set_cpu_v1), ("cpuset", set_cpuset_v1),
                   ("pids", set_pids_v1), ("blkio", set_io_v1), ("blkio", set_iolimits_v1),
                   ("hugetlb", set_hugetlb_v1), ("net_cls", set_net_cls_v1), ("net_prio", set_net_prio_v1))
        for ctl, setter in setters:
            if ctl in p:
                setter(p[ctl], res)

    # -- lifecycle -----------------------------------------------------------------
    def _unique_mounts(self) -> Dict[str, List[str]]:
        return self._by_mount

    def _make_dirs(self, created: List[str]) -> None:
        """The leaf is tried first: the parents normally exist (executors keep
        them), and a mkdir of each would fail for nothing. In cpuset every
        level is walked, each one must have been initialised."""
        for mount, ctls in self._unique_mounts().items():
            if "cpuset" not in ctls:
                leaf = self._paths[ctls[0]]
                try:
                    os.mkdir(leaf, 0o755)
                except FileNotFoundError:
                    pass  # a parent is missing: level by level
                else:
                    created.append(leaf)
                    log.debug("created cgroup %s", leaf)
                    continue
            retry_vanished_parent(functools.partial(self._make_dirs_in, mount, "cpuset" in ctls, created))

    def _make_dirs_in(self, mount: str, is_cpuset: bool, created: List[str]) -> None:
        """mkdir <mount>/<parent...>/<name>; parents may exist, the leaf must not."""
        levels = [*self.parent_levels(), self.name]
        for depth in range(1, len(levels) + 1):
            path = os.path.join(mount, *levels[:depth])
            leaf = depth == len(levels)
            try:
                os.mkdir(path, 0o755)
                created.append(path)
                log.debug("created cgroup %s", path)
            except FileExistsError:
                if leaf:
                    raise
            if is_cpuset:
                init_cpuset_v1(path)

    def _after_create(self) -> None:
        if "blkio" in self._paths:
            enable_io_accounting_v1(self._paths["blkio"])
        if self.device_rules is not None:
            if "devices" in self._paths:
                set_devices_v1(self._paths["devices"], self.device_rules)
            else:
                set_devices_v2(self._paths.get("unified", ""), self.device_rules)  # warns: not enforced

    def _remove_parents(self) -> None:
        for mount in self._unique_mounts():
            remove_empty_parents(os.path.join(mount, self.parent), mount)

    # -- killing ---------------------------------------------------------------------
    def _kill_round(self, deadline: float) -> None:
        """cgroup.kill of the unified twin when there is one; else freeze (so
        nothing forks between listing and killing), SIGKILL all, thaw."""
        unified = self._paths.get("unified")
        if self.use_cgroup_kill and unified is not None and os.path.exists(os.path.join(unified, "cgroup.kill")):
            write_text(os.path.join(unified, "cgroup.kill"), "1")
            # The twin's members are read first: a process that exits between
            # the two reads (they are all dying now) is then missing from the
            # second, not the first, and is not taken for one outside the twin.
            in_twin = set(tree_pids([unified]))
            if not set(self.pids()) - in_twin:
                return
            # Someone moved a task process out of the v2 twin; the freezer gets it.
        freezer = self._paths.get("freezer")
        if freezer is None or not os.path.exists(os.path.join(freezer, "freezer.state")):
            kill_pids(self.pids())
            return
        state = os.path.join(freezer, "freezer.state")
        freeze_kill_thaw(state, "FROZEN", "THAWED", lambda: read_text(state) == "FROZEN", self.pids, deadline)

    def _freezer(self) -> Optional[FreezeControl]:
        """The unified twin's cgroup.freeze (a hybrid host; v2 freezing is a
        core feature, no controller needed), else the v1 freezer hierarchy."""
        unified = self._paths.get("unified")
        if unified is not None and os.path.exists(os.path.join(unified, "cgroup.freeze")):
            events = os.path.join(unified, "cgroup.events")
            return FreezeControl(os.path.join(unified, "cgroup.freeze"), "1", "0",
                                 lambda: (read_keyed(events) or {}).get("frozen") == 1)
        freezer = self._paths.get("freezer")
        if freezer is None or not os.path.exists(os.path.join(freezer, "freezer.state")):
            return None
        state = os.path.join(freezer, "freezer.state")
        return FreezeControl(state, "FROZEN", "THAWED", lambda: read_text(state) == "FROZEN")

    # -- reading -----------------------------------------------------------------------
    def _sample(self) -> ResourceUsage:
        p = self._paths
        return ResourceUsage(memory=stat_memory_v1(p.get("memory")),
                             cpu=stat_cpu_v1(p.get("cpu"), p.get("cpuacct")),
                             pids=stat_pids_v1(p.get("pids")), io=stat_io_v1(p.get("blkio")),
                             source="cgroup v1")

    def _oom_kill_count(self) -> Optional[int]:
        memory = self._paths.get("memory")
        if memory is None or not os.path.isdir(memory):
            return None
        return oom_kills_v1(memory)

