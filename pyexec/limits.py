"""``Resources``: the cgroup limits of a task, validated and normalised.

Re-exported by config.py (``pyexec.config.Resources``). Every field is None
when unset; a set field is checked here, before any cgroup exists, and a
``ConfigError`` names the field and the value. Which control file a field
becomes on cgroup v1 and v2 is the cgroup manager's business (pyexec/cgroups/);
fields that only one cgroup version can express are refused there by name.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigError

__all__ = ["parse_size", "size_of", "Resources", "IoWeightDevice", "IoRate"]

#: (major, minor, weight, leaf_weight); weight or leaf_weight may be None, not both.
IoWeightDevice = Tuple[int, int, Optional[int], Optional[int]]
#: (major, minor, rate): bytes or I/O operations per second; 0 removes the device's limit.
IoRate = Tuple[int, int, int]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PAGE_SIZE_RE = re.compile(r"^[1-9][0-9]*[KMG]B$")  # hugetlb's own spelling: "2MB", "1GB", "64KB"
_IFNAME_RE = re.compile(r"^[^\s/]{1,15}$")  # IFNAMSIZ - 1, no blanks (the file is "name prio" lines)
# A file of the cgroup's own directory ("memory.high", "cpu.max"), never a path.
_UNIFIED_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$")
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def size_of(value: Union[int, str, None]) -> Optional[int]:
    """A size field of a constructed ``Resources``, as the int of bytes it
    holds: the field's type admits the text it was given ("64M"), which
    construction has already turned into bytes."""
    assert not isinstance(value, str), "Resources parses sizes when it is made"
    return value


def parse_size(field_name: str, value: Union[int, float, str, None]) -> Optional[int]:
    """Bytes from an int or a string like ``"64M"``, ``"1.5G"``, ``"512kb"``; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(field_name, value, "is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(field_name, value, "must not be negative")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(field_name, value, "is not a size")
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
            raise ConfigError(field_name, value, "is not a size")
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ConfigError(field_name, value, "is not a size")


def _size_or_unlimited(field_name: str, value: Any) -> Optional[int]:
    """A size, or -1 ("-1") for unlimited."""
    if value == -1 or value == "-1":
        return -1
    return parse_size(field_name, value)


def _int_in_range(field_name: str, value: Any, low: int, high: Optional[int] = None) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field_name, value, "is not an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(field_name, value, f"must be {bound}")
    return value


def _flag(field_name: str, value: Any) -> Optional[bool]:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(field_name, value, "must be True or False")
    return value


def _cpuset(field_name: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not _CPUSET_RE.match(value.replace(" ", "")):
        raise ConfigError(field_name, value, "is not a cpu/node list like '0-2,4'")
    return value.replace(" ", "")


def _entries(field_name: str, value: Any, sizes: Tuple[int, ...]) -> Tuple[tuple, ...]:
    """A sequence of tuples of one of ``sizes`` lengths, as a tuple of tuples."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ConfigError(field_name, value, "must be a sequence of tuples")
    out = []
    for entry in value:
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) not in sizes:
            raise ConfigError(field_name, entry, f"must be a tuple of {' or '.join(map(str, sizes))} numbers")
        out.append(tuple(entry))
    return tuple(out)


def _device_numbers(field_name: str, entry: tuple) -> None:
    for number in entry[:2]:
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= _U32:
            raise ConfigError(field_name, entry, "needs a device's major and minor numbers (>= 0)")


def _weight_devices(field_name: str, value: Any) -> Optional[Tuple[IoWeightDevice, ...]]:
    if value is None:
        return None
    out = []
    for entry in _entries(field_name, value, (3, 4)):
        _device_numbers(field_name, entry)
        major, minor, weight, leaf = (entry + (None,))[:4]
        if weight is None and leaf is None:
            raise ConfigError(field_name, entry, "needs a weight or a leaf_weight")
        for number in (weight, leaf):
            if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                                       or not 10 <= number <= 1000):
                raise ConfigError(field_name, entry, "weights must be between 10 and 1000")
        out.append((major, minor, weight, leaf))
    return tuple(out)


def _rates(field_name: str, value: Any) -> Optional[Tuple[IoRate, ...]]:
    if value is None:
        return None
    out = []
    for entry in _entries(field_name, value, (3,)):
        _device_numbers(field_name, entry)
        rate = entry[2]
        if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= _U64:
            raise ConfigError(field_name, entry, "needs a rate >= 0 (0 removes the device's limit)")
        out.append((entry[0], entry[1], rate))
    return tuple(out)


def _mapping(field_name: str, value: Any) -> Optional[Dict[Any, Any]]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, value, "must be a mapping")
    return dict(value)  # our own copy: the caller's dict may change later


def _hugetlb(value: Any) -> Optional[Dict[str, int]]:
    limits = _mapping("hugetlb", value)
    if limits is None:
        return None
    out: Dict[str, int] = {}
    for size, limit in limits.items():
        if not isinstance(size, str) or not _PAGE_SIZE_RE.match(size):
            raise ConfigError("hugetlb", size, "is not a huge page size like '2MB' or '1GB'")
        out[size] = _size_or_unlimited(f"hugetlb[{size}]", limit)  # type: ignore[assignment]
    return out


def _ifpriomap(value: Any) -> Optional[Dict[str, int]]:
    priorities = _mapping("net_prio_ifpriomap", value)
    if priorities is None:
        return None
    for name, priority in priorities.items():
        if not isinstance(name, str) or not _IFNAME_RE.match(name):
            raise ConfigError("net_prio_ifpriomap", name, "is not a network interface name")
        _int_in_range(f"net_prio_ifpriomap[{name}]", priority, 0, _U32)
    return priorities


def _unified(value: Any) -> Optional[Dict[str, str]]:
    files = _mapping("unified", value)
    if files is None:
        return None
    out: Dict[str, str] = {}
    for name, text in files.items():
        # No "/" nor "..": the name is a file of the task's cgroup, never a way out of it.
        if not isinstance(name, str) or not _UNIFIED_KEY_RE.match(name) or ".." in name:
            raise ConfigError("unified", name, "is not a cgroup v2 file name like 'memory.high'")
        if isinstance(text, bool) or not isinstance(text, (str, int)) or "\0" in str(text):
            raise ConfigError(f"unified[{name}]", text, "must be a string (or an int) to write")
        out[name] = str(text)
    return out


@dataclass(frozen=True)
class Resources:
    """Cgroup limits of a task. Sizes accept ints (bytes) or strings ("64M", "1.5G").

    After construction every size field holds bytes (int); ``memory_swap`` and
    ``memory_kernel_tcp`` may be -1 for unlimited. ``None`` means "no limit set".
    Times are microseconds. Fields marked v1 have no cgroup v2 file (a v2 host
    refuses them with a ConfigError naming the field), ``unified`` is v2 only.
    """

    memory: Optional[Union[int, str]] = None             # hard limit, bytes
    memory_reservation: Optional[Union[int, str]] = None  # soft limit, bytes
    memory_swap: Optional[Union[int, str]] = None        # memory + swap, bytes (Docker's meaning); -1 = unlimited
    cpu_shares: Optional[int] = None                     # 2..262144, relative weight
    cpus: Optional[float] = None                         # CPU bandwidth in cores, e.g. 0.5 (quota = cpus * period)
    cpuset_cpus: Optional[str] = None                    # "0-1,3"
    cpuset_mems: Optional[str] = None
    pids: Optional[int] = None                           # max number of processes
    io_weight: Optional[int] = None                      # 10..1000
    cpu_period_us: Optional[int] = None                  # CFS period, 1000..1000000 µs (default 100000)
    cpu_quota_us: Optional[int] = None                   # CFS quota per period, >= 1000 µs, -1 unlimited; not with cpus
    cpu_burst_us: Optional[int] = None                   # CFS burst, >= 0 µs (kernel 5.14+)
    cpu_idle: Optional[bool] = None                      # SCHED_IDLE for the whole group (kernel 5.15+)
    cpu_rt_period_us: Optional[int] = None               # v1: realtime period, >= 1 µs
    cpu_rt_runtime_us: Optional[int] = None              # v1: realtime runtime per period, µs; -1 = unlimited
    memory_swappiness: Optional[int] = None              # v1: 0..100
    memory_kernel_tcp: Optional[Union[int, str]] = None  # v1: TCP buffer limit, bytes; -1 = unlimited
    memory_oom_kill_disable: Optional[bool] = None       # v1: True pauses at the limit instead of OOM-killing
    io_leaf_weight: Optional[int] = None                 # v1 (CFQ): 10..1000, the weight of the cgroup's own tasks
    io_weight_devices: Optional[Sequence[IoWeightDevice]] = None  # per device weight and leaf_weight (v1 only)
    io_throttle_read_bps: Optional[Sequence[IoRate]] = None   # bytes/s per device
    io_throttle_write_bps: Optional[Sequence[IoRate]] = None
    io_throttle_read_iops: Optional[Sequence[IoRate]] = None  # I/O operations/s per device
    io_throttle_write_iops: Optional[Sequence[IoRate]] = None
    hugetlb: Optional[Mapping[str, Union[int, str]]] = None  # huge page size ("2MB") -> limit, bytes; -1 = unlimited
    net_cls_classid: Optional[int] = None                # v1: net_cls class id, 0..2**32-1
    net_prio_ifpriomap: Optional[Mapping[str, int]] = None  # v1: interface name -> priority
    unified: Optional[Mapping[str, str]] = None          # v2 only: cgroup v2 file name -> the text written to it

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "memory", parse_size("memory", self.memory))
        put(self, "memory_reservation", parse_size("memory_reservation", self.memory_reservation))
        put(self, "memory_swap", _size_or_unlimited("memory_swap", self.memory_swap))
        memory = size_of(self.memory)
        if memory is not None and memory < 4096 * 64:
            raise ConfigError("memory", self.memory, "is too small (minimum 256K)")
        if (self.memory_swap not in (None, -1) and self.memory is not None
                and self.memory_swap < self.memory):  # type: ignore[operator]
            raise ConfigError("memory_swap", self.memory_swap, "must be at least memory (it includes it)")
        _int_in_range("cpu_shares", self.cpu_shares, 2, 262144)
        if self.cpus is not None:
            if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) \
                    or not math.isfinite(self.cpus) or self.cpus < 0.01:
                raise ConfigError("cpus", self.cpus, "must be a number of CPUs of at least 0.01")
            put(self, "cpus", float(self.cpus))
        put(self, "cpuset_cpus", _cpuset("cpuset_cpus", self.cpuset_cpus))
        put(self, "cpuset_mems", _cpuset("cpuset_mems", self.cpuset_mems))
        _int_in_range("pids", self.pids, 1)
        _int_in_range("io_weight", self.io_weight, 10, 1000)
        self._check_cpu()
        _int_in_range("memory_swappiness", self.memory_swappiness, 0, 100)
        put(self, "memory_kernel_tcp", _size_or_unlimited("memory_kernel_tcp", self.memory_kernel_tcp))
        _flag("memory_oom_kill_disable", self.memory_oom_kill_disable)
        _int_in_range("io_leaf_weight", self.io_leaf_weight, 10, 1000)
        put(self, "io_weight_devices", _weight_devices("io_weight_devices", self.io_weight_devices))
        for name in ("io_throttle_read_bps", "io_throttle_write_bps", "io_throttle_read_iops",
                     "io_throttle_write_iops"):
            put(self, name, _rates(name, getattr(self, name)))
        put(self, "hugetlb", _hugetlb(self.hugetlb))
        _int_in_range("net_cls_classid", self.net_cls_classid, 0, _U32)
        put(self, "net_prio_ifpriomap", _ifpriomap(self.net_prio_ifpriomap))
        put(self, "unified", _unified(self.unified))

    def _check_cpu(self) -> None:
        # The kernel's bounds for the CFS period (1 ms .. 1 s) and its minimum quota (1 ms).
        _int_in_range("cpu_period_us", self.cpu_period_us, 1000, 1_000_000)
        if self.cpu_quota_us != -1:
            _int_in_range("cpu_quota_us", self.cpu_quota_us, 1000)
        if self.cpus is not None and self.cpu_quota_us is not None:
            raise ConfigError("cpu_quota_us", self.cpu_quota_us,
                              "cannot be set with cpus (cpus is the quota per period, in CPUs)")
        _int_in_range("cpu_burst_us", self.cpu_burst_us, 0)
        _flag("cpu_idle", self.cpu_idle)
        _int_in_range("cpu_rt_period_us", self.cpu_rt_period_us, 1)
        if self.cpu_rt_runtime_us != -1:
            _int_in_range("cpu_rt_runtime_us", self.cpu_rt_runtime_us, 0)
        if (self.cpu_rt_runtime_us is not None and self.cpu_rt_period_us is not None
                and self.cpu_rt_runtime_us > self.cpu_rt_period_us):
            raise ConfigError("cpu_rt_runtime_us", self.cpu_rt_runtime_us,
                              f"must not be above cpu_rt_period_us ({self.cpu_rt_period_us})")

    def cfs_bandwidth(self) -> Tuple[Optional[int], Optional[int]]:
        """(period, quota) in µs to write, None where unset: ``cpus`` becomes a
        quota of ``cpus * period`` (the default period 100000 unless
        ``cpu_period_us`` is set); quota -1 is unlimited."""
        if self.cpus is not None:
            period = self.cpu_period_us or 100_000
            return period, max(1000, round(self.cpus * period))  # rounded: int(0.29 * 100000) is 28999
        return self.cpu_period_us, self.cpu_quota_us

    def is_empty(self) -> bool:
        """True when no limit at all is set."""
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)
