"""The backend-neutral part of the cgroup manager.

This module owns:

* ``CgroupManager`` -- the interface the executor calls, plus the logic that is
  the same on v1 and v2 (name checks, the context manager, pid listing, the
  parts of a stats sample that need the previous one -- cpu percent and peak
  memory --, removing a cgroup tree with EBUSY retries);
* the small file helpers every controller module uses (read an int, parse a
  flat-keyed file like ``memory.stat``, write a limit and turn the kernel's
  refusal into a ``ConfigError``, require that a control file exists);
* ``cgroup_mounts`` (re-exported from mounts.py, which owns reading
  ``/proc/self/mountinfo``).

Nothing here knows controller file names except through its callers.
"""
from __future__ import annotations

import abc
import dataclasses
import errno
import logging
import os
import re
import signal
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..config import Resources
from ..errors import ConfigError
from ..stats.usage import ResourceUsage
from .mounts import MountEntry, cgroup_mounts, read_all

if TYPE_CHECKING:
    from .devices import DeviceRule

__all__ = [
    "CgroupManager", "MountEntry", "cgroup_mounts", "FIELD_CONTROLLER",
    "read_text", "write_text", "read_int", "read_int_or_max", "read_keyed", "parse_keyed",
    "write_value", "write_values", "require_file", "tree_pids", "remove_tree", "set_fields", "merge_update",
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
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")

# errnos with which the kernel refuses a *value* (as opposed to refusing us).
_VALUE_ERRNOS = frozenset({errno.EINVAL, errno.EBUSY, errno.ERANGE, errno.EOVERFLOW, errno.ENOSPC})


# --------------------------------------------------------------------------- files

def read_text(path: str) -> str:
    """The content of a control file, stripped. Plain os.open/os.read: a
    buffered file object costs more syscalls (fstat, lseek, ioctl) than the
    read itself, and a launch reads and writes dozens of these files."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_all(fd).decode().strip()
    finally:
        os.close(fd)


def write_text(path: str, data: str) -> None:
    """One write(2) of ``data`` to a control file (the kernel takes each write whole)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read_int(path: str) -> Optional[int]:
    """An integer control file; None when the file does not exist."""
    try:
        return int(read_text(path))
    except FileNotFoundError:
        return None


def read_int_or_max(path: str) -> Optional[int]:
    """A file holding an int or ``max``; ``max`` and a missing file give None."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        return None
    return None if text == "max" else int(text)


def parse_keyed(text: str) -> Dict[str, int]:
    """Parse a flat-keyed file (``key value`` per line, like memory.stat, cpu.stat,
    memory.events, memory.oom_control). Lines whose value is not an int are skipped."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return out


def read_keyed(path: str) -> Optional[Dict[str, int]]:
    """``parse_keyed`` of a file; None when the file does not exist."""
    try:
        return parse_keyed(read_text(path))
    except FileNotFoundError:
        return None


def write_value(path: str, text: Union[str, int], field_name: str, value: object) -> None:
    """Write ``text`` to a control file for the Resources field ``field_name``.

    When the kernel refuses the value (EINVAL, EBUSY, ERANGE, ...) the error is a
    ``ConfigError`` naming the field, the file and the kernel's reason; any
    other OSError (permissions, a vanished cgroup) propagates unchanged.
    """
    write_values(path, [(text, field_name, value)])


def write_values(path: str, items: Sequence[Tuple[Union[str, int], str, object]]) -> None:
    """``write_value`` of each (text, field_name, value) in turn through one open fd:
    each write(2) is a request of its own (devices.allow takes one rule per write)."""
    if not items:
        return
    text, field_name, value = items[0]  # the write being made, for the error
    debug = log.isEnabledFor(logging.DEBUG)  # asked once, not per item
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for text, field_name, value in items:
                if debug:
                    log.debug("write %r > %s", str(text), path)
                os.write(fd, str(text).encode())
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in _VALUE_ERRNOS:
            data = str(text)
            raise ConfigError(field_name, value,
                              f"was rejected by the kernel: writing {data!r} to {path}: "
                              f"{os.strerror(e.errno)}") from e
        raise


def require_file(directory: str, filename: str, field_name: str, value: object,
                 controller: str, hint: str = "") -> str:
    """The path of ``directory/filename``; a ``ConfigError`` naming the controller
    and the file when it does not exist (a limit is never silently dropped)."""
    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        extra = f" ({hint})" if hint else ""
        raise ConfigError(field_name, value,
                          f"needs {filename} of the '{controller}' cgroup controller, "
                          f"which this host does not provide in {directory}{extra}")
    return path


def set_fields(resources: Resources) -> List[Tuple[str, object]]:
    """(field, value) of every limit set in ``resources``, in declaration order."""
    return [(name, getattr(resources, name)) for name in FIELD_CONTROLLER
            if getattr(resources, name) is not None]


# --------------------------------------------------------------------------- processes

def _procs(directory: str) -> List[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def tree_pids(directories: Iterable[str]) -> List[int]:
    """Sorted unique pids in the cgroups ``directories`` and all their descendants."""
    found = set()
    for top in directories:
        for dirpath, _dirs, _files in os.walk(top):
            found.update(_procs(dirpath))
    return sorted(found)


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each pid; pids that are already gone are ignored."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


FREEZE_WAIT = 1.0  # seconds to wait for a cgroup to freeze before killing anyway


def freeze_kill_thaw(freeze_file: str, freeze: str, thaw: str, is_frozen: Callable[[], bool],
                     pids: Callable[[], List[int]], deadline: float) -> None:
    """One kill round under the freezer: freeze (so nothing forks between
    listing and killing), SIGKILL every pid, thaw (SIGKILLed tasks die once
    thawed). Both v1's freezer.state and v2's cgroup.freeze work this way."""
    try:
        with open(freeze_file, "w") as f:
            f.write(freeze)
        until = min(deadline, time.monotonic() + FREEZE_WAIT)
        while not is_frozen():
            if time.monotonic() > until:
                log.warning("%s did not freeze in time; killing anyway", os.path.dirname(freeze_file))
                break
            time.sleep(0.002)
        kill_pids(pids())
    finally:
        try:
            with open(freeze_file, "w") as f:
                f.write(thaw)
        except FileNotFoundError:
            pass


def remove_tree(directory: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup and its descendants, deepest first, retrying EBUSY (tasks
    that were just killed leave the cgroup asynchronously). Gone already is fine."""
    if not os.path.isdir(directory):
        return
    subdirs = [dirpath for dirpath, _d, _f in os.walk(directory)]
    deadline = time.monotonic() + timeout
    for path in sorted(subdirs, key=len, reverse=True):
        delay = 0.005
        while True:
            try:
                os.rmdir(path)
                log.debug("removed cgroup %s", path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)


def retry_vanished_parent(make: Callable[[], None], attempts: int = 5) -> None:
    """Call ``make``; again when it fails with FileNotFoundError, because a
    sibling task's destroy() removed an empty shared parent between our mkdirs."""
    for attempt in range(attempts):
        try:
            make()
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def undo_created(created: Sequence[str]) -> None:
    """rmdir the directories a failed create() made, newest first; never raises."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                log.warning("could not remove %s after a failed create: %s", path, e)


def remove_empty_parents(directory: str, stop: str) -> None:
    """rmdir ``directory`` and its ancestors up to (not including) ``stop`` while
    they are empty. Busy or non-empty parents (siblings still alive) stay."""
    stop = os.path.normpath(stop)
    path = os.path.normpath(directory)
    while path != stop and path.startswith(stop + os.sep):
        if not rmdir_unused(path):
            return
        path = os.path.dirname(path)


def rmdir_unused(path: str) -> bool:
    """rmdir the cgroup ``path``: True when it is gone (now or before), False
    when the kernel says it is in use (processes or sub-cgroups)."""
    try:
        os.rmdir(path)
        log.debug("removed cgroup %s", path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def check_names(name: str, parent: str) -> None:
    """Cgroup ``name`` is one path component; ``parent`` one or more ('a/b')."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError("name", name, "is not a cgroup name (letters, digits, '_', '.', '-', '@', ':')")
    if not isinstance(parent, str) or not parent or not all(
            _NAME_RE.match(part) for part in parent.strip("/").split("/")):
        raise ConfigError("parent", parent, "is not a cgroup path like 'pyexec' or 'a/b'")


# --------------------------------------------------------------------------- interface

class CgroupManager(abc.ABC):
    """One task's cgroup(s): create with limits, add processes, read stats, kill, remove.

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
        self.device_rules: Optional[Sequence["DeviceRule"]] = None
        # For cpu percent (since the previous sample) and the peak fallback.
        self._previous_cpu: Optional[Tuple[float, float]] = None  # (monotonic, usage_total_s)
        self._highest_usage: Optional[int] = None

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

    def _after_create(self) -> None:
        """Backend set-up beyond the limits (device rules, I/O accounting)."""

    def _before_update(self, res: Resources) -> None:
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
        cgroup (the shim writes them between the clone and the task's start)."""
        return [os.path.join(d, "cgroup.procs") for d in self._dirs()]

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
    memory.swap.max holds swap alone, so it depends on memory).
    """
    changes = {f.name: getattr(new, f.name) for f in dataclasses.fields(new) if getattr(new, f.name) is not None}
    merged = dataclasses.replace(old, **changes)
    to_apply = new
    if new.memory is not None and new.memory_swap is None and merged.memory_swap is not None:
        to_apply = dataclasses.replace(new, memory_swap=merged.memory_swap)
    return merged, to_apply
