"""The memory controller: limits (memory, memory_reservation, memory_swap), the
OOM-kill counter and memory statistics, for cgroup v1 and v2.

v1 files: memory.limit_in_bytes, memory.soft_limit_in_bytes,
memory.memsw.limit_in_bytes (memory + swap, needs swap accounting),
memory.oom_control (oom_kill since 4.13; writing 1 sets oom_kill_disable),
memory.swappiness, memory.kmem.tcp.limit_in_bytes, memory.stat.
v2 files: memory.max, memory.low, memory.swap.max (swap only, so memory_swap -
memory), memory.events, memory.peak (5.19), memory.stat. memory.oom.group
is left at 0 (see V2Manager.create). v2 has no file for memory_swappiness,
memory_kernel_tcp or memory_oom_kill_disable (v2.py refuses them).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from ..config import Resources
from ..errors import ConfigError
from ..limits import size_of
from ..stats.usage import MemoryUsage
from .fscommon import read_int, read_int_or_max, read_keyed, require_file, write_value

__all__ = [
    "check_memory_v1", "set_memory_v1", "stat_memory_v1", "oom_kills_v1",
    "check_memory_v2", "set_memory_v2", "stat_memory_v2", "oom_kills_v2",
    "swap_max_v2",
]

# v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (LONG_MAX rounded down to a page).
_V1_UNLIMITED = 1 << 62

_SWAP_HINT = "swap accounting is off: boot with swapaccount=1 / CONFIG_MEMCG_SWAP"


def _needs_memory(field_name: str, value: object) -> ConfigError:
    return ConfigError(field_name, value, "needs memory to be set too (memory_swap is memory + swap)")


# --------------------------------------------------------------------------- v1

def check_memory_v1(path: str, res: Resources) -> None:
    """Raise ConfigError for a memory field whose v1 control file is missing."""
    if res.memory is not None:
        require_file(path, "memory.limit_in_bytes", "memory", res.memory, "memory")
    if res.memory_reservation is not None:
        require_file(path, "memory.soft_limit_in_bytes", "memory_reservation",
                     res.memory_reservation, "memory")
    if res.memory_swap is not None:
        require_file(path, "memory.memsw.limit_in_bytes", "memory_swap", res.memory_swap,
                     "memory", _SWAP_HINT)
        if res.memory_swap != -1 and res.memory is None:
            current = read_int(os.path.join(path, "memory.limit_in_bytes"))
            if current is None or current >= _V1_UNLIMITED:
                raise _needs_memory("memory_swap", res.memory_swap)
    for filename, name in _V1_ONLY_FILES:
        if getattr(res, name) is not None:
            require_file(path, filename, name, getattr(res, name), "memory")


_V1_ONLY_FILES = (("memory.swappiness", "memory_swappiness"),
                  ("memory.kmem.tcp.limit_in_bytes", "memory_kernel_tcp"),
                  ("memory.oom_control", "memory_oom_kill_disable"))


def set_memory_v1(path: str, res: Resources) -> None:
    """Write the memory limits of ``res`` (None fields untouched).

    memory.memsw.limit_in_bytes must always be >= memory.limit_in_bytes, so the
    two are written in the order that keeps that true at every step.
    """
    limit = os.path.join(path, "memory.limit_in_bytes")
    memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
    if res.memory_swap is None:
        if res.memory is not None:
            write_value(limit, res.memory, "memory", res.memory)
    elif res.memory_swap == -1:
        write_value(memsw, -1, "memory_swap", -1)
        if res.memory is not None:
            write_value(limit, res.memory, "memory", res.memory)
    else:
        current_memsw = read_int(memsw) or 0
        memory = size_of(res.memory)
        if memory is not None and memory > current_memsw:
            write_value(memsw, res.memory_swap, "memory_swap", res.memory_swap)
            write_value(limit, memory, "memory", res.memory)
        else:
            if res.memory is not None:
                write_value(limit, res.memory, "memory", res.memory)
            write_value(memsw, res.memory_swap, "memory_swap", res.memory_swap)
    if res.memory_reservation is not None:
        write_value(os.path.join(path, "memory.soft_limit_in_bytes"), res.memory_reservation,
                    "memory_reservation", res.memory_reservation)
    if res.memory_swappiness is not None:
        write_value(os.path.join(path, "memory.swappiness"), res.memory_swappiness,
                    "memory_swappiness", res.memory_swappiness)
    if res.memory_kernel_tcp is not None:
        write_value(os.path.join(path, "memory.kmem.tcp.limit_in_bytes"), res.memory_kernel_tcp,
                    "memory_kernel_tcp", res.memory_kernel_tcp)
    if res.memory_oom_kill_disable is not None:
        write_value(os.path.join(path, "memory.oom_control"), int(res.memory_oom_kill_disable),
                    "memory_oom_kill_disable", res.memory_oom_kill_disable)


def oom_kills_v1(path: str) -> Optional[int]:
    """memory.oom_control's oom_kill counter (kernel 4.13+); None without it."""
    control = read_keyed(os.path.join(path, "memory.oom_control"))
    return None if control is None else control.get("oom_kill")


def stat_memory_v1(path: Optional[str]) -> MemoryUsage:
    """Memory usage of a v1 memory cgroup (all None without one: every read
    of a missing file is None, so the directory is not looked for first)."""
    if path is None:
        return MemoryUsage()
    stat = read_keyed(os.path.join(path, "memory.stat")) or {}
    limit = read_int(os.path.join(path, "memory.limit_in_bytes"))

    def pick(name: str) -> Optional[int]:
        # total_* include descendants; plain names are this cgroup only.
        return stat.get("total_" + name, stat.get(name))

    return MemoryUsage(
        usage=read_int(os.path.join(path, "memory.usage_in_bytes")),
        rss=pick("rss"),
        cache=pick("cache"),
        swap=pick("swap"),  # only listed when swap is accounted
        mapped_file=pick("mapped_file"),
        kernel=read_int(os.path.join(path, "memory.kmem.usage_in_bytes")),
        max_usage=read_int(os.path.join(path, "memory.max_usage_in_bytes")),
        limit=None if limit is None or limit >= _V1_UNLIMITED else limit,
        oom_kills=oom_kills_v1(path),
    )


# --------------------------------------------------------------------------- v2

def swap_max_v2(memory_swap: int, memory: Optional[int]) -> str:
    """memory.swap.max for Docker's memory_swap (memory + swap); -1 is "max"."""
    if memory_swap == -1:
        return "max"
    if memory is None:
        raise _needs_memory("memory_swap", memory_swap)
    return str(memory_swap - memory)


def _current_max_v2(path: str) -> Optional[int]:
    return read_int_or_max(os.path.join(path, "memory.max"))


def check_memory_v2(path: str, res: Resources) -> None:
    """Raise ConfigError for a memory field whose v2 control file is missing."""
    if res.memory is not None:
        require_file(path, "memory.max", "memory", res.memory, "memory")
    if res.memory_reservation is not None:
        require_file(path, "memory.low", "memory_reservation", res.memory_reservation, "memory")
    if res.memory_swap is not None:
        require_file(path, "memory.swap.max", "memory_swap", res.memory_swap, "memory", _SWAP_HINT)
        memory = size_of(res.memory) if res.memory is not None else _current_max_v2(path)
        swap_max_v2(size_of(res.memory_swap) or 0, memory)  # raises when memory is unknown


def set_memory_v2(path: str, res: Resources) -> None:
    """Write memory.max / memory.low / memory.swap.max for ``res`` (None fields untouched)."""
    if res.memory is not None:
        write_value(os.path.join(path, "memory.max"), res.memory, "memory", res.memory)
    if res.memory_reservation is not None:
        write_value(os.path.join(path, "memory.low"), res.memory_reservation,
                    "memory_reservation", res.memory_reservation)
    if res.memory_swap is not None:
        memory = size_of(res.memory) if res.memory is not None else _current_max_v2(path)
        write_value(os.path.join(path, "memory.swap.max"), swap_max_v2(size_of(res.memory_swap) or 0, memory),
                    "memory_swap", res.memory_swap)


def oom_kills_v2(path: str) -> Optional[int]:
    """memory.events oom_kill (hierarchical unless mounted with memory_localevents)."""
    events = read_keyed(os.path.join(path, "memory.events"))
    return None if events is None else events.get("oom_kill")


# Before kernel 5.18 memory.stat has no "kernel" line; these are its parts.
_V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "percpu", "sock", "slab")


def _kernel_v2(stat: Dict[str, int]) -> Optional[int]:
    if "kernel" in stat:
        return stat["kernel"]
    parts = [stat[k] for k in _V2_KERNEL_PARTS if k in stat]
    return sum(parts) if parts else None


def stat_memory_v2(path: str) -> MemoryUsage:
    """Memory usage of a v2 cgroup (all None without the memory controller)."""
    if not os.path.exists(os.path.join(path, "memory.current")):
        return MemoryUsage()
    stat = read_keyed(os.path.join(path, "memory.stat")) or {}
    return MemoryUsage(
        usage=read_int(os.path.join(path, "memory.current")),
        rss=stat.get("anon"),
        cache=stat.get("file"),
        swap=read_int(os.path.join(path, "memory.swap.current")),
        mapped_file=stat.get("file_mapped"),
        kernel=_kernel_v2(stat),
        max_usage=read_int(os.path.join(path, "memory.peak")),
        limit=_current_max_v2(path),
        oom_kills=oom_kills_v2(path),
    )
