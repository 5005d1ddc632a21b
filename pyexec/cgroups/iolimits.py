"""Per-device I/O limits of the io (v1: blkio) controller: io_leaf_weight,
io_weight_devices and the io_throttle_* rates, for cgroup v1 and v2.

v1: blkio.leaf_weight and blkio.leaf_weight_device (CFQ only, gone with CFQ
in 5.0), blkio.weight_device (CFQ) or blkio.bfq.weight_device (BFQ), one
"MAJ:MIN weight" per write; blkio.throttle.{read,write}_{bps,iops}_device,
"MAJ:MIN rate" per write (rate 0 removes the device's rule).
v2: io.weight (iocost) or io.bfq.weight (BFQ) take "MAJ:MIN weight";
io.max takes one line per device, "MAJ:MIN rbps=N wbps=N riops=N wiops=N"
with "max" for no limit (what a rate of 0 becomes). Leaf weights have no
v2 file (v2.py refuses them).
Which weight file exists depends on the kernel's I/O schedulers, so it is
looked for at run time; none is a ConfigError naming the files.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import Resources
from ..errors import ConfigError
from .fscommon import require_file, write_values

__all__ = ["THROTTLE_FIELDS", "check_iolimits_v1", "set_iolimits_v1", "check_iolimits_v2", "set_iolimits_v2",
           "io_max_lines_v2", "leaf_weight_devices"]

#: Resources field -> (v1 file, v2 io.max key).
THROTTLE_FIELDS: Dict[str, Tuple[str, str]] = {
    "io_throttle_read_bps": ("blkio.throttle.read_bps_device", "rbps"),
    "io_throttle_write_bps": ("blkio.throttle.write_bps_device", "wbps"),
    "io_throttle_read_iops": ("blkio.throttle.read_iops_device", "riops"),
    "io_throttle_write_iops": ("blkio.throttle.write_iops_device", "wiops"),
}
_V1_WEIGHT_DEVICE = ("blkio.weight_device", "blkio.bfq.weight_device")
_V2_WEIGHT = ("io.weight", "io.bfq.weight")
_SCHEDULERS = "no CFQ/BFQ/iocost I/O scheduler support"


def _present(path: str, names: Sequence[str], controller: str, field_name: str, value: object) -> str:
    for name in names:
        if os.path.exists(os.path.join(path, name)):
            return name
    raise ConfigError(field_name, value,
                      f"needs {' or '.join(names)} of the '{controller}' cgroup controller, which this host "
                      f"does not provide in {path} ({_SCHEDULERS})")


def _weights(res: Resources) -> List[Tuple[int, int, int]]:
    return [(major, minor, weight) for major, minor, weight, _leaf in res.io_weight_devices or ()
            if weight is not None]


def _leaf_weights(res: Resources) -> List[Tuple[int, int, int]]:
    return [(major, minor, leaf) for major, minor, _weight, leaf in res.io_weight_devices or ()
            if leaf is not None]


# --------------------------------------------------------------------------- v1

def check_iolimits_v1(path: str, res: Resources) -> None:
    """Raise ConfigError for a per-device io field whose v1 control file is missing."""
    if res.io_leaf_weight is not None:
        require_file(path, "blkio.leaf_weight", "io_leaf_weight", res.io_leaf_weight, "blkio",
                     "CFQ only, not in kernels since 5.0")
    if _weights(res):
        _present(path, _V1_WEIGHT_DEVICE, "blkio", "io_weight_devices", res.io_weight_devices)
    if _leaf_weights(res):
        require_file(path, "blkio.leaf_weight_device", "io_weight_devices", res.io_weight_devices, "blkio",
                     "CFQ only, not in kernels since 5.0")
    for name, (filename, _key) in THROTTLE_FIELDS.items():
        if getattr(res, name) is not None:
            require_file(path, filename, name, getattr(res, name), "blkio",
                         "the kernel lacks CONFIG_BLK_DEV_THROTTLING")


def _write_devices(path: str, filename: str, entries: Sequence[Tuple[int, int, int]],
                   field_name: str) -> None:
    """One "MAJ:MIN value" write per device (the kernel parses one rule per write)."""
    items = [(f"{major}:{minor} {value}", field_name, (major, minor, value)) for major, minor, value in entries]
    write_values(os.path.join(path, filename), items)


def set_iolimits_v1(path: str, res: Resources) -> None:
    """Write the v1 leaf weight, per-device weights and throttle rules of ``res``."""
    if res.io_leaf_weight is not None:
        write_values(os.path.join(path, "blkio.leaf_weight"),
                     [(res.io_leaf_weight, "io_leaf_weight", res.io_leaf_weight)])
    if _weights(res):
        name = _present(path, _V1_WEIGHT_DEVICE, "blkio", "io_weight_devices", res.io_weight_devices)
        _write_devices(path, name, _weights(res), "io_weight_devices")
    if _leaf_weights(res):
        _write_devices(path, "blkio.leaf_weight_device", _leaf_weights(res), "io_weight_devices")
    for field_name, (filename, _key) in THROTTLE_FIELDS.items():
        rates = getattr(res, field_name)
        if rates:
            _write_devices(path, filename, rates, field_name)


# --------------------------------------------------------------------------- v2

def io_max_lines_v2(res: Resources) -> List[str]:
    """io.max lines for the throttle rates of ``res``, one per device, in the
    order devices first appear; a rate of 0 is "max" (no limit)."""
    by_device: Dict[Tuple[int, int], Dict[str, str]] = {}
    for field_name, (_filename, key) in THROTTLE_FIELDS.items():
        for major, minor, rate in getattr(res, field_name) or ():
            by_device.setdefault((major, minor), {})[key] = "max" if rate == 0 else str(rate)
    return [f"{major}:{minor} " + " ".join(f"{k}={v}" for k, v in keys.items())
            for (major, minor), keys in by_device.items()]


def _throttle_field(res: Resources) -> Tuple[str, object]:
    for name in THROTTLE_FIELDS:
        if getattr(res, name) is not None:
            return name, getattr(res, name)
    return "io_throttle_read_bps", None


def check_iolimits_v2(path: str, res: Resources) -> None:
    """Raise ConfigError for a per-device io field whose v2 control file is missing."""
    if _weights(res):
        _present(path, _V2_WEIGHT, "io", "io_weight_devices", res.io_weight_devices)
    if io_max_lines_v2(res):
        name, value = _throttle_field(res)
        require_file(path, "io.max", name, value, "io", "the kernel lacks CONFIG_BLK_DEV_THROTTLING")


def set_iolimits_v2(path: str, res: Resources) -> None:
    """Write "MAJ:MIN weight" lines to io.weight / io.bfq.weight and the io.max lines."""
    if _weights(res):
        name = _present(path, _V2_WEIGHT, "io", "io_weight_devices", res.io_weight_devices)
        _write_devices(path, name, _weights(res), "io_weight_devices")
    lines = io_max_lines_v2(res)
    if lines:
        field_name, value = _throttle_field(res)
        write_values(os.path.join(path, "io.max"), [(line, field_name, value) for line in lines])


def leaf_weight_devices(res: Resources) -> Optional[List[Tuple[int, int, int]]]:
    """The (major, minor, leaf_weight) entries of io_weight_devices, None when there are none."""
    return _leaf_weights(res) or None
