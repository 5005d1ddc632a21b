"""The resource-usage records every executor reports: data only, no I/O.

``ResourceUsage`` is what ``Executor.stats()`` returns, what
``Executor.stats_stream()`` yields and what ``ExitResult.usage`` holds (the
last sample, taken after the task's main process exited and before its
cgroup was removed). Its fields are the same on cgroup v1, cgroup v2 and the
process-tree collector; runc's stats struct is the model.

A value the host cannot provide (controller missing, kernel too old, swap not
accounted, no cgroup at all) is ``None``: never a 0 pretending to be a value.
Memory is in bytes, times in seconds (floats), percentages of one core.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

__all__ = ["MemoryUsage", "CpuUsage", "PidsUsage", "IoUsage", "ProcessUsage", "ResourceUsage"]


@dataclass(frozen=True)
class MemoryUsage:
    """Memory of the whole task, bytes."""

    #: Current usage (v1 memory.usage_in_bytes; v2 memory.current; tree: sum of rss).
    usage: Optional[int] = None
    #: Anonymous memory (v1 memory.stat total_rss; v2 memory.stat anon; tree: sum of rss).
    rss: Optional[int] = None
    #: Page cache (v1 total_cache; v2 file).
    cache: Optional[int] = None
    #: Swap in use (v1 total_swap with swap accounting; v2 memory.swap.current,
    #: CONFIG_MEMCG_SWAP; tree: sum of /proc/<pid>/status VmSwap).
    swap: Optional[int] = None
    #: Mapped file pages (v1 total_mapped_file; v2 file_mapped).
    mapped_file: Optional[int] = None
    #: Kernel memory (v1 memory.kmem.usage_in_bytes; v2 memory.stat kernel,
    #: since kernel 5.18, else kernel_stack + pagetables + percpu + sock + slab).
    kernel: Optional[int] = None
    #: Peak usage (v1 memory.max_usage_in_bytes; v2 memory.peak, since kernel
    #: 5.19, else the highest usage sampled so far; tree: highest sample).
    max_usage: Optional[int] = None
    #: Hard limit; None = unlimited or not known.
    limit: Optional[int] = None
    #: Processes the kernel's OOM killer killed in the task (v1 memory.oom_control
    #: oom_kill and v2 memory.events oom_kill, both since kernel 4.13).
    oom_kills: Optional[int] = None


@dataclass(frozen=True)
class CpuUsage:
    """CPU time of the whole task (every process it ever had), seconds."""

    #: Total CPU time (v1 cpuacct.usage; v2 cpu.stat usage_usec).
    usage_total_s: Optional[float] = None
    #: User time (v1 cpuacct.usage_user, or cpuacct.stat in USER_HZ ticks on
    #: kernels before 4.6; v2 user_usec).
    user_s: Optional[float] = None
    #: System time (as user_s, with usage_sys / system_usec).
    system_s: Optional[float] = None
    #: Average use over the interval since the previous sample of the same
    #: executor (the first sample: since the task started), in percent of one
    #: core: 150.0 is one and a half cores busy.
    percent: Optional[float] = None
    #: CFS periods in which the task was throttled (cpu.stat nr_throttled; on v2
    #: only with the cpu controller enabled).
    throttled_periods: Optional[int] = None
    #: Time spent throttled (v1 cpu.stat throttled_time; v2 throttled_usec).
    throttled_time_s: Optional[float] = None


@dataclass(frozen=True)
class PidsUsage:
    """How many the task runs: a cgroup's pids.current counts tasks (threads
    included, as pids.max limits them); the process-tree collector counts processes."""

    current: Optional[int] = None
    #: pids.max; None = no limit.
    limit: Optional[int] = None


@dataclass(frozen=True)
class IoUsage:
    """Block I/O that reached a device, bytes (page-cache hits and tmpfs are not I/O).

    v1: blkio.throttle.io_service_bytes_recursive; v2: io.stat rbytes/wbytes
    (io controller enabled); tree: /proc/<pid>/io read_bytes/write_bytes."""

    read_bytes: Optional[int] = None
    write_bytes: Optional[int] = None


@dataclass(frozen=True)
class ProcessUsage:
    """One process of the task, from the process-tree collector."""

    pid: int
    rss: Optional[int] = None          # bytes
    swap: Optional[int] = None         # bytes
    user_s: Optional[float] = None
    system_s: Optional[float] = None
    percent: Optional[float] = None    # of one core, since the collector's previous sample


@dataclass(frozen=True)
class ResourceUsage:
    """One sample of a task's resource usage."""

    memory: MemoryUsage = field(default_factory=MemoryUsage)
    cpu: CpuUsage = field(default_factory=CpuUsage)
    pids: PidsUsage = field(default_factory=PidsUsage)
    io: IoUsage = field(default_factory=IoUsage)
    #: Where the numbers come from: "cgroup v1", "cgroup v2", "process tree" or "rusage".
    source: str = ""
    #: When the sample was taken, seconds since the epoch.
    timestamp: float = 0.0
    #: Per-process figures (pid -> ProcessUsage) when a process-tree collector
    #: ran; empty otherwise.
    processes: Mapping[int, ProcessUsage] = field(default_factory=dict)
