"""The cpu (and v1 cpuacct) controller: cpu_shares and cpus limits, CPU-time and
throttling statistics, for cgroup v1 and v2.

v1 files: cpu.shares, cpu.cfs_period_us, cpu.cfs_quota_us, cpu.stat
(nr_throttled, throttled_time in ns); cpuacct.usage, cpuacct.usage_user /
cpuacct.usage_sys (newer kernels), cpuacct.stat (USER_HZ ticks) as fallback.
v2 files: cpu.weight (shares converted), cpu.max ("quota period"), cpu.stat
(usage_usec, user_usec, system_usec always; nr_throttled, throttled_usec only
with the cpu controller enabled).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from ..config import Resources
from ..stats.usage import CpuUsage
from .fscommon import read_int, read_keyed, require_file, write_value

__all__ = [
    "CFS_PERIOD_US", "cpu_quota_us", "shares_to_weight",
    "check_cpu_v1", "set_cpu_v1", "stat_cpu_v1",
    "check_cpu_v2", "set_cpu_v2", "stat_cpu_v2", "cpu_max_v2", "stat_cpu_text_v2",
]

CFS_PERIOD_US = 100_000


def cpu_quota_us(cpus: float) -> int:
    """CFS quota (µs per CFS_PERIOD_US) for a number of CPUs; the kernel minimum is 1000.

    Rounded, not truncated: int(0.29 * 100000) would give 28999."""
    return max(1000, round(cpus * CFS_PERIOD_US))


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), linearly: 2 -> 1,
    1024 -> 39, 262144 -> 10000 (the mapping runc and systemd use)."""
    return 1 + ((shares - 2) * 9999) // 262142


# --------------------------------------------------------------------------- v1

def check_cpu_v1(path: str, res: Resources) -> None:
    """Raise ConfigError for a cpu field whose v1 control file is missing."""
    if res.cpu_shares is not None:
        require_file(path, "cpu.shares", "cpu_shares", res.cpu_shares, "cpu")
    if res.cpus is not None:
        hint = "the kernel lacks CONFIG_CFS_BANDWIDTH"
        require_file(path, "cpu.cfs_period_us", "cpus", res.cpus, "cpu", hint)
        require_file(path, "cpu.cfs_quota_us", "cpus", res.cpus, "cpu", hint)


def set_cpu_v1(path: str, res: Resources) -> None:
    """Write cpu.shares and the CFS bandwidth (period, then quota) for ``res``."""
    if res.cpu_shares is not None:
        write_value(os.path.join(path, "cpu.shares"), res.cpu_shares, "cpu_shares", res.cpu_shares)
    if res.cpus is not None:
        write_value(os.path.join(path, "cpu.cfs_period_us"), CFS_PERIOD_US, "cpus", res.cpus)
        write_value(os.path.join(path, "cpu.cfs_quota_us"), cpu_quota_us(res.cpus), "cpus", res.cpus)


def _seconds(value: Optional[int], per_second: int) -> Optional[float]:
    return None if value is None else value / per_second


def stat_cpu_v1(cpu_path: Optional[str], cpuacct_path: Optional[str]) -> CpuUsage:
    """CPU usage from the v1 cpu and cpuacct cgroups (either may be None);
    ``percent`` is left to the manager, which knows the previous sample.
    A missing directory reads as all None (no stat of it first)."""
    total = user = system = None
    throttled_periods = throttled_ns = None
    if cpuacct_path is not None:
        total = _seconds(read_int(os.path.join(cpuacct_path, "cpuacct.usage")), 1_000_000_000)
        user = _seconds(read_int(os.path.join(cpuacct_path, "cpuacct.usage_user")), 1_000_000_000)
        system = _seconds(read_int(os.path.join(cpuacct_path, "cpuacct.usage_sys")), 1_000_000_000)
        if user is None or system is None:
            ticks = read_keyed(os.path.join(cpuacct_path, "cpuacct.stat")) or {}
            hz = os.sysconf("SC_CLK_TCK")
            user, system = _seconds(ticks.get("user"), hz), _seconds(ticks.get("system"), hz)
    if cpu_path is not None:
        stat = read_keyed(os.path.join(cpu_path, "cpu.stat")) or {}
        throttled_periods = stat.get("nr_throttled")
        throttled_ns = stat.get("throttled_time")
    return CpuUsage(usage_total_s=total, user_s=user, system_s=system,
                    throttled_periods=throttled_periods,
                    throttled_time_s=_seconds(throttled_ns, 1_000_000_000))


# --------------------------------------------------------------------------- v2

def cpu_max_v2(cpus: float) -> str:
    """cpu.max content ("quota period", µs) for a number of CPUs."""
    return f"{cpu_quota_us(cpus)} {CFS_PERIOD_US}"


def check_cpu_v2(path: str, res: Resources) -> None:
    """Raise ConfigError for a cpu field whose v2 control file is missing."""
    if res.cpu_shares is not None:
        require_file(path, "cpu.weight", "cpu_shares", res.cpu_shares, "cpu",
                     "the kernel lacks CONFIG_FAIR_GROUP_SCHED")
    if res.cpus is not None:
        require_file(path, "cpu.max", "cpus", res.cpus, "cpu", "the kernel lacks CONFIG_CFS_BANDWIDTH")


def set_cpu_v2(path: str, res: Resources) -> None:
    """Write cpu.weight and cpu.max for ``res``."""
    if res.cpu_shares is not None:
        write_value(os.path.join(path, "cpu.weight"), shares_to_weight(res.cpu_shares),
                    "cpu_shares", res.cpu_shares)
    if res.cpus is not None:
        write_value(os.path.join(path, "cpu.max"), cpu_max_v2(res.cpus), "cpus", res.cpus)


def stat_cpu_text_v2(stat: Dict[str, int]) -> CpuUsage:
    """CPU usage from parsed v2 cpu.stat (microseconds); ``percent`` is the manager's."""

    def seconds(key: str) -> Optional[float]:
        return _seconds(stat.get(key), 1_000_000)

    return CpuUsage(usage_total_s=seconds("usage_usec"), user_s=seconds("user_usec"),
                    system_s=seconds("system_usec"), throttled_periods=stat.get("nr_throttled"),
                    throttled_time_s=seconds("throttled_usec"))


def stat_cpu_v2(path: str) -> CpuUsage:
    """CPU usage of a v2 cgroup (cpu.stat is a core file, always there)."""
    stat = read_keyed(os.path.join(path, "cpu.stat"))
    return CpuUsage() if stat is None else stat_cpu_text_v2(stat)
