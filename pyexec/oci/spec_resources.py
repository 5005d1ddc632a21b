"""``linux.resources`` of a config.json (also the JSON of ``update --resources``), validated and typed.

runtime-spec config-linux.md's cgroup section: the device allow list,
memory, cpu, pids, blockIO, hugepageLimits, network, rdma and unified. Each
field keeps runtime-spec's meaning and unit (stated on the dataclasses);
turning them into cgroup files is the cgroup manager's job. A value that is
not set is None (or empty), never a made-up default, so an ``update`` can
tell "leave it" from "set it". Checked beyond the types: swappiness 0-100,
the memory+swap limit not below the memory limit, burst not above a
positive quota, cpuset lists, hugepage sizes, unified keys that are plain
cgroup file names, device rule types and access letters.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError
from .jsonpath import INT64, UINT16, UINT32, UINT64, JsonObject, member

__all__ = [
    "OciDeviceRule", "OciMemory", "OciCpu", "OciPids", "OciWeightDevice", "OciThrottleDevice", "OciBlockIO",
    "OciHugepageLimit", "OciInterfacePriority", "OciNetwork", "OciRdma", "OciResources", "parse_resources",
]

_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PAGE_SIZE = re.compile(r"^[1-9][0-9]*[KMG]B$")
# "memory.high", "cpu.max", "io.bfq.weight": a file of the cgroup's own directory, never a path.
_UNIFIED_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$")


@dataclass(frozen=True)
class OciDeviceRule:
    """One rule of the device allow list, applied in list order.

    ``type`` "a" (all), "c" or "b"; ``major``/``minor`` None means any
    (runtime-spec's unset, also written -1); ``access`` letters of "rwm".
    """

    allow: bool
    type: str = "a"
    major: Optional[int] = None
    minor: Optional[int] = None
    access: str = "rwm"


@dataclass(frozen=True)
class OciMemory:
    """Memory limits in bytes; -1 means unlimited for the int64 ones.

    ``swap`` is the limit of memory plus swap (cgroup v1's memsw), as in
    runtime-spec. ``swappiness`` 0-100. ``kernel``/``kernelTCP`` are cgroup
    v1's kmem limits (deprecated by the kernel).
    """

    limit: Optional[int] = None
    reservation: Optional[int] = None
    swap: Optional[int] = None
    kernel: Optional[int] = None
    kernel_tcp: Optional[int] = None
    swappiness: Optional[int] = None
    disable_oom_killer: Optional[bool] = None
    use_hierarchy: Optional[bool] = None
    check_before_update: Optional[bool] = None


@dataclass(frozen=True)
class OciCpu:
    """CPU controls: ``shares`` a relative weight (cgroup v1 units, 2-262144 in
    practice); ``quota``/``burst``/``period``/``realtime_*`` in microseconds
    (``quota`` -1: unlimited); ``cpus``/``mems`` cpuset lists like "0-2,4";
    ``idle`` 0 or 1 (SCHED_IDLE for the group)."""

    shares: Optional[int] = None
    quota: Optional[int] = None
    burst: Optional[int] = None
    period: Optional[int] = None
    realtime_runtime: Optional[int] = None
    realtime_period: Optional[int] = None
    cpus: Optional[str] = None
    mems: Optional[str] = None
    idle: Optional[int] = None


@dataclass(frozen=True)
class OciPids:
    """The task limit of the cgroup; as runc reads it, a negative value means
    no limit and 0 leaves the limit as it is."""

    limit: int


@dataclass(frozen=True)
class OciWeightDevice:
    """A per-device blkio weight (10-1000 on cgroup v1, uint16 in the spec); at least one of the two is set."""

    major: int
    minor: int
    weight: Optional[int] = None
    leaf_weight: Optional[int] = None


@dataclass(frozen=True)
class OciThrottleDevice:
    """A per-device rate limit: bytes per second (the *Bps lists) or I/O operations per second (*IOPS)."""

    major: int
    minor: int
    rate: int


@dataclass(frozen=True)
class OciBlockIO:
    """blkio/io controls; weights are uint16 (cgroup v1's 10-1000)."""

    weight: Optional[int] = None
    leaf_weight: Optional[int] = None
    weight_device: Tuple[OciWeightDevice, ...] = ()
    throttle_read_bps_device: Tuple[OciThrottleDevice, ...] = ()
    throttle_write_bps_device: Tuple[OciThrottleDevice, ...] = ()
    throttle_read_iops_device: Tuple[OciThrottleDevice, ...] = ()
    throttle_write_iops_device: Tuple[OciThrottleDevice, ...] = ()


@dataclass(frozen=True)
class OciHugepageLimit:
    """``page_size`` like "2MB" or "1GB"; ``limit`` in bytes."""

    page_size: str
    limit: int


@dataclass(frozen=True)
class OciInterfacePriority:
    """net_prio: ``name`` an interface of the runtime's network namespace."""

    name: str
    priority: int


@dataclass(frozen=True)
class OciNetwork:
    """net_cls class id (uint32) and net_prio priorities."""

    class_id: Optional[int] = None
    priorities: Tuple[OciInterfacePriority, ...] = ()


@dataclass(frozen=True)
class OciRdma:
    """Limits of one RDMA device (counts of HCA handles / objects); at least one is set."""

    hca_handles: Optional[int] = None
    hca_objects: Optional[int] = None


@dataclass(frozen=True)
class OciResources:
    """``linux.resources``: the controllers' settings; None / empty where unset.

    ``unified`` maps cgroup v2 file names ("memory.high") to the values
    written to them; ``rdma`` maps device names to their limits. The dicts
    are the dataclass's own copies: treat them as read-only.
    """

    devices: Tuple[OciDeviceRule, ...] = ()
    memory: Optional[OciMemory] = None
    cpu: Optional[OciCpu] = None
    pids: Optional[OciPids] = None
    block_io: Optional[OciBlockIO] = None
    hugepage_limits: Tuple[OciHugepageLimit, ...] = ()
    network: Optional[OciNetwork] = None
    rdma: Dict[str, OciRdma] = field(default_factory=dict)
    unified: Dict[str, str] = field(default_factory=dict)


def _device_rule(obj: JsonObject) -> OciDeviceRule:
    allow = obj.required_flag("allow")
    kind = obj.choice("type", ("a", "b", "c")) or "a"
    ids = []
    for key in ("major", "minor"):
        value = obj.number(key, INT64)
        if value is not None and value < -1:
            raise ConfigError(obj.at(key), value, "must be a device number, or -1 for any")
        ids.append(None if value is None or value == -1 else value)
    access = obj.text("access") or "rwm"
    if not set(access) <= set("rwm"):
        raise ConfigError(obj.at("access"), access, "must be letters of 'rwm'")
    return OciDeviceRule(allow=allow, type=kind, major=ids[0], minor=ids[1], access=access)


def _memory(obj: JsonObject) -> OciMemory:
    limits = {key: obj.number(key, INT64) for key in ("limit", "reservation", "swap", "kernel", "kernelTCP")}
    for key, value in limits.items():
        if value is not None and value < -1:
            raise ConfigError(obj.at(key), value, "must be a number of bytes, or -1 for unlimited")
    limit, swap = limits["limit"], limits["swap"]
    if limit is not None and swap is not None and limit > 0 and 0 < swap < limit:
        raise ConfigError(obj.at("swap"), swap, f"must not be below memory.limit ({limit}): it counts memory too")
    return OciMemory(limit=limit, reservation=limits["reservation"], swap=swap, kernel=limits["kernel"],
                     kernel_tcp=limits["kernelTCP"], swappiness=obj.number("swappiness", (0, 100)),
                     disable_oom_killer=obj.opt_flag("disableOOMKiller"), use_hierarchy=obj.opt_flag("useHierarchy"),
                     check_before_update=obj.opt_flag("checkBeforeUpdate"))


def _cpu_list(obj: JsonObject, key: str) -> Optional[str]:
    text = obj.opt_text(key)
    if text is not None and not _CPU_LIST.match(text):
        raise ConfigError(obj.at(key), text, "is not a list like '0-2,4'")
    return text


def _cpu(obj: JsonObject) -> OciCpu:
    quota = obj.number("quota", INT64)
    burst = obj.number("burst", UINT64)
    if quota is not None and quota > 0 and burst is not None and burst > quota:
        raise ConfigError(obj.at("burst"), burst, f"must not be above cpu.quota ({quota})")
    return OciCpu(shares=obj.number("shares", UINT64), quota=quota, burst=burst, period=obj.number("period", UINT64),
                  realtime_runtime=obj.number("realtimeRuntime", INT64),
                  realtime_period=obj.number("realtimePeriod", UINT64), cpus=_cpu_list(obj, "cpus"),
                  mems=_cpu_list(obj, "mems"), idle=obj.number("idle", (0, 1)))


def _weight_device(obj: JsonObject) -> OciWeightDevice:
    weight, leaf = obj.number("weight", UINT16), obj.number("leafWeight", UINT16)
    if weight is None and leaf is None:
        raise ConfigError(obj.path, obj.value, "needs a weight or a leafWeight")
    return OciWeightDevice(obj.required_number("major", INT64), obj.required_number("minor", INT64), weight, leaf)


def _throttle_devices(obj: JsonObject, key: str) -> Tuple[OciThrottleDevice, ...]:
    return tuple(OciThrottleDevice(d.required_number("major", INT64), d.required_number("minor", INT64),
                                   d.required_number("rate", UINT64)) for d in obj.children(key))


def _block_io(obj: JsonObject) -> OciBlockIO:
    return OciBlockIO(
        weight=obj.number("weight", UINT16), leaf_weight=obj.number("leafWeight", UINT16),
        weight_device=tuple(_weight_device(d) for d in obj.children("weightDevice")),
        throttle_read_bps_device=_throttle_devices(obj, "throttleReadBpsDevice"),
        throttle_write_bps_device=_throttle_devices(obj, "throttleWriteBpsDevice"),
        throttle_read_iops_device=_throttle_devices(obj, "throttleReadIOPSDevice"),
        throttle_write_iops_device=_throttle_devices(obj, "throttleWriteIOPSDevice"))


def _hugepage_limit(obj: JsonObject) -> OciHugepageLimit:
    size = obj.required_text("pageSize")
    if not _PAGE_SIZE.match(size):
        raise ConfigError(obj.at("pageSize"), size, "is not a page size like '2MB' or '1GB'")
    return OciHugepageLimit(size, obj.required_number("limit", UINT64))


def _network(obj: JsonObject) -> OciNetwork:
    priorities = tuple(OciInterfacePriority(p.required_text("name"), p.required_number("priority", UINT32))
                       for p in obj.children("priorities"))
    return OciNetwork(class_id=obj.number("classID", UINT32), priorities=priorities)


def _rdma(obj: JsonObject) -> Dict[str, OciRdma]:
    out = {}
    for name, value in obj.value.items():
        if not name:
            raise ConfigError(obj.path, name, "has an empty device name")
        entry = JsonObject(value, member(obj.path, name))
        limits = OciRdma(entry.number("hcaHandles", UINT32), entry.number("hcaObjects", UINT32))
        if limits.hca_handles is None and limits.hca_objects is None:
            raise ConfigError(entry.path, entry.value, "needs hcaHandles or hcaObjects")
        out[name] = limits
    return out


def _unified(obj: JsonObject) -> Dict[str, str]:
    values = obj.mapping("unified")
    for key in values:
        if not _UNIFIED_KEY.match(key):
            raise ConfigError(member(obj.at("unified"), key), key, "is not a cgroup file name like 'memory.high'")
    return values


def parse_resources(value: Any, path: str = "linux.resources") -> OciResources:
    """``linux.resources`` (or, with ``path=""``, the JSON object ``update --resources`` reads)."""
    obj = JsonObject(value, path)
    memory, cpu, block_io, network, rdma = (obj.child(k) for k in ("memory", "cpu", "blockIO", "network", "rdma"))
    pids = obj.child("pids")
    return OciResources(
        devices=tuple(_device_rule(d) for d in obj.children("devices")),
        memory=_memory(memory) if memory else None,
        cpu=_cpu(cpu) if cpu else None,
        pids=OciPids(pids.required_number("limit", INT64)) if pids else None,
        block_io=_block_io(block_io) if block_io else None,
        hugepage_limits=tuple(_hugepage_limit(h) for h in obj.children("hugepageLimits")),
        network=_network(network) if network else None,
        rdma=_rdma(rdma) if rdma else {},
        unified=_unified(obj))
