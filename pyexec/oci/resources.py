"""``linux.resources`` (and ``update``'s) as the library's cgroup settings.

The container's cgroup is made and filled by pyexec's own cgroup manager,
so an OCI resources object becomes a ``pyexec.config.Resources`` and a list
of device rules. Values keep runtime-spec's and runc's meanings: a memory,
reservation or pids limit of -1 (pids: <= 0) is "unlimited", which for a
new cgroup is the same as unset; swap and kernelTCP -1 are written as
unlimited; cpu quota -1 is unlimited; zeros that runc reads as "unset"
(shares, weights, period, realtime values) are unset here too. A setting
the library cannot express is a ``ConfigError`` naming its JSON path, never
dropped: a limit silently left out is a hole in someone's isolation. Only
``memory.kernel`` is ignored (with a warning), as runc does: the kernel
itself has ignored kmem limits since 5.16 (and dropped the file in 6.x).

Device rules: the OCI list is applied in order on top of "deny everything"
(the cgroup manager's starting point), followed, as runc does, by runc's
default allow list (null, zero, full, random, urandom, tty, ptmx, pts;
mknod of any node) and each node of ``linux.devices``. A list that does not
start with "deny all" starts with "allow all" instead (what a new cgroup
inherits), so its rules refine that; an empty list leaves devices alone.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from ..cgroups.devices import DEFAULT_DEVICE_RULES, DeviceRule
from ..config import Resources
from ..errors import ConfigError
from .spec_linux import OciDevice
from .spec_resources import OciBlockIO, OciCpu, OciMemory, OciResources, OciThrottleDevice

__all__ = ["to_resources", "device_rules", "JSON_PATHS"]

log = logging.getLogger(__name__)

#: Resources field -> the member of ``linux.resources`` it comes from (for errors).
JSON_PATHS: Dict[str, str] = {
    "memory": "memory.limit", "memory_reservation": "memory.reservation", "memory_swap": "memory.swap",
    "memory_kernel_tcp": "memory.kernelTCP", "memory_swappiness": "memory.swappiness",
    "memory_oom_kill_disable": "memory.disableOOMKiller",
    "cpu_shares": "cpu.shares", "cpu_quota_us": "cpu.quota", "cpu_period_us": "cpu.period",
    "cpu_burst_us": "cpu.burst", "cpu_idle": "cpu.idle", "cpu_rt_runtime_us": "cpu.realtimeRuntime",
    "cpu_rt_period_us": "cpu.realtimePeriod", "cpuset_cpus": "cpu.cpus", "cpuset_mems": "cpu.mems",
    "pids": "pids.limit", "io_weight": "blockIO.weight", "io_leaf_weight": "blockIO.leafWeight",
    "io_weight_devices": "blockIO.weightDevice", "io_throttle_read_bps": "blockIO.throttleReadBpsDevice",
    "io_throttle_write_bps": "blockIO.throttleWriteBpsDevice",
    "io_throttle_read_iops": "blockIO.throttleReadIOPSDevice",
    "io_throttle_write_iops": "blockIO.throttleWriteIOPSDevice",
    "hugetlb": "hugepageLimits", "net_cls_classid": "network.classID", "net_prio_ifpriomap": "network.priorities",
    "unified": "unified",
}


def _unsupported(path: str, value: Any, why: str) -> ConfigError:
    return ConfigError(path, value, f"not supported by pyexec-oci yet ({why})")


def _memory(mem: OciMemory, out: Dict[str, Any], where: str) -> None:
    if mem.limit is not None and mem.limit > 0:
        out["memory"] = mem.limit
    if mem.reservation is not None and mem.reservation > 0:
        out["memory_reservation"] = mem.reservation
    if mem.swap is not None and mem.swap != 0:
        out["memory_swap"] = -1 if mem.swap < 0 else mem.swap
    if mem.kernel_tcp is not None and mem.kernel_tcp != 0:
        out["memory_kernel_tcp"] = -1 if mem.kernel_tcp < 0 else mem.kernel_tcp
    if mem.swappiness is not None:
        out["memory_swappiness"] = mem.swappiness
    if mem.disable_oom_killer is not None:
        out["memory_oom_kill_disable"] = mem.disable_oom_killer
    if mem.kernel is not None and mem.kernel != 0:
        log.warning("%s.memory.kernel is ignored: kernel memory limits are deprecated and have no effect "
                    "since Linux 5.16 (runc ignores them too)", where)


def _cpu(cpu: OciCpu, out: Dict[str, Any]) -> None:
    if cpu.shares:
        out["cpu_shares"] = cpu.shares
    if cpu.quota is not None and cpu.quota != 0:
        out["cpu_quota_us"] = -1 if cpu.quota < 0 else cpu.quota
    if cpu.period:
        out["cpu_period_us"] = cpu.period
    if cpu.burst is not None:
        out["cpu_burst_us"] = cpu.burst
    if cpu.idle is not None:
        out["cpu_idle"] = bool(cpu.idle)
    if cpu.realtime_period:
        out["cpu_rt_period_us"] = cpu.realtime_period
    if cpu.realtime_runtime:
        out["cpu_rt_runtime_us"] = -1 if cpu.realtime_runtime < 0 else cpu.realtime_runtime
    if cpu.cpus:
        out["cpuset_cpus"] = cpu.cpus
    if cpu.mems:
        out["cpuset_mems"] = cpu.mems


def _rates(devices: Sequence[OciThrottleDevice]) -> Optional[List[tuple]]:
    return [(d.major, d.minor, d.rate) for d in devices] or None


def _block_io(bio: OciBlockIO, out: Dict[str, Any]) -> None:
    if bio.weight:
        out["io_weight"] = bio.weight
    if bio.leaf_weight:
        out["io_leaf_weight"] = bio.leaf_weight
    weights = [(d.major, d.minor, d.weight or None, d.leaf_weight or None) for d in bio.weight_device
               if d.weight or d.leaf_weight]
    if weights:
        out["io_weight_devices"] = weights
    for name, devices in (("io_throttle_read_bps", bio.throttle_read_bps_device),
                          ("io_throttle_write_bps", bio.throttle_write_bps_device),
                          ("io_throttle_read_iops", bio.throttle_read_iops_device),
                          ("io_throttle_write_iops", bio.throttle_write_iops_device)):
        if devices:
            out[name] = _rates(devices)


def to_resources(res: Optional[OciResources], where: str = "linux.resources") -> Resources:
    """The library's limits for ``res``; ConfigError (naming the JSON path) for a setting it lacks."""
    if res is None:
        return Resources()
    out: Dict[str, Any] = {}
    if res.memory is not None:
        _memory(res.memory, out, where)
    if res.cpu is not None:
        _cpu(res.cpu, out)
    if res.pids is not None and res.pids.limit > 0:
        out["pids"] = res.pids.limit
    if res.block_io is not None:
        _block_io(res.block_io, out)
    if res.hugepage_limits:
        out["hugetlb"] = {h.page_size: h.limit for h in res.hugepage_limits}
    if res.network is not None:
        if res.network.class_id is not None:
            out["net_cls_classid"] = res.network.class_id
        if res.network.priorities:
            out["net_prio_ifpriomap"] = {p.name: p.priority for p in res.network.priorities}
    if res.rdma:
        raise _unsupported(f"{where}.rdma", res.rdma, "the library's cgroup manager has no rdma controller")
    if res.unified:
        out["unified"] = dict(res.unified)
    try:
        return Resources(**out)
    except ConfigError as exc:
        field = exc.field.split("[", 1)[0]
        path = JSON_PATHS.get(field)
        raise ConfigError(f"{where}.{path}" if path else f"{where} ({exc.field})", exc.value, exc.reason) from None


def _rule(rule: Any) -> DeviceRule:
    return DeviceRule(rule.type, rule.major, rule.minor, rule.access, rule.allow)


def device_rules(res: Optional[OciResources], devices: Sequence[OciDevice],
                 where: str = "linux.resources.devices") -> Optional[List[DeviceRule]]:
    """The ordered device rules of the container's cgroup (applied after a
    "deny all"), or None (an empty list: devices are left alone)."""
    rules = res.devices if res is not None else ()
    if not rules:
        return None
    out: List[DeviceRule] = []
    if rules[0].allow or rules[0].type != "a":
        out.append(DeviceRule("a", None, None, "rwm", True))  # what the cgroup had: everything
    out += [_rule(rule) for rule in rules]
    out += DEFAULT_DEVICE_RULES
    for device in devices:
        if device.type in ("c", "b", "u"):
            out.append(DeviceRule("b" if device.type == "b" else "c", device.major, device.minor, "rwm"))
    return out
