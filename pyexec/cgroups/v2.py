"""The cgroup v2 (unified hierarchy) backend, written against
Documentation/admin-guide/cgroup-v2.rst.

A task cgroup is the single directory ``<root>/<parent>/<name>``. This module
owns finding the cgroup2 mount, enabling controllers down the path
(``+memory +cpu +pids ...`` into each ancestor's cgroup.subtree_control),
creating/removing the directories, moving pids, the directory fd for
clone3(CLONE_INTO_CGROUP) and the kill loop (cgroup.kill, kernel 5.14+; else
cgroup.freeze, 5.2+, plus SIGKILL; else plain SIGKILL rounds).

Placement: when the caller runs in a cgroup that systemd delegated to it
(a Delegate=yes service or scope; systemd 251+ marks those with the
``trusted.delegate``/``user.delegate`` xattr), task cgroups go inside it
(``<own>/pyexec/<name>``) -- a delegated unit owns its subtree and nothing
else, root or not. Otherwise under the hierarchy root
(``/sys/fs/cgroup/pyexec/<name>``) when we may write there (root), else --
a non-root caller whose cgroup was handed to it -- under the caller's own
cgroup. Either way the base may hold processes: a cgroup namespace root
inside a container, or our own cgroup with the rest of our service.
Controllers can only be enabled for the children of a cgroup without member
processes ("no internal processes" rule; only the real root is exempt), so
the base's processes move into a ``leaf`` child before the first controller
is enabled there, as container init scripts do, and the task cgroups are made
beside that leaf.
A caller found in ``<base>/leaf`` later still uses ``<base>``.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Dict, List, Optional, Set

from ..config import Resources
from ..errors import ConfigError
from ..stats.usage import ResourceUsage
from .base import CgroupManager, FreezeControl, fields_needing
from .cpu import check_cpu_v2, set_cpu_v2, stat_cpu_v2
from .cpuset import check_cpuset_v2, set_cpuset_v2
from .devices import set_devices_v2
from .fscommon import read_keyed, read_text, write_text
from .hugetlb import check_hugetlb_v2, set_hugetlb_v2
from .io import check_io_v2, set_io_v2, stat_io_v2
from .iolimits import check_iolimits_v2, set_iolimits_v2
from .memory import check_memory_v2, oom_kills_v2, set_memory_v2, stat_memory_v2
from .mounts import cgroup_mounts
from .pids import check_pids_v2, set_pids_v2, stat_pids_v2
from .tree import freeze_kill_thaw, kill_pids, remove_empty_parents, retry_vanished_parent
from .unified import check_unified_v2, reject_v1_only, set_unified_v2, unified_controllers

__all__ = ["V2Manager", "unified_root", "own_cgroup", "placement_base", "move_members_to_leaf", "is_delegated",
           "STATS_CONTROLLERS"]

log = logging.getLogger(__name__)

#: Controllers enabled whenever available, so stats work without limits.
STATS_CONTROLLERS = ("memory", "cpu", "pids", "io")



def unified_root() -> str:
    """The cgroup2 mount point: /sys/fs/cgroup on a unified host,
    /sys/fs/cgroup/unified on a hybrid one, else the first cgroup2 mount."""
    mounts = [m.mountpoint for m in cgroup_mounts() if m.fstype == "cgroup2"]
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in mounts:
            return preferred
    if mounts:
        return mounts[0]
    raise FileNotFoundError(errno.ENOENT, "no cgroup2 file system is mounted (see /proc/self/mountinfo)")


LEAF = "leaf"


def own_cgroup(root: str, proc_cgroup: str = "/proc/self/cgroup") -> str:
    """The calling process's cgroup directory in the unified hierarchy at ``root``."""
    with open(proc_cgroup) as f:
        for line in f:
            hierarchy, _, path = line.rstrip("\n").split(":", 2)
            if hierarchy == "0":
                return os.path.normpath(os.path.join(root, path.lstrip("/")))
    raise FileNotFoundError(errno.ENOENT, f"{proc_cgroup} has no cgroup v2 line")


#: What systemd (251+) sets to "1" on the cgroup of a Delegate=yes unit.
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")


def is_delegated(directory: str) -> bool:
    """Whether systemd delegated the cgroup ``directory`` (its xattr says so)."""
    for name in DELEGATE_XATTRS:
        try:
            if os.getxattr(directory, name).strip() == b"1":
                return True
        except OSError:  # ENODATA, EPERM for trusted.* without CAP_SYS_ADMIN, ENOTSUP
            continue
    return False


def _outside_leaf(root: str, own: str) -> str:
    """``own``, or its parent when ``own`` is the leaf that
    move_members_to_leaf put us in (else every manager would nest one deeper)."""
    if own != root and os.path.basename(own) == LEAF:
        return os.path.dirname(own)
    return own


def placement_base(root: str) -> str:
    """Where task cgroups go: our own cgroup when systemd delegated it to us;
    else the hierarchy root when we may create cgroups and enable controllers
    there; else the caller's own (handed-over) cgroup."""
    try:
        own: Optional[str] = _outside_leaf(root, own_cgroup(root))
    except FileNotFoundError:
        own = None
    if own is not None and own != root and is_delegated(own):
        return own
    if os.access(os.path.join(root, "cgroup.subtree_control"), os.W_OK) and os.access(root, os.W_OK):
        return root
    if own is None:
        raise FileNotFoundError(errno.ENOENT, "/proc/self/cgroup has no cgroup v2 line")
    return own


def _procs_of(directory: str) -> List[int]:
    return [int(x) for x in read_text(os.path.join(directory, "cgroup.procs")).split()]


def _write_subtree_control(directory: str, ctl: str) -> None:
    write_text(os.path.join(directory, "cgroup.subtree_control"), f"+{ctl}")
    log.debug("enabled %s in %s", ctl, directory)


def move_members_to_leaf(directory: str) -> None:
    """Move every process of ``directory`` into ``directory/leaf`` so that
    controllers can be enabled for its children (the caller moves too; it
    never shares a cgroup with a task either way)."""
    leaf = os.path.join(directory, LEAF)
    os.makedirs(leaf, exist_ok=True)
    for pid in _procs_of(directory):
        try:
            write_text(os.path.join(leaf, "cgroup.procs"), str(pid))
        except ProcessLookupError:
            continue
    log.info("moved the processes of %s into %s to enable controllers below it", directory, leaf)


def _has_members(directory: str) -> bool:
    """Whether ``directory`` holds processes and is bound by the no-internal-
    process rule: every cgroup but the real root (which has no cgroup.type;
    a cgroup namespace's root does have one)."""
    return os.path.exists(os.path.join(directory, "cgroup.type")) and bool(_procs_of(directory))


def _controllers(directory: str, filename: str = "cgroup.controllers") -> Set[str]:
    return set(read_text(os.path.join(directory, filename)).split())


class V2Manager(CgroupManager):
    """A task cgroup on the unified hierarchy mounted at ``root`` (default: found)."""

    def __init__(self, name: str, resources: Resources, parent: str = "pyexec",
                 root: Optional[str] = None) -> None:
        super().__init__(name, resources, parent)
        self.root = os.path.normpath(root or unified_root())
        self.base = placement_base(self.root)
        self.path = os.path.join(self.base, self.parent, self.name)

    @property
    def paths(self) -> Dict[str, str]:
        return {"unified": self.path}

    # -- controllers -----------------------------------------------------------------
    def _needed(self, res: Resources) -> Dict[str, list]:
        needed = fields_needing(res, {})
        needed.pop("unified", None)  # its files name their controllers
        for ctl in unified_controllers(res):
            needed.setdefault(ctl, []).append(("unified", res.unified))
        return needed

    def _check_controllers(self, res: Resources) -> None:
        reject_v1_only(res)
        available = _controllers(self.base)
        for ctl, fields in self._needed(res).items():
            if ctl not in available:
                field_name, value = fields[0]
                raise ConfigError(field_name, value,
                                  f"needs the cgroup v2 '{ctl}' controller, which is not available in "
                                  f"{self.base} (cgroup.controllers: {' '.join(sorted(available)) or 'empty'})")

    def _enable(self, directory: str, res: Resources) -> None:
        """Enable in ``directory``'s subtree_control what its children need."""
        needed = self._needed(res)
        available = _controllers(directory)
        enabled = _controllers(directory, "cgroup.subtree_control")
        wanted = [ctl for ctl in sorted(set(STATS_CONTROLLERS) | set(needed))
                  if ctl not in enabled and ctl in available]
        if wanted and directory == self.base and _has_members(directory):
            # Move first rather than on EBUSY: the threaded controllers (cpu,
            # pids, cpuset) are accepted in a cgroup with members and make it
            # a thread root, where memory and io then fail with EOPNOTSUPP.
            move_members_to_leaf(directory)
        for ctl in wanted:
            try:
                try:
                    _write_subtree_control(directory, ctl)
                except OSError as e:
                    if e.errno != errno.EBUSY or directory != self.base:
                        raise
                    if _procs_of(directory):  # else a concurrent launch moved them already
                        move_members_to_leaf(directory)
                    _write_subtree_control(directory, ctl)
            except OSError as e:
                if ctl not in needed:
                    log.warning("could not enable the %s controller in %s: %s (its stats will be None)",
                                ctl, directory, e)
                    continue
                field_name, value = needed[ctl][0]
                raise ConfigError(field_name, value,
                                  f"needs the cgroup v2 '{ctl}' controller, but enabling it in "
                                  f"{directory}/cgroup.subtree_control failed: {os.strerror(e.errno or 0)}"
                                  ) from e

    def _make_dirs(self, created: List[str]) -> None:
        retry_vanished_parent(lambda: self._make_path(self.resources, created))

    def _make_path(self, res: Resources, created: List[str]) -> None:
        directory = self.base
        levels = [*self.parent_levels(), self.name]
        for depth, part in enumerate(levels, 1):
            self._enable(directory, res)
            directory = os.path.join(directory, part)
            try:
                os.mkdir(directory, 0o755)
                created.append(directory)
                log.debug("created cgroup %s", directory)
            except FileExistsError:
                if depth == len(levels):
                    raise

    def _check_files(self, res: Resources) -> None:
        for check in (check_memory_v2, check_cpu_v2, check_cpuset_v2, check_pids_v2, check_io_v2,
                      check_iolimits_v2, check_hugetlb_v2, check_unified_v2):
            check(self.path, res)

    def _apply(self, res: Resources) -> None:
        # unified last: its raw files may refine what the fields wrote.
        for setter in (set_memory_v2, set_cpu_v2, set_cpuset_v2, set_pids_v2, set_io_v2, set_iolimits_v2,
                       set_hugetlb_v2, set_unified_v2):
            setter(self.path, res)

    # -- lifecycle -------------------------------------------------------------------
    def _after_create(self) -> None:
        """Device rules. memory.oom.group stays 0, as on v1 (and runc's
        default): the task's monitor lives in this cgroup, and a group OOM kill
        would take it down with the task, so no exit record, log tail or
        cleanup would follow."""
        if self.device_rules is not None:
            set_devices_v2(self.path, self.device_rules)

    def _before_update(self, res: Resources) -> None:
        """Enable what ``res`` needs in every cgroup from the base down to ours."""
        parent = os.path.dirname(self.path)
        ancestors = []
        while parent != self.base and parent.startswith(self.base + os.sep):
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for directory in [self.base] + ancestors[::-1]:
            self._enable(directory, res)

    def open_dir_fd(self) -> Optional[int]:
        """An O_RDONLY|O_DIRECTORY|O_CLOEXEC fd of the cgroup for clone3's
        CLONE_INTO_CGROUP (kernel 5.7+). The caller closes it."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _remove_parents(self) -> None:
        remove_empty_parents(os.path.join(self.base, self.parent), self.base)

    # -- killing -----------------------------------------------------------------------
    def _kill_round(self, deadline: float) -> None:
        kill_file = os.path.join(self.path, "cgroup.kill")
        if self.use_cgroup_kill and os.path.exists(kill_file):
            # The kernel SIGKILLs the whole subtree, forks in flight included.
            write_text(kill_file, "1")
            return
        freeze_file = os.path.join(self.path, "cgroup.freeze")
        if not os.path.exists(freeze_file):
            kill_pids(self.pids())
            return
        events = os.path.join(self.path, "cgroup.events")
        freeze_kill_thaw(freeze_file, "1", "0", lambda: (read_keyed(events) or {}).get("frozen") == 1,
                         self.pids, deadline)

    def _freezer(self) -> Optional[FreezeControl]:
        freeze_file = os.path.join(self.path, "cgroup.freeze")
        if not os.path.exists(freeze_file):
            return None
        events = os.path.join(self.path, "cgroup.events")
        return FreezeControl(freeze_file, "1", "0", lambda: (read_keyed(events) or {}).get("frozen") == 1)

    # -- reading -------------------------------------------------------------------------
    def _sample(self) -> ResourceUsage:
        return ResourceUsage(memory=stat_memory_v2(self.path), cpu=stat_cpu_v2(self.path),
                             pids=stat_pids_v2(self.path), io=stat_io_v2(self.path), source="cgroup v2")

    def _oom_kill_count(self) -> Optional[int]:
        if not os.path.isdir(self.path):
            return None
        return oom_kills_v2(self.path)
