"""What only one cgroup version can express: the v2 ``unified`` files, and
the Resources fields cgroup v2 has no file for.

``unified`` maps a file of the task's v2 cgroup ("memory.high",
"pids.max") to the text written to it, after every other limit (so it can
refine them). The name was checked by Resources (no "/" or ".."); here the
file must exist in the cgroup, else a ConfigError names it (a controller
that is not enabled has no files). The controllers the names start with are
enabled down the path like those of the other limits.

v1-only fields on a v2 host are refused by name rather than left out:
realtime bandwidth, swappiness, kmem TCP, the OOM killer switch, leaf
weights, net_cls and net_prio.
"""
from __future__ import annotations

import os
from typing import List

from ..config import Resources
from ..errors import ConfigError
from .fscommon import write_value
from .iolimits import leaf_weight_devices

__all__ = ["V1_ONLY_FIELDS", "reject_v1_only", "unified_controllers", "check_unified_v2", "set_unified_v2"]

#: Resources field -> why cgroup v2 has no file for it.
V1_ONLY_FIELDS = {
    "cpu_rt_period_us": "realtime group scheduling is cgroup v1 only",
    "cpu_rt_runtime_us": "realtime group scheduling is cgroup v1 only",
    "memory_swappiness": "cgroup v2 has no per-cgroup swappiness",
    "memory_kernel_tcp": "cgroup v2 accounts TCP buffers in memory.max and has no separate limit",
    "io_leaf_weight": "leaf weights are cgroup v1 (CFQ) only",
    "net_cls_classid": "net_cls is cgroup v1 only (cgroup v2 uses eBPF for that)",
    "net_prio_ifpriomap": "net_prio is cgroup v1 only (cgroup v2 uses eBPF for that)",
}


def reject_v1_only(res: Resources) -> None:
    """A ConfigError for the first set field that cgroup v2 cannot express.
    memory_oom_kill_disable False is what v2 always does, so it passes."""
    for name, why in V1_ONLY_FIELDS.items():
        if getattr(res, name) is not None:
            raise ConfigError(name, getattr(res, name), f"has no cgroup v2 file ({why})")
    if res.memory_oom_kill_disable:
        raise ConfigError("memory_oom_kill_disable", True,
                          "has no cgroup v2 file (cgroup v2 cannot turn the OOM killer off)")
    if leaf_weight_devices(res):
        raise ConfigError("io_weight_devices", res.io_weight_devices,
                          "has a leaf_weight, which has no cgroup v2 file (leaf weights are cgroup v1 only)")


def unified_controllers(res: Resources) -> List[str]:
    """The controllers the ``unified`` file names start with ("memory.high" -> memory), core "cgroup." aside."""
    names = {key.split(".", 1)[0] for key in res.unified or {}}
    return sorted(names - {"cgroup"})


def check_unified_v2(path: str, res: Resources) -> None:
    """Raise ConfigError for a ``unified`` file the cgroup does not have."""
    for name, text in (res.unified or {}).items():
        if not os.path.isfile(os.path.join(path, name)):
            raise ConfigError(f"unified[{name}]", text,
                              f"names no file of {path} (is the '{name.split('.', 1)[0]}' controller enabled?)")


def set_unified_v2(path: str, res: Resources) -> None:
    """Write each ``unified`` value to its file."""
    for name, text in (res.unified or {}).items():
        write_value(os.path.join(path, name), text, f"unified[{name}]", text)
