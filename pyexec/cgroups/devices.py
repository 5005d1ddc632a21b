"""The devices controller: which device nodes a container task may use.

v1: the task cgroup's list starts from "deny all" (devices.deny "a") and
allows runc's default set plus the requested nodes (devices.allow). v2 has
no control files for this: the kernel wants an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup, which pyexec does not load
yet; on v2 the rules are therefore NOT enforced, and a warning says so once
per process (the README says so too). The task's /dev holds only the allowed
nodes either way (see rootfs.py), and a node made with mknod on /dev is
useless on v1; on v2, nodev is what stops it.
"""
from __future__ import annotations

import logging
import os
import stat
from typing import List, NamedTuple, Optional, Sequence

from ..errors import ConfigError
from .base import write_value

__all__ = ["DeviceRule", "DEFAULT_DEVICE_RULES", "device_rule", "set_devices_v1", "set_devices_v2"]

log = logging.getLogger(__name__)


class DeviceRule(NamedTuple):
    """``kind`` "c" or "b"; None for major/minor means any ("*")."""

    kind: str
    major: Optional[int]
    minor: Optional[int]
    permissions: str

    def text(self) -> str:
        def part(number: Optional[int]) -> str:
            return "*" if number is None else str(number)
        return f"{self.kind} {part(self.major)}:{part(self.minor)} {self.permissions}"


#: runc's defaults: mknod of anything (a node is useless unless allowed below),
#: null zero full random urandom tty, ptmx and the pts of the task's devpts.
DEFAULT_DEVICE_RULES = (
    DeviceRule("c", None, None, "m"), DeviceRule("b", None, None, "m"),
    DeviceRule("c", 1, 3, "rwm"), DeviceRule("c", 1, 5, "rwm"), DeviceRule("c", 1, 7, "rwm"),
    DeviceRule("c", 1, 8, "rwm"), DeviceRule("c", 1, 9, "rwm"), DeviceRule("c", 5, 0, "rwm"),
    DeviceRule("c", 5, 2, "rwm"), DeviceRule("c", 136, None, "rwm"),
)


def device_rule(path: str, permissions: str) -> DeviceRule:
    """The rule for the host node at ``path`` (ConfigError if it is not one)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError("devices.path", path, f"cannot be used: {exc.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise ConfigError("devices.path", path, "is not a device node")
    return DeviceRule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), permissions)


def set_devices_v1(path: str, rules: Sequence[DeviceRule]) -> None:
    """Deny everything, then allow ``rules`` (cgroup v1 devices.deny / devices.allow)."""
    write_value(os.path.join(path, "devices.deny"), "a", "devices", "deny all")
    for rule in rules:
        write_value(os.path.join(path, "devices.allow"), rule.text(), "devices", rule.text())


_warned: List[bool] = []


def set_devices_v2(path: str, rules: Sequence[DeviceRule]) -> None:
    """Not enforced on cgroup v2 yet (needs an eBPF device program): say so once."""
    if not _warned:
        _warned.append(True)
        log.warning("cgroup v2: device rules are not enforced (no eBPF device program yet); "
                    "the task's /dev still holds only the allowed nodes")
