"""The io (v1: blkio) controller: the ``io_weight`` limit (10..1000).

v1: blkio.weight (CFQ, kernels before 5.0) or blkio.bfq.weight (BFQ), a plain
number. v2: io.weight ("default N", needs blk-iocost or CFQ) or io.bfq.weight
(BFQ). Which one exists depends on the kernel's I/O schedulers, so the file
is chosen at run time and a host with neither gets a ConfigError.

Stats (bytes that reached a block device): v1 blkio.throttle.io_service_bytes_recursive
("MAJ:MIN Read N" lines; the throttle files count every bio whatever the
scheduler), v2 io.stat ("MAJ:MIN rbytes=N wbytes=N ...", io controller enabled).
Since kernel 6.12 blk-throttle is set up on a disk's queue only when a first
throttle rule is configured for it, and v1 counts nothing before; so
``enable_io_accounting_v1`` configures a rule on every disk once and removes
it again (the setup stays; no rule is left in force).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional, Set

from ..config import Resources
from ..errors import ConfigError
from ..stats.usage import IoUsage
from .fscommon import read_text, write_text, write_value

__all__ = ["weight_file_v1", "check_io_v1", "set_io_v1", "stat_io_v1", "parse_service_bytes_v1",
           "enable_io_accounting_v1",
           "weight_file_v2", "check_io_v2", "set_io_v2", "stat_io_v2", "parse_io_stat_v2"]

log = logging.getLogger(__name__)

_V1_FILES = ("blkio.weight", "blkio.bfq.weight")
_V2_FILES = ("io.weight", "io.bfq.weight")


def _first(path: str, names: "tuple[str, ...]") -> Optional[str]:
    for name in names:
        if os.path.exists(os.path.join(path, name)):
            return name
    return None


def _weight_file(path: str, res: Resources, controller: str, names: "tuple[str, ...]") -> str:
    """The weight file present in ``path``; a ConfigError naming the controller when none is."""
    name = _first(path, names)
    if name is None:
        raise ConfigError("io_weight", res.io_weight,
                          f"needs {' or '.join(names)} of the '{controller}' cgroup controller, which this "
                          f"host does not provide in {path} (no CFQ/BFQ/iocost I/O scheduler support)")
    return name


def weight_file_v1(path: str) -> Optional[str]:
    """The name of the v1 weight file present in ``path``, or None."""
    return _first(path, _V1_FILES)


def check_io_v1(path: str, res: Resources) -> None:
    """Raise ConfigError when io_weight is set and no v1 weight file exists."""
    if res.io_weight is not None:
        _weight_file(path, res, "blkio", _V1_FILES)


def set_io_v1(path: str, res: Resources) -> None:
    """Write the io weight to blkio.weight or blkio.bfq.weight."""
    if res.io_weight is not None:
        name = _weight_file(path, res, "blkio", _V1_FILES)
        write_value(os.path.join(path, name), res.io_weight, "io_weight", res.io_weight)


_accounted_disks: Set[str] = set()
_accounting_lock = threading.Lock()


def _new_accounting_lock() -> None:
    # The same after a fork: a lock held by another thread at fork time would never be released.
    global _accounting_lock
    _accounting_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_accounting_lock)


def enable_io_accounting_v1(path: str, sys_block: str = "/sys/block") -> None:
    """Make blk-throttle set up every disk's queue so the v1 throttle stats
    count: write a read_bps rule for each disk into the blkio cgroup ``path``
    and remove it at once ("MAJ:MIN 0"). Done once per disk name per process;
    disks that refuse (no queue, not a whole disk) are skipped."""
    with _accounting_lock:
        try:
            disks = os.listdir(sys_block)
        except FileNotFoundError:
            return
        # Known disks are skipped by name: a launch lists /sys/block and reads
        # nothing more (nor looks for the rule file) unless a disk appeared since.
        new = [disk for disk in disks if disk not in _accounted_disks]
        rule = os.path.join(path, "blkio.throttle.read_bps_device")
        if not new or not os.path.exists(rule):
            return
        for disk in new:
            try:
                dev = read_text(os.path.join(sys_block, disk, "dev"))
            except OSError:
                continue
            _accounted_disks.add(disk)
            try:
                for value in ("1099511627776", "0"):  # 1 TiB/s, then "no rule"
                    write_text(rule, f"{dev} {value}")
            except OSError as exc:
                log.debug("no blk-throttle accounting for %s (%s): %s", disk, dev, exc)


def parse_service_bytes_v1(text: str) -> IoUsage:
    """Sum the Read and Write lines of every device (the "Total" line is skipped)."""
    read = write = 0
    for line in text.splitlines():
        if "Read" not in line and "Write" not in line:
            continue  # most lines (Sync, Async, Discard, Total of every disk): not split for nothing
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("Read", "Write") and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            else:
                write += int(parts[2])
    return IoUsage(read_bytes=read, write_bytes=write)


def stat_io_v1(path: Optional[str]) -> IoUsage:
    """Block I/O of a v1 blkio cgroup and its descendants; all None without one."""
    if path is None:
        return IoUsage()
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        try:
            return parse_service_bytes_v1(read_text(os.path.join(path, name)))
        except FileNotFoundError:
            continue
    return IoUsage()


def parse_io_stat_v2(text: str) -> IoUsage:
    """Sum rbytes and wbytes over the devices of a v2 io.stat."""
    read = write = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return IoUsage(read_bytes=read, write_bytes=write)


def stat_io_v2(path: str) -> IoUsage:
    """Block I/O of a v2 cgroup (hierarchical); all None without the io controller."""
    try:
        return parse_io_stat_v2(read_text(os.path.join(path, "io.stat")))
    except FileNotFoundError:
        return IoUsage()


def weight_file_v2(path: str) -> Optional[str]:
    """The name of the v2 weight file present in ``path``, or None."""
    return _first(path, _V2_FILES)


def check_io_v2(path: str, res: Resources) -> None:
    """Raise ConfigError when io_weight is set and no v2 weight file exists."""
    if res.io_weight is not None:
        _weight_file(path, res, "io", _V2_FILES)


def set_io_v2(path: str, res: Resources) -> None:
    """Write the io weight: io.weight takes "default N", io.bfq.weight a plain N."""
    if res.io_weight is not None:
        name = _weight_file(path, res, "io", _V2_FILES)
        text = f"default {res.io_weight}" if name == "io.weight" else str(res.io_weight)
        write_value(os.path.join(path, name), text, "io_weight", res.io_weight)
