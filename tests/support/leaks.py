"""What a test left behind on the host: snapshots before, differences after.

Owns the machinery of conftest's ``no_leaks`` fixture (which only calls it):
a ``Snapshot`` of the host before a test, and ``find_leaks`` after it, which
reports

(a) descendant processes of the test process (zombies included: an unreaped
    child is a leak too);
(b) processes in a pid namespace other than ours that were not there before
    (a container whose init escaped us); one whose first ancestor in our
    namespace is outside our own tree and older than the test belongs to
    some other program on the host (say, a second test run): not counted;
(c) new lines in our /proc/self/mountinfo;
(d) new entries under the default state root /run/pyexec;
(e) new directories under /sys/fs/cgroup/*/ (depth <= 4) whose name contains
    "pyexec", and the task cgroups below them (the executors' kept parent,
    /sys/fs/cgroup/<hierarchy>/pyexec itself, is not a leak).

``settle`` polls ``find_leaks`` for a short grace so dying processes are not
counted; ``kill`` SIGKILLs what was reported, so one failure does not cascade
into the following tests. When nothing leaked a check costs one snapshot.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import psutil

STATE_ROOT = "/run/pyexec"
CGROUP_ROOT = "/sys/fs/cgroup"

ProcKey = Tuple[int, int]  # (pid, start time in clock ticks): immune to pid reuse


# -- processes ------------------------------------------------------------------------

def stat_fields(pid: int) -> Optional[List[str]]:
    """Fields of /proc/<pid>/stat from the state on (comm may hold spaces and ')')."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def pid_ns(pid: int) -> Optional[str]:
    """The pid namespace of ``pid`` (``pid:[4026531836]``), None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def all_pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def proc_key(pid: int) -> Optional[ProcKey]:
    fields = stat_fields(pid)
    return (pid, int(fields[19])) if fields else None


def describe(pid: int) -> str:
    """``pid 123 [sleeping] 'sleep 100'``, for a report."""
    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline()) or proc.name()
        return f"pid {pid} [{proc.status()}] {cmdline!r}"
    except psutil.Error:
        return f"pid {pid} (gone)"


def processes() -> Dict[ProcKey, str]:
    """Every process on the host: (pid, start time) -> its pid namespace."""
    out: Dict[ProcKey, str] = {}
    for pid in all_pids():
        ns = pid_ns(pid)
        key = proc_key(pid)
        if ns is not None and key is not None:
            out[key] = ns
    return out


def owned_by_someone_else(pid: int, our_ns: str, mine: Set[int], old: Set[ProcKey]) -> bool:
    """True when the first ancestor of ``pid`` in our pid ns is an older stranger.

    A container's processes hang below its init, whose parent is the program
    that launched it. When that launcher is neither this test process nor one
    of its descendants, existed before the test and is not pid 1 (the adopter
    of orphans), the container is another program's (a second test run, say).
    A young launcher that is not ours (the host-side monitor of another run's
    exec into its task) is looked through: its own ancestors decide.
    """
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        fields = stat_fields(pid)
        if fields is None:
            return False
        parent = int(fields[1])
        if parent <= 1:
            return False  # an orphan: nobody owns it, so it is ours to report
        if pid_ns(parent) == our_ns:
            if parent in mine or proc_key(parent) in old:
                return parent not in mine
            # A young stranger: an exec's monitor, started by another run
            # during this test (its parent decides).
        pid = parent
    return False


# -- cgroups, state directories, mounts -------------------------------------------------

def cgroup_dirs() -> FrozenSet[str]:
    """The pyexec cgroups on the host: directories naming pyexec and everything below them."""
    found: Set[str] = set()

    def walk(path: str, depth: int, below_pyexec: bool) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            inside = below_pyexec or "pyexec" in entry.name
            # The executors keep their parent cgroup (<hierarchy>/pyexec) on
            # purpose; the task cgroups below it are what must not remain.
            if inside and not (depth == 1 and entry.name == "pyexec"):
                found.add(entry.path)
            if depth < 4:
                walk(entry.path, depth + 1, inside)

    try:
        hierarchies = [e.path for e in os.scandir(CGROUP_ROOT) if e.is_dir(follow_symlinks=False)]
    except OSError:
        hierarchies = []
    for hierarchy in hierarchies:
        # On cgroup v2 the tops are cgroups: /sys/fs/cgroup/pyexec is the kept
        # parent itself, and the task cgroups right below it count.
        walk(hierarchy, 1, os.path.basename(hierarchy) == "pyexec")
    return frozenset(found)


def state_entries() -> FrozenSet[str]:
    """The names under the default state root (a task's state directory each)."""
    try:
        return frozenset(os.listdir(STATE_ROOT))
    except FileNotFoundError:
        return frozenset()


def mount_lines() -> FrozenSet[str]:
    with open("/proc/self/mountinfo") as f:
        return frozenset(f.read().splitlines())


def kept_parents() -> FrozenSet[str]:
    """The executors' kept parent cgroups (<hierarchy>/pyexec) that exist now."""
    try:
        from pyexec.cgroups import parent_dirs
        return frozenset(d for d in parent_dirs() if os.path.isdir(d))
    except (ImportError, OSError):
        return frozenset()


def force_remove_cgroup(path: str) -> None:
    """Remove the cgroup ``path`` and everything below it, whatever runs there.

    For a test's own leftovers (conftest's ``cg``): SIGKILL every process in
    it, thaw frozen v1 freezers (a frozen process does not die), then remove
    the directories deepest first.
    """
    for dirpath, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids = f.read().split()
        except FileNotFoundError:
            continue
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for freezer in (os.path.join(d, "freezer.state") for d, _s, _f in os.walk(path)):
        if os.path.exists(freezer):
            with open(freezer, "w") as f:
                f.write("THAWED")
    time.sleep(0.2)
    for dirpath in sorted((d for d, _s, _f in os.walk(path)), key=len, reverse=True):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


# -- before and after -------------------------------------------------------------------

@dataclass
class Snapshot:
    """The host as a test found it."""

    our_ns: str                                  # the test process's pid namespace
    processes: Dict[ProcKey, str]
    mounts: FrozenSet[str]
    state: FrozenSet[str]
    cgroups: FrozenSet[str]


def snapshot() -> Snapshot:
    """The host now, to compare with after the test."""
    return Snapshot(pid_ns(os.getpid()) or "", processes(), mount_lines(), state_entries(), cgroup_dirs())


@dataclass
class Leaks:
    """What outlived a test: a line per leak, and the pids among them to kill."""

    lines: List[str] = field(default_factory=list)
    pids: List[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def report(self) -> str:
        return ("the test leaked:\n  " + "\n  ".join(self.lines)
                + "\n(another pyexec run on this host at the same time shows up here too)")


def find_leaks(before: Snapshot) -> Leaks:
    """What is on the host now that was not in ``before`` and is ours."""
    leaks = Leaks()
    me = psutil.Process()
    try:
        descendants = me.children(recursive=True)
    except psutil.Error:
        descendants = []
    mine = {os.getpid()} | {p.pid for p in descendants}
    for proc in descendants:
        leaks.lines.append(f"descendant process {describe(proc.pid)}")
        leaks.pids.append(proc.pid)
    old = set(before.processes)
    for key, ns in processes().items():
        pid = key[0]
        if (ns == before.our_ns or key in old or pid in mine
                or owned_by_someone_else(pid, before.our_ns, mine, old)):
            continue
        leaks.lines.append(f"process in another pid namespace ({ns}): {describe(pid)}")
        leaks.pids.append(pid)
    for line in sorted(mount_lines() - before.mounts):
        leaks.lines.append(f"mount: {line}")
    for name in sorted(state_entries() - before.state):
        leaks.lines.append(f"state directory: {os.path.join(STATE_ROOT, name)}")
    for path in sorted(cgroup_dirs() - before.cgroups):
        leaks.lines.append(f"cgroup: {path}")
    return leaks


def settle(before: Snapshot, grace: float) -> Leaks:
    """``find_leaks``, polled for up to ``grace`` seconds until nothing is left (dying processes)."""
    deadline = time.monotonic() + grace
    while True:
        leaks = find_leaks(before)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(0.05)


def kill(pids: List[int]) -> None:
    """SIGKILL leaked processes and reap the ones that are our own children."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 1.0
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # not our child (or already reaped)
            if done:
                break
            time.sleep(0.01)
