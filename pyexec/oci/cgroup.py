"""Where an OCI container's cgroup is, and the container-wide cgroup acts.

``linux.cgroupsPath`` names the cgroup: an absolute path is taken from the
root of each hierarchy (runc's cgroupfs rule), a relative one too (runc
joins it under the root as well), none means ``pyexec-oci/<id>``. With
``--systemd-cgroup`` the path is ``slice:prefix:name``: where no systemd
runs to ask, it is mapped to the cgroupfs path systemd itself would use
(``machine.slice:libpod:abc`` -> ``machine.slice/libpod-abc.scope``; a slice
``a-b.slice`` lives in ``a.slice/a-b.slice``). The path is split into the
library's (parent, name) so that pyexec's cgroup manager makes, fills,
freezes, kills and removes it.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

from ..cgroups import CgroupManager, new_manager
from ..config import Resources
from ..errors import ConfigError

__all__ = ["cgroup_location", "systemd_to_cgroupfs", "open_cgroup", "container_cgroup"]

DEFAULT_PARENT = "pyexec-oci"


def systemd_to_cgroupfs(spec: str, container_id: str) -> str:
    """The cgroupfs path of a systemd ``slice:prefix:name`` cgroupsPath."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise ConfigError("linux.cgroupsPath", spec, "is not slice:prefix:name (--systemd-cgroup)")
    slice_name, prefix, name = parts
    slice_name = slice_name or "system.slice"
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ConfigError("linux.cgroupsPath", spec, "names no systemd slice (like machine.slice)")
    # systemd nests a-b-c.slice as a.slice/a-b.slice/a-b-c.slice.
    stem = slice_name[: -len(".slice")]
    pieces = stem.split("-") if stem != "-" else []
    path = "/".join("-".join(pieces[: i + 1]) + ".slice" for i in range(len(pieces)))
    unit = name if name.endswith((".scope", ".slice")) else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return f"{path}/{unit}" if path else unit


def cgroup_location(cgroups_path: Optional[str], container_id: str, systemd: bool) -> Tuple[str, str]:
    """(parent, name) of the container's cgroup below each hierarchy's root."""
    if systemd and cgroups_path:
        path = systemd_to_cgroupfs(cgroups_path, container_id)
    elif cgroups_path:
        path = cgroups_path
    else:
        path = f"{DEFAULT_PARENT}/{container_id}"
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ConfigError("linux.cgroupsPath", cgroups_path, "is not a cgroup path")
    # "" as the parent: the root of each hierarchy (an absolute one-level path).
    return "/".join(parts[:-1]), parts[-1]


def open_cgroup(parent: str, name: str, resources: Optional[Resources] = None) -> CgroupManager:
    """A manager of the container's cgroup (nothing is made until ``create``)."""
    return new_manager(name, resources if resources is not None else Resources(), parent=parent)


def container_cgroup(location: Mapping[str, str], adopt: bool = False) -> Optional[CgroupManager]:
    """The manager of a recorded container's cgroup (its record's ``{"parent",
    "name"}``), None when it has none or it is gone. ``adopt``: take it over
    with its limits, for a change of them or a process placed into it."""
    if not location:
        return None
    manager = open_cgroup(location["parent"], location["name"])
    if not manager.exists():
        return None
    if adopt:
        manager.adopt()
    return manager
