"""``PidCollector``: resource usage of a process tree, read with psutil.

This module owns the process-tree collector used where there is no task
cgroup to read (the universal executor for non-root callers, the portable
executor, Windows included): finding the processes of a task (its root, the
root's descendants and any ``extra_pids``), sampling their memory, CPU and I/O
into a ``ResourceUsage``, and signalling all of them (``kill_tree``).

It is best effort where a cgroup is exact:

* CPU time is per live process ``user + children_user`` (and the same for
  system): ``children_*`` hold only children that process reaped, so a live
  child is never counted twice; Linux moves a reaped child's I/O counters to
  its parent the same way. A process that dies and is reaped outside the tree
  takes its CPU time and I/O with it: the sums can go down between samples.
* Memory sums rss over processes, so pages shared by several of them (after a
  fork, shared libraries) count once per process.
* A process forked and reparented away between two scans (a double fork
  within the cache time) is not seen; ``extra_pids`` can name such processes
  (say, the members of the task's process group or session).
* The pid list is cached for ``cache_seconds``: scanning for descendants reads
  every process of the host, so ``sample()`` only re-reads the known pids and
  rescans when the cache has expired. A new child is seen after at most
  ``cache_seconds``.
* When the root has exited its descendants are reparented away (to a
  subreaper or init) and a walk from it finds nothing, so every pid once found
  stays a starting point of the following scans for as long as it lives.

Swap (``/proc/<pid>/status`` VmSwap) is read on Linux only and I/O where
psutil has ``io_counters`` (not macOS); elsewhere they are None, never 0.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import psutil

from ..errors import ConfigError
from .usage import CpuUsage, IoUsage, MemoryUsage, PidsUsage, ProcessUsage, ResourceUsage

__all__ = ["PidCollector"]

log = logging.getLogger(__name__)

_LINUX = sys.platform.startswith("linux")
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def _vm_swap(pid: int) -> Optional[int]:
    """Swap of one process in bytes from /proc/<pid>/status (cheap, unlike smaps)."""
    if not _LINUX:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSwap:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return None  # gone, or a kernel thread (no VmSwap line)


def _running(proc: psutil.Process) -> bool:
    """Exists and is not a zombie (a zombie is skipped entirely)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _alive(proc: psutil.Process) -> bool:
    """As ``_running``, and still the process we first saw (not a reused pid)."""
    try:
        return proc.is_running() and _running(proc)
    except psutil.Error:
        return False


class PidCollector:
    """Usage of the process tree below ``root_pid`` (see the module docstring).

    ``cache_seconds`` is how long a scan's pid list is reused (0: rescan on
    every call); ``extra_pids`` is called on each scan for more pids to
    include with their descendants (the caller and its ancestors are ignored
    there; a failing callable is logged). The caller's own process is never
    part of the tree unless it is the root, and ``kill_tree`` never signals it.
    With ``include_root=False`` the root is only where the walk starts: it is
    neither sampled nor signalled (the universal executor's init, a copy of
    the caller whose rss would count the caller's pages). Thread-safe.
    """

    def __init__(self, root_pid: int, *, cache_seconds: float = 5.0,
                 extra_pids: Optional[Callable[[], Iterable[int]]] = None,
                 include_root: bool = True) -> None:
        if isinstance(root_pid, bool) or not isinstance(root_pid, int) or root_pid <= 0:
            raise ConfigError("root_pid", root_pid, "must be a positive integer")
        if (isinstance(cache_seconds, bool) or not isinstance(cache_seconds, (int, float))
                or not cache_seconds >= 0):
            raise ConfigError("cache_seconds", cache_seconds, "must be a number >= 0")
        if extra_pids is not None and not callable(extra_pids):
            raise ConfigError("extra_pids", extra_pids, "must be a callable returning pids")
        self.root_pid = root_pid
        self.include_root = bool(include_root)
        self.cache_seconds = float(cache_seconds)
        self._extra_pids = extra_pids
        self._lock = threading.RLock()
        self._root: Optional[psutil.Process] = None
        try:
            self._root = psutil.Process(root_pid)
        except psutil.Error:
            log.debug("root pid %d does not exist: the tree is empty", root_pid)
        self._procs: Dict[int, psutil.Process] = {}
        self._scanned_at: Optional[float] = None  # time.monotonic() of the last scan
        # pid -> (create_time, cpu seconds, monotonic time) of the previous sample
        self._prev: Dict[int, Tuple[float, float, float]] = {}
        self._prev_total: Optional[Tuple[float, float]] = None  # (cpu seconds, monotonic)
        self._max_usage: Optional[int] = None

    # -- the pid list ---------------------------------------------------------

    def pids(self) -> List[int]:
        """Sorted pids of the tree: the cached list (minus the dead) or a new scan."""
        with self._lock:
            if (self._scanned_at is None
                    or time.monotonic() - self._scanned_at >= self.cache_seconds):
                return self.refresh()
            for pid, proc in list(self._procs.items()):
                if not _alive(proc):
                    del self._procs[pid]
            return sorted(self._procs)

    def refresh(self) -> List[int]:
        """Rescan the tree now and return its pids.

        Starting points: the root, every pid known from before that still
        lives, and ``extra_pids``. psutil's ``children()`` reads the parent of
        every process of the host, once per starting point not already reached
        from an earlier one (usually once: the root reaches them all).
        """
        with self._lock:
            seeds: List[psutil.Process] = []
            if self._root is not None and _alive(self._root):
                seeds.append(self._root)
            seeds.extend(p for p in self._procs.values() if _alive(p))
            seeds.extend(self._extra())
            me = os.getpid() if self.root_pid != os.getpid() else 0
            skip = {me} if self.include_root else {me, self.root_pid}
            found: Dict[int, psutil.Process] = {}
            for seed in seeds:
                if seed.pid in found:
                    continue  # already reached from an earlier seed: no second walk
                try:
                    members = [seed] + seed.children(recursive=True)
                except psutil.Error:
                    continue
                for proc in members:
                    if proc.pid not in skip and proc.pid not in found and _running(proc):
                        found[proc.pid] = proc
            self._procs = found
            self._scanned_at = time.monotonic()
            return sorted(found)

    def _extra(self) -> List[psutil.Process]:
        if self._extra_pids is None:
            return []
        try:
            pids = list(self._extra_pids())
        except Exception:  # a failing hook must not break stats; say so
            log.warning("extra_pids of the tree of pid %d failed", self.root_pid, exc_info=True)
            return []
        # The caller and its ancestors (a process group or session lookup may
        # name them) are never part of a task it launched: walking from them
        # would take in the caller's other children, and kill_tree kill them.
        try:
            banned = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
        except psutil.Error:
            banned = {os.getpid()}
        out = []
        for pid in pids:
            if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0 or pid in banned:
                continue
            try:
                out.append(psutil.Process(pid))
            except psutil.Error:
                pass
        return out

    # -- sampling -------------------------------------------------------------

    def sample(self) -> ResourceUsage:
        """One ``ResourceUsage`` of the live processes of the tree.

        Sums are over the processes alive now (see the module docstring for what
        that misses). Total percent is the change of the summed CPU time over the
        wall time since the previous sample, at least 0 (a process first seen
        after a rescan brings all its time into that interval). With no live
        process left: usage 0, CPU times None (the dead took theirs), percent 0.
        """
        with self._lock:
            self.pids()
            now = time.monotonic()
            wall = time.time()
            per: Dict[int, ProcessUsage] = {}
            prev: Dict[int, Tuple[float, float, float]] = {}
            rss = 0
            user = system = 0.0
            swap: Optional[int] = None
            read: Optional[int] = None  # I/O bytes
            written: Optional[int] = None
            first_start: Optional[float] = None
            for pid, proc in sorted(self._procs.items()):
                try:
                    with proc.oneshot():
                        if proc.status() == psutil.STATUS_ZOMBIE:
                            continue
                        created = proc.create_time()
                        times = proc.cpu_times()
                        mem = proc.memory_info().rss
                        io = self._io(proc)
                except _GONE:
                    continue
                p_user = times.user + getattr(times, "children_user", 0.0)
                p_system = times.system + getattr(times, "children_system", 0.0)
                cpu = p_user + p_system
                last = self._prev.get(pid)
                if last is not None and last[0] == created and now > last[2]:
                    percent = (cpu - last[1]) / (now - last[2]) * 100.0
                else:  # first sample of this process: since it started
                    percent = cpu / max(wall - created, 1e-3) * 100.0
                prev[pid] = (created, cpu, now)
                p_swap = _vm_swap(pid)
                per[pid] = ProcessUsage(pid=pid, rss=mem, swap=p_swap, user_s=p_user,
                                        system_s=p_system, percent=max(percent, 0.0))
                rss += mem
                user += p_user
                system += p_system
                first_start = created if first_start is None else min(first_start, created)
                if p_swap is not None:
                    swap = (swap or 0) + p_swap
                if io is not None:
                    read = (read or 0) + io[0]
                    written = (written or 0) + io[1]
            self._prev = prev
            total = user + system
            if self._prev_total is not None and now > self._prev_total[1]:
                percent = (total - self._prev_total[0]) / (now - self._prev_total[1]) * 100.0
            elif first_start is not None:
                percent = total / max(wall - first_start, 1e-3) * 100.0
            else:
                percent = 0.0
            self._prev_total = (total, now)
            self._max_usage = rss if self._max_usage is None else max(self._max_usage, rss)
            have = bool(per)
            return ResourceUsage(
                source="process tree",
                timestamp=wall,
                processes=per,
                memory=MemoryUsage(usage=rss, rss=rss, swap=swap, max_usage=self._max_usage),
                cpu=CpuUsage(user_s=user if have else None, system_s=system if have else None,
                             usage_total_s=total if have else None, percent=max(percent, 0.0)),
                pids=PidsUsage(current=len(per), limit=None),
                io=IoUsage(read_bytes=read, write_bytes=written),
            )

    @staticmethod
    def _io(proc: psutil.Process) -> Optional[Tuple[int, int]]:
        """(read_bytes, write_bytes) of one process, or None where not available."""
        if not hasattr(proc, "io_counters"):
            return None  # macOS and some BSDs
        try:
            counters = proc.io_counters()
        except (psutil.AccessDenied, NotImplementedError, OSError):
            return None  # e.g. another user's process on Linux (ptrace check)
        return counters.read_bytes, counters.write_bytes

    # -- signals --------------------------------------------------------------

    def kill_tree(self, sig: int) -> List[int]:
        """Rescan and send ``sig`` to every process of the tree; return the pids signalled.

        Processes that are gone (or whose pid was reused) are skipped. Best
        effort: a process forked after the scan by a parent that is then
        killed is reparented away and missed.
        """
        with self._lock:
            signalled = []
            for pid in self.refresh():
                proc = self._procs.get(pid)
                if proc is None or pid == os.getpid():
                    continue
                try:
                    proc.send_signal(sig)  # checks the pid still names the same process
                except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess):
                    continue
                except psutil.AccessDenied:
                    log.warning("no permission to signal pid %d of the tree of %d", pid, self.root_pid)
                    continue
                signalled.append(pid)
            return signalled
