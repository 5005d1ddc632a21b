"""The backend-neutral part of the cgroup manager.

This module owns ``CgroupManager``, the interface the executor calls, and the
logic that is the same on v1 and v2: name checks, the sequence of create and
update (with the rollback of a failed create), pid listing and kill_all's
loop, the parts of a stats sample that need the previous one (cpu percent and
peak memory), destroy, the context manager. Also the mapping of Resources
fields to the controllers they need (``FIELD_CONTROLLER``, ``fields_needing``)
and the merging of an update into the limits in force (``merge_update``).

The backends (v1.py, v2.py) fill in the abstract methods; control-file I/O is
in fscommon.py, the directory trees (members, killing, removal) in tree.py.
"""
from __future__ import annotations

import abc
import dataclasses
import errno
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import Resources
from ..errors import ConfigError
from ..stats.usage import ResourceUsage
from .devices import DeviceRule
from .fscommon import write_text

# Re-exported: tests/conftest.py takes cgroup_mounts from here.
from .mounts import MountEntry, cgroup_mounts
from .tree import remove_tree, rmdir_unused, tree_pids, undo_created

__all__ = [
    "CgroupManager", "MountEntry", "cgroup_mounts", "FIELD_CONTROLLER", "check_names",
    "set_fields", "fields_needing", "merge_update",
]

log = logging.getLogger(__name__)

# Which controller a Resources field needs (v1 and v2 use the same names here;
# v1 "io" is called "blkio", see v1.py).
FIELD_CONTROLLER: Dict[str, str] = {
    "memory": "memory",
    "memory_reservation": "memory",
    "memory_swap": "memory",
    "cpu_shares": "cpu",
    "cpus": "cpu",
    "cpuset_cpus": "cpuset",
    "cpuset_mems": "cpuset",
    "pids": "pids",
    "io_weight": "io",
    "cpu_period_us": "cpu",
    "cpu_quota_us": "cpu",
    "cpu_burst_us": "cpu",
    "cpu_idle": "cpu",
    "cpu_rt_period_us": "cpu",
    "cpu_rt_runtime_us": "cpu",
    "memory_swappiness": "memory",
    "memory_kernel_tcp": "memory",
    "memory_oom_kill_disable": "memory",
    "io_leaf_weight": "io",
    "io_weight_devices": "io",
    "io_throttle_read_bps": "io",
    "io_throttle_write_bps": "io",
    "io_throttle_read_iops": "io",
    "io_throttle_write_iops": "io",
    "hugetlb": "hugetlb",
    "net_cls_classid": "net_cls",
    "net_prio_ifpriomap": "net_prio",
    # The files' own controllers are the backend's business (v2.py; v1 refuses the field).
    "unified": "unified",
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


def set_fields(resources: Resources) -> List[Tuple[str, object]]:
    """(field, value) of every limit set in ``resources``, in declaration order."""
    return [(name, getattr(resources, name)) for name in FIELD_CONTROLLER
            if getattr(resources, name) is not None]


def check_names(name: str, parent: str) -> None:
    """Cgroup ``name`` is one path component; ``parent`` one or more ('a/b'),
    or "" (or "/"): the root of each hierarchy (an OCI cgroupsPath "/name")."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError("name", name, "is not a cgroup name (letters, digits, '_', '.', '-', '@', ':')")
    if isinstance(parent, str) and not parent.strip("/"):
        return
    if not isinstance(parent, str) or not parent or not all(
            _NAME_RE.match(part) for part in parent.strip("/").split("/")):
        raise ConfigError("parent", parent, "is not a cgroup path like 'pyexec' or 'a/b'")


@dataclasses.dataclass(frozen=True)
class FreezeControl:
    """A freezer: the file, what to write to freeze and to thaw, and how to
    read the state (v2: cgroup.events' "frozen 1"; v1: freezer.state FROZEN)."""

    path: str
    frozen: str
    thawed: str
    is_frozen: Callable[[], bool]


class CgroupManager(abc.ABC):
    """One task's cgroup(s): create with limits, add processes, read stats, kill, remove.

    Building a manager touches nothing; ``create`` makes the directories and
    writes the limits (undone on failure); processes join by ``add_pid``, by
    the shim writing into ``procs_files``, or are born inside through
    ``open_dir_fd`` (v2); ``stats``, ``oom_killed`` and ``pids`` read;
    ``update`` changes limits; ``kill_all`` and ``destroy`` end it. A backend
    provides ``paths`` and the abstract hooks below.

    ``update`` follows Docker's ``update``: a field that is None in the new
    Resources keeps its current value (limits are changed, never removed).
    """

    #: Use cgroup.kill when the kernel has it; tests turn it off to exercise the
    #: freeze + SIGKILL fallback of kernels before 5.14.
    use_cgroup_kill = True

    def __init__(self, name: str, resources: Resources, parent: str = "pyexec") -> None:
        check_names(name, parent)
        if not isinstance(resources, Resources):
            raise ConfigError("resources", resources, "is not a Resources")
        self.name = name
        self.parent = parent.strip("/")
        self.resources = resources
        # The process that built the manager (the executor) must never join the
        # cgroup it may SIGKILL wholesale.
        self._owner_pid = os.getpid()
        self._oom_baseline = 0
        #: Device rules (devices.py) applied at create(); None leaves devices alone.
        self.device_rules: Optional[Sequence[DeviceRule]] = None
        # For cpu percent (since the previous sample) and the peak fallback.
        self._previous_cpu: Optional[Tuple[float, float]] = None  # (monotonic, usage_total_s)
        self._highest_usage: Optional[int] = None

    def parent_levels(self) -> List[str]:
        """The directories from a hierarchy's root down to the cgroup's parent."""
        return [part for part in self.parent.split("/") if part]

    # -- abstract API ---------------------------------------------------------
    @property
    @abc.abstractmethod
    def paths(self) -> Dict[str, str]:
        """Controller name -> absolute cgroup directory (v2: {"unified": path})."""

    @abc.abstractmethod
    def _check_controllers(self, res: Resources) -> None:
        """ConfigError for a set field whose controller this host or task lacks."""

    @abc.abstractmethod
    def _make_dirs(self, created: List[str]) -> None:
        """mkdir the task cgroup(s) and missing parents, appending each made
        directory to ``created``; retried by ``create`` when a sibling's
        destroy() removes a shared parent meanwhile (FileNotFoundError). An
        existing task cgroup is a FileExistsError (create removes it, calls again)."""

    @abc.abstractmethod
    def _check_files(self, res: Resources) -> None:
        """ConfigError for a set field whose control file is missing."""

    @abc.abstractmethod
    def _apply(self, res: Resources) -> None:
        """Write the set fields of ``res`` to the control files."""

    def _after_create(self) -> None:  # noqa: B027 (an optional hook: by default nothing to do)
        """Backend set-up beyond the limits (device rules, I/O accounting)."""

    def _before_update(self, res: Resources) -> None:  # noqa: B027 (an optional hook)
        """What an update needs before its checks (v2: controllers enabled down the path)."""

    @abc.abstractmethod
    def _sample(self) -> ResourceUsage:
        """Read the cgroup's counters (cpu.percent left None)."""

    @abc.abstractmethod
    def _oom_kill_count(self) -> Optional[int]:
        """The cgroup's cumulative OOM-kill counter, None when the kernel has none."""

    @abc.abstractmethod
    def _kill_round(self, deadline: float) -> None:
        """One round of killing every process in the cgroup (backend specific)."""

    def _freezer(self) -> Optional["FreezeControl"]:
        """The control file that freezes the cgroup, None when it has none."""
        return None

    # -- freezing (pause and resume) ---------------------------------------------------
    def freeze(self, timeout: float = 5.0) -> None:
        """Freeze every process of the cgroup and wait until the kernel says
        it is frozen; OSError(ENOTSUP) without a freezer, TimeoutError when a
        process does not stop within ``timeout`` seconds."""
        control = self._freezer()
        if control is None:
            raise OSError(errno.ENOTSUP, f"cgroup {self.name} has no freezer")
        write_text(control.path, control.frozen)
        deadline = time.monotonic() + timeout
        while not control.is_frozen():
            if time.monotonic() > deadline:
                raise TimeoutError(f"cgroup {self.name} did not freeze within {timeout}s")
            time.sleep(0.001)

    def thaw(self) -> None:
        """Let the processes of a frozen cgroup run again."""
        control = self._freezer()
        if control is not None:
            write_text(control.path, control.thawed)

    def frozen(self) -> bool:
        """Whether the cgroup is frozen now."""
        control = self._freezer()
        return control is not None and control.is_frozen()

    # -- creating and updating: the same sequence on both backends -------------
    def create(self) -> None:
        """Create the cgroup(s), cleaning a stale one of the same name first
        (its processes are killed), and apply limits.

        On any failure everything this call created is removed before the error
        propagates; a missing controller or control file is a ConfigError.
        """
        self._check_controllers(self.resources)
        created: List[str] = []
        try:
            try:
                self._make_dirs(created)
            except FileExistsError:
                # Found by the leaf's mkdir, not looked for (a stat per hierarchy) first.
                undo_created(created)
                created.clear()
                log.warning("cgroup %s/%s exists (stale from a crashed run?); killing its processes "
                            "and removing it", self.parent, self.name)
                self._remove_own_dirs()
                self._make_dirs(created)
            self._check_files(self.resources)
            self._apply(self.resources)
            self._after_create()
            # Made just now, never with a process in it: its OOM-kill count is 0.
            self._oom_baseline = 0
            self._started()
        except BaseException:
            undo_created(created)
            raise

    def update(self, resources: Resources) -> None:
        """Change limits of the live cgroup; fields that are None keep their
        current value (limits are changed, never removed)."""
        if not isinstance(resources, Resources):
            raise ConfigError("resources", resources, "is not a Resources")
        merged, to_apply = merge_update(self.resources, resources)
        self._check_controllers(to_apply)
        if not self.exists():
            raise FileNotFoundError(errno.ENOENT, f"cgroup {self.parent}/{self.name} does not exist")
        self._before_update(to_apply)
        self._check_files(to_apply)
        self._apply(to_apply)
        self.resources = merged

    def open_dir_fd(self) -> Optional[int]:
        """A directory fd of the cgroup for clone3(CLONE_INTO_CGROUP); None on v1."""
        return None

    def procs_files(self) -> List[str]:
        """The cgroup.procs files a new process is written into to join the
        cgroup (the shim writes them between the clone and the task's start).

        Each call is logged at DEBUG, with the files in the record's
        ``cgroup_procs_files`` attribute: the shim's writes are not Python's,
        so this record is what shows that a task was written into its cgroup
        rather than born there (clone3 CLONE_INTO_CGROUP, see open_dir_fd)."""
        files = [os.path.join(d, "cgroup.procs") for d in self._dirs()]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s/%s: a process joins through %s", self.parent, self.name, " ".join(files),
                      extra={"cgroup_procs_files": files})
        return files

    # -- shared implementation --------------------------------------------------
    def _dirs(self) -> List[str]:
        """The distinct cgroup directories (co-mounted v1 controllers share one)."""
        return sorted(set(self.paths.values()))

    def exists(self) -> bool:
        """True while any of the cgroup directories exists."""
        return any(os.path.isdir(d) for d in self._dirs())

    def add_pid(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup."""
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ConfigError("pid", pid, "is not a process id")
        if pid == self._owner_pid:
            raise ConfigError("pid", pid, "is the executor's own process; it must never join a task cgroup")
        # The same files the shim writes a new task's pid into (procs_files).
        files = self.procs_files()
        for path in files:
            write_text(path, str(pid))
        log.debug("added pid %d to %s/%s (%d cgroup.procs files)", pid, self.parent, self.name, len(files))

    def pids(self) -> List[int]:
        """Sorted pids of every process in the cgroup (and any sub-cgroup)."""
        return tree_pids(d for d in self._dirs() if os.path.isdir(d))

    def _started(self) -> None:
        """Called by create(): the cpu-percent interval of the first sample starts now."""
        self._previous_cpu = (time.monotonic(), 0.0)
        self._highest_usage = None

    def adopt(self) -> None:
        """Take over a cgroup another process created (reattach): its limits
        are not known here (``resources`` is empty) and the first sample has
        no cpu percent, since no earlier one exists."""
        self._previous_cpu = None
        self._highest_usage = None

    def stats(self) -> ResourceUsage:
        """A usage sample. ``cpu.percent`` covers the time since the previous
        sample (the first: since create()); ``memory.max_usage`` falls back to
        the highest usage sampled when the kernel keeps no peak (v2 before 5.19)."""
        if not self.exists():
            raise FileNotFoundError(errno.ENOENT, f"cgroup {self.parent}/{self.name} does not exist")
        now = time.monotonic()
        sample = self._sample()
        cpu, memory = sample.cpu, sample.memory
        if cpu.usage_total_s is not None and self._previous_cpu is not None:
            then, used = self._previous_cpu
            if now > then:
                cpu = dataclasses.replace(cpu, percent=max(0.0, (cpu.usage_total_s - used) / (now - then) * 100.0))
        if cpu.usage_total_s is not None:
            self._previous_cpu = (now, cpu.usage_total_s)
        if memory.usage is not None:
            self._highest_usage = max(self._highest_usage or 0, memory.usage)
            if memory.max_usage is None:
                memory = dataclasses.replace(memory, max_usage=self._highest_usage)
        return dataclasses.replace(sample, cpu=cpu, memory=memory, timestamp=time.time())

    def oom_killed(self, sample: Optional[ResourceUsage] = None) -> bool:
        """True when the OOM killer killed a process in this cgroup since
        create(); from ``sample`` (a stats() of this cgroup) when given, which
        holds the same counter, so it is not read twice."""
        count = sample.memory.oom_kills if sample is not None else self._oom_kill_count()
        if count is None:
            log.debug("%s: the kernel exposes no oom_kill counter; reporting no OOM kill", self.name)
            return False
        return count > self._oom_baseline

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup, repeating until it is empty.

        Raises ``TimeoutError`` naming the survivors when ``timeout`` seconds
        pass, and ``RuntimeError`` rather than kill the calling process itself.
        """
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return
            me = os.getpid()
            if me in pids:
                raise RuntimeError(f"cgroup {self.name} contains the calling process {me}; refusing to kill it")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cgroup {self._dirs()[0]}: processes {pids} survived SIGKILL for {timeout}s")
            self._kill_round(deadline)
            self._wait_empty(min(deadline, time.monotonic() + 0.2))

    def _wait_empty(self, until: float) -> None:
        delay = 0.002
        while self.pids() and time.monotonic() < until:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _remove_own_dirs(self) -> None:
        """kill_all and rmdir the task cgroup(s) (and sub-cgroups), leaving the parents."""
        self.kill_all()
        for directory in self._dirs():
            remove_tree(directory)

    def destroy(self, keep_parents: bool = False) -> None:
        """Remove the cgroup(s) -- when processes are left in them, after
        kill_all -- and, unless ``keep_parents``, the parents that became
        empty. Idempotent. Executors keep the parents: re-creating them for
        every task is most of a launch's cgroup work."""
        if not self._remove_empty_dirs() and self.exists():
            self._remove_own_dirs()
        if not keep_parents:
            self._remove_parents()

    def _remove_empty_dirs(self) -> bool:
        """rmdir each cgroup directory as it is, which is all a task that left
        no process or sub-cgroup needs (the kernel refuses to remove one that
        holds either); False at the first one in use: the caller kills and removes."""
        for directory in self._dirs():
            if not rmdir_unused(directory):
                return False
        return True

    @abc.abstractmethod
    def _remove_parents(self) -> None:
        """rmdir the parent cgroup(s) when they became empty."""

    def __enter__(self) -> "CgroupManager":
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.parent}/{self.name}>"


def fields_needing(resources: Resources, controllers: Mapping[str, str]) -> Dict[str, List[Tuple[str, object]]]:
    """Group the set fields of ``resources`` by controller (names mapped through
    ``controllers``, e.g. io -> blkio on v1)."""
    out: Dict[str, List[Tuple[str, object]]] = {}
    for field_name, value in set_fields(resources):
        ctl = controllers.get(FIELD_CONTROLLER[field_name], FIELD_CONTROLLER[field_name])
        out.setdefault(ctl, []).append((field_name, value))
    return out


def merge_update(old: Resources, new: Resources) -> Tuple[Resources, Resources]:
    """(all limits after an update, the limits to write now).

    Fields that are None in ``new`` keep their ``old`` value. Validating the
    merged set catches combinations like a new memory above the old
    memory_swap before anything is written. When memory changes while a
    memory_swap is in force, memory_swap is written again too (v2's
    memory.swap.max holds swap alone, so it depends on memory). ``cpus`` and
    ``cpu_quota_us`` are two spellings of the quota: a new one replaces the
    old other; a new cpu_period_us with ``cpus`` in force writes cpus again
    (its quota is cpus times the period).
    """
    changes = {f.name: getattr(new, f.name) for f in dataclasses.fields(new) if getattr(new, f.name) is not None}
    if new.cpus is not None:
        changes.setdefault("cpu_quota_us", None)
    if new.cpu_quota_us is not None:
        changes.setdefault("cpus", None)
    merged = dataclasses.replace(old, **changes)
    again: Dict[str, Any] = {}
    if new.memory is not None and new.memory_swap is None and merged.memory_swap is not None:
        again["memory_swap"] = merged.memory_swap
    if new.cpu_period_us is not None and new.cpus is None and merged.cpus is not None:
        again["cpus"] = merged.cpus
    to_apply = dataclasses.replace(new, **again) if again else new
    return merged, to_apply
