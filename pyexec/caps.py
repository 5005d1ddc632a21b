"""Capability names and sets: parsing user input into kernel bit masks.

Names and numbers come from libcap (linked into the shim), so no capability
number is written down here; only Docker's default *choice* of names is.
Importing this module loads the shim (Linux only): pyexec.config, which must
import anywhere, imports it only where it parses capability names.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Set, Tuple

from .errors import ConfigError
from .native import ffi, lib

__all__ = ["DEFAULT_CAPABILITIES", "parse_capabilities", "capability_mask", "last_cap", "names_of_mask"]

# Docker's default set for a container's root user.
DEFAULT_CAPABILITIES: Tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


@lru_cache(maxsize=None)
def last_cap() -> int:
    """The highest capability number this kernel knows (libcap asks the kernel)."""
    return int(lib.cap_max_bits()) - 1


@lru_cache(maxsize=None)
def _number(name: str) -> int:
    value = ffi.new("cap_value_t *")
    if lib.cap_from_name(name.lower().encode(), value) != 0 or value[0] > last_cap():
        raise ConfigError("capabilities", name, "is not a capability this kernel knows")
    return int(value[0])


def parse_capabilities(names: Iterable[str]) -> Tuple[str, ...]:
    """Canonical, sorted ``CAP_*`` names; accepts "net_bind_service", "CAP_KILL", "ALL"."""
    out: Set[str] = set()
    for raw in names:
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError("capabilities", raw, "is not a capability name")
        name = raw.strip().upper()
        if name == "ALL":
            out.update(names_of_mask((1 << (last_cap() + 1)) - 1))
            continue
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        _number(name)
        out.add(name)
    return tuple(sorted(out, key=_number))


def capability_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << _number(name)
    return mask


@lru_cache(maxsize=64)  # a mask's names never change; every launch asks for the same few
def names_of_mask(mask: int) -> Tuple[str, ...]:
    out = []
    for cap in range(last_cap() + 1):
        if mask >> cap & 1:
            ptr = lib.cap_to_name(cap)
            out.append(ffi.string(ptr).decode().upper())
            lib.cap_free(ptr)
    return tuple(out)
