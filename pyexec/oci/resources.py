"""``linux.resources`` (and ``update``'s) as the library's cgroup settings.

The container's cgroup is made and filled by pyexec's own cgroup manager,
so an OCI resources object becomes a ``pyexec.config.Resources`` and a list
of device rules. A setting the library's manager does not implement is a
``ConfigError`` naming its JSON path, never dropped: a limit silently left
out is a hole in someone's isolation.

Device rules: the usual OCI list is "deny everything" then the allowed
nodes; it becomes runc's default allow list (null, zero, full, random,
urandom, tty, ptmx, pts; mknod of any node), the rules allowed by the
config and each node of ``linux.devices``. A list without that leading
"deny all" leaves the devices controller alone; a deny after an allow is
not supported yet (an error naming it).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..cgroups.devices import DEFAULT_DEVICE_RULES, DeviceRule
from ..config import Resources
from ..errors import ConfigError
from .spec_linux import OciDevice
from .spec_resources import OciResources

__all__ = ["to_resources", "device_rules"]

_DEFAULT_PERIOD_US = 100_000


def _unsupported(path: str, value: Any) -> ConfigError:
    return ConfigError(path, value, "not supported by pyexec-oci yet")


def to_resources(res: Optional[OciResources], where: str = "linux.resources") -> Resources:
    """The library's limits for ``res``; ConfigError for a setting it lacks."""
    if res is None:
        return Resources()
    out: Dict[str, Any] = {}
    if res.memory is not None:
        mem = res.memory
        if mem.limit is not None and mem.limit > 0:
            out["memory"] = mem.limit
        if mem.reservation is not None and mem.reservation > 0:
            out["memory_reservation"] = mem.reservation
        if mem.swap is not None and mem.swap != 0:
            out["memory_swap"] = -1 if mem.swap < 0 else mem.swap
        for name, value in (("kernel", mem.kernel), ("kernelTCP", mem.kernel_tcp),
                            ("swappiness", mem.swappiness), ("disableOOMKiller", mem.disable_oom_killer)):
            if value not in (None, False):
                raise _unsupported(f"{where}.memory.{name}", value)
    if res.cpu is not None:
        cpu = res.cpu
        if cpu.shares:
            out["cpu_shares"] = cpu.shares
        if cpu.quota is not None and cpu.quota > 0:
            out["cpus"] = cpu.quota / (cpu.period or _DEFAULT_PERIOD_US)
        elif cpu.period:
            raise _unsupported(f"{where}.cpu.period", cpu.period)
        if cpu.cpus:
            out["cpuset_cpus"] = cpu.cpus
        if cpu.mems:
            out["cpuset_mems"] = cpu.mems
        for name, value in (("realtimeRuntime", cpu.realtime_runtime), ("realtimePeriod", cpu.realtime_period),
                            ("idle", cpu.idle), ("burst", cpu.burst)):
            if value:
                raise _unsupported(f"{where}.cpu.{name}", value)
    if res.pids is not None and res.pids.limit > 0:
        out["pids"] = res.pids.limit
    if res.block_io is not None:
        bio = res.block_io
        if bio.weight:
            out["io_weight"] = bio.weight
        unsupported_io: Tuple[Tuple[str, object], ...] = (
            ("leafWeight", bio.leaf_weight), ("weightDevice", bio.weight_device),
            ("throttleReadBpsDevice", bio.throttle_read_bps_device),
            ("throttleWriteBpsDevice", bio.throttle_write_bps_device),
            ("throttleReadIOPSDevice", bio.throttle_read_iops_device),
            ("throttleWriteIOPSDevice", bio.throttle_write_iops_device))
        for name, setting in unsupported_io:
            if setting:
                raise _unsupported(f"{where}.blockIO.{name}", setting)
    unsupported: Tuple[Tuple[str, object], ...] = (
        ("hugepageLimits", res.hugepage_limits), ("network", res.network), ("rdma", res.rdma),
        ("unified", res.unified))
    for name, setting in unsupported:
        if setting:
            raise _unsupported(f"{where}.{name}", setting)
    try:
        return Resources(**out)
    except ConfigError as exc:
        raise ConfigError(f"{where} ({exc.field})", exc.value, exc.reason) from None


def device_rules(res: Optional[OciResources], devices: Sequence[OciDevice],
                 where: str = "linux.resources.devices") -> Optional[List[DeviceRule]]:
    """The device allow list of the container's cgroup, or None (no restriction)."""
    rules = res.devices if res is not None else ()
    if not rules or not (not rules[0].allow and rules[0].type == "a"):
        for index, rule in enumerate(rules):
            if not rule.allow:
                raise ConfigError(f"{where}[{index}]", rule, "a deny rule that does not come first as "
                                                             "'deny all' is not supported by pyexec-oci yet")
        return None
    out: List[DeviceRule] = list(DEFAULT_DEVICE_RULES)
    for index, rule in enumerate(rules[1:], start=1):
        if not rule.allow:
            raise ConfigError(f"{where}[{index}]", rule, "a deny rule after an allow is not supported by "
                                                         "pyexec-oci yet")
        if rule.type == "a":
            return None  # everything allowed again
        out.append(DeviceRule(rule.type, rule.major, rule.minor, rule.access))
    for device in devices:
        if device.type in ("c", "b", "u"):
            out.append(DeviceRule("b" if device.type == "b" else "c", device.major, device.minor, "rwm"))
    return out


