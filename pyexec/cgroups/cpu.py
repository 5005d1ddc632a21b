"""The cpu (and v1 cpuacct) controller: shares, CFS bandwidth (cpus or
cpu_period_us/cpu_quota_us, cpu_burst_us), cpu_idle, v1 realtime bandwidth,
CPU-time and throttling statistics, for cgroup v1 and v2.

v1 files: cpu.shares, cpu.cfs_period_us, cpu.cfs_quota_us, cpu.cfs_burst_us,
cpu.idle, cpu.rt_period_us, cpu.rt_runtime_us, cpu.stat (nr_throttled,
throttled_time in ns); cpuacct.usage, cpuacct.usage_user / cpuacct.usage_sys
(newer kernels), cpuacct.stat (USER_HZ ticks) as fallback.
v2 files: cpu.weight (shares converted), cpu.max ("quota period"),
cpu.max.burst, cpu.idle, cpu.stat (usage_usec, user_usec, system_usec always;
nr_throttled, throttled_usec only with the cpu controller enabled). v2 has no
realtime group bandwidth (v2.py refuses those fields).

Realtime on v1: a group's cpu.rt_runtime_us comes out of its parent's, so a
runtime above 0 needs a parent with budget to spare (the root has 950000 of
1000000 by default; a "pyexec" parent made by mkdir has 0). The kernel's
EINVAL then becomes a ConfigError that says so.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from ..config import Resources
from ..errors import ConfigError
from ..stats.usage import CpuUsage
from .fscommon import read_int, read_keyed, read_text, require_file, write_value

__all__ = [
    "CFS_PERIOD_US", "cpu_quota_us", "shares_to_weight", "cpu_max_text_v2",
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

def _bandwidth_field(res: Resources) -> Tuple[str, object]:
    """The field a CFS bandwidth error names: cpus, else the quota, else the period."""
    for name in ("cpus", "cpu_quota_us", "cpu_period_us"):
        if getattr(res, name) is not None:
            return name, getattr(res, name)
    return "cpus", None


def check_cpu_v1(path: str, res: Resources) -> None:
    """Raise ConfigError for a cpu field whose v1 control file is missing."""
    if res.cpu_shares is not None:
        require_file(path, "cpu.shares", "cpu_shares", res.cpu_shares, "cpu")
    period, quota = res.cfs_bandwidth()
    hint = "the kernel lacks CONFIG_CFS_BANDWIDTH"
    if period is not None or quota is not None:
        name, value = _bandwidth_field(res)
        require_file(path, "cpu.cfs_period_us", name, value, "cpu", hint)
        require_file(path, "cpu.cfs_quota_us", name, value, "cpu", hint)
    optional = (("cpu.cfs_burst_us", "cpu_burst_us", "kernel 5.14+ with CONFIG_CFS_BANDWIDTH"),
                ("cpu.idle", "cpu_idle", "kernel 5.15+"),
                ("cpu.rt_period_us", "cpu_rt_period_us", "the kernel lacks CONFIG_RT_GROUP_SCHED"),
                ("cpu.rt_runtime_us", "cpu_rt_runtime_us", "the kernel lacks CONFIG_RT_GROUP_SCHED"))
    for filename, name, why in optional:
        if getattr(res, name) is not None:
            require_file(path, filename, name, getattr(res, name), "cpu", why)


def _set_bandwidth_v1(path: str, res: Resources) -> None:
    """cpu.cfs_period_us then cpu.cfs_quota_us, as the kernel usually wants;
    when it refuses the period (the quota in force would then exceed what
    the parent allows for the new period), the quota goes first."""
    period, quota = res.cfs_bandwidth()
    name, value = _bandwidth_field(res)
    period_file, quota_file = os.path.join(path, "cpu.cfs_period_us"), os.path.join(path, "cpu.cfs_quota_us")
    if period is None:
        if quota is not None:
            write_value(quota_file, quota, name, value)
        return
    try:
        write_value(period_file, period, name, value)
    except ConfigError:
        if quota is None:
            raise
        write_value(quota_file, quota, name, value)
        write_value(period_file, period, name, value)
        return
    if quota is not None:
        write_value(quota_file, quota, name, value)


def _set_rt_v1(path: str, res: Resources) -> None:
    """cpu.rt_period_us, then cpu.rt_runtime_us (its budget per period)."""
    if res.cpu_rt_period_us is not None:
        write_value(os.path.join(path, "cpu.rt_period_us"), res.cpu_rt_period_us,
                    "cpu_rt_period_us", res.cpu_rt_period_us)
    if res.cpu_rt_runtime_us is None:
        return
    try:
        write_value(os.path.join(path, "cpu.rt_runtime_us"), res.cpu_rt_runtime_us,
                    "cpu_rt_runtime_us", res.cpu_rt_runtime_us)
    except ConfigError as exc:
        parent = os.path.dirname(path)
        try:
            budget = read_text(os.path.join(parent, "cpu.rt_runtime_us"))
        except OSError:
            raise exc from None
        raise ConfigError("cpu_rt_runtime_us", res.cpu_rt_runtime_us,
                          f"{exc.reason} (a realtime runtime is taken from the parent's: {parent} has "
                          f"cpu.rt_runtime_us {budget}, less what its other children hold)") from None


def set_cpu_v1(path: str, res: Resources) -> None:
    """Write cpu.shares, the CFS bandwidth (period, then quota), burst, idle
    and the realtime bandwidth for ``res``."""
    if res.cpu_shares is not None:
        write_value(os.path.join(path, "cpu.shares"), res.cpu_shares, "cpu_shares", res.cpu_shares)
    _set_bandwidth_v1(path, res)
    if res.cpu_burst_us is not None:  # after the quota: the burst may not exceed it
        write_value(os.path.join(path, "cpu.cfs_burst_us"), res.cpu_burst_us, "cpu_burst_us", res.cpu_burst_us)
    if res.cpu_idle is not None:
        write_value(os.path.join(path, "cpu.idle"), int(res.cpu_idle), "cpu_idle", res.cpu_idle)
    _set_rt_v1(path, res)


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


def cpu_max_text_v2(res: Resources, current: Optional[str] = None) -> Optional[str]:
    """cpu.max for ``res`` ("quota period", quota "max" for unlimited), None
    when no bandwidth is set. A period alone keeps the quota in ``current``
    (the file's content) and a quota alone its period, as an update wants."""
    period, quota = res.cfs_bandwidth()
    if period is None and quota is None:
        return None
    old_quota, _, old_period = (current or f"max {CFS_PERIOD_US}").partition(" ")
    quota_text = old_quota if quota is None else ("max" if quota == -1 else str(quota))
    return f"{quota_text} {old_period if period is None else period}"


def check_cpu_v2(path: str, res: Resources) -> None:
    """Raise ConfigError for a cpu field whose v2 control file is missing."""
    if res.cpu_shares is not None:
        require_file(path, "cpu.weight", "cpu_shares", res.cpu_shares, "cpu",
                     "the kernel lacks CONFIG_FAIR_GROUP_SCHED")
    if res.cfs_bandwidth() != (None, None):
        name, value = _bandwidth_field(res)
        require_file(path, "cpu.max", name, value, "cpu", "the kernel lacks CONFIG_CFS_BANDWIDTH")
    if res.cpu_burst_us is not None:
        require_file(path, "cpu.max.burst", "cpu_burst_us", res.cpu_burst_us, "cpu", "kernel 5.14+")
    if res.cpu_idle is not None:
        require_file(path, "cpu.idle", "cpu_idle", res.cpu_idle, "cpu", "kernel 5.15+")


def set_cpu_v2(path: str, res: Resources) -> None:
    """Write cpu.weight, cpu.max, cpu.max.burst and cpu.idle for ``res``."""
    if res.cpu_shares is not None:
        write_value(os.path.join(path, "cpu.weight"), shares_to_weight(res.cpu_shares),
                    "cpu_shares", res.cpu_shares)
    period, quota = res.cfs_bandwidth()
    if period is not None or quota is not None:
        current = read_text(os.path.join(path, "cpu.max")) if period is None or quota is None else None
        name, value = _bandwidth_field(res)
        write_value(os.path.join(path, "cpu.max"), cpu_max_text_v2(res, current) or "", name, value)
    if res.cpu_burst_us is not None:
        write_value(os.path.join(path, "cpu.max.burst"), res.cpu_burst_us, "cpu_burst_us", res.cpu_burst_us)
    if res.cpu_idle is not None:
        write_value(os.path.join(path, "cpu.idle"), int(res.cpu_idle), "cpu_idle", res.cpu_idle)


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
