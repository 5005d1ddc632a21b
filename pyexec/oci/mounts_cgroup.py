"""A config.json mount of ``type: cgroup`` as the host's cgroup layout, for mounts.py's plan.

runtime-spec leaves what "cgroup" mounts to the runtime; runc's reading:

* cgroup v2 only (/sys/fs/cgroup is a cgroup2 mount): one cgroup2 mount;
  with a cgroup namespace it shows the container's own cgroup at its top.
* cgroup v1 (or hybrid): a tmpfs at the destination with one directory per
  hierarchy the host mounts under /sys/fs/cgroup (``cpu,cpuacct``,
  ``memory``, ``systemd``...; not a hybrid host's controller-less
  ``unified``, as in runc). With a cgroup namespace each is
  a new mount of that hierarchy (which shows the container's cgroup at its
  top); without one each is a bind of the container's own cgroup directory
  in that hierarchy (``cgroup_path`` below the hierarchy's root; left empty
  where the container has none), so the container sees its cgroup and
  nothing above it either way. A
  co-mounted hierarchy also gets a symlink per controller (``cpu ->
  cpu,cpuacct``). With ``ro`` the hierarchies are read-only, and so is the
  tmpfs once it is filled (mounts.py remounts it before pivot_root).

The hierarchies come from pyexec.cgroups.mounts (the host's mountinfo).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from ..cgroups.mounts import MountEntry
from ..errors import ConfigError
from ..native import lib
from ..rootfs import MountOp
from .mount_options import BIND_FLAGS
from .spec import OciMount

__all__ = ["cgroup_ops", "CGROUP_ROOT"]

CGROUP_ROOT = "/sys/fs/cgroup"
# Super options of a v1 hierarchy that are not the hierarchy's name: left out when mounting it again.
_NOT_A_NAME = ("rw", "ro")


def _host_dir(entry: MountEntry, cgroup_path: str, where: str) -> str:
    """The host directory of ``cgroup_path`` in the hierarchy mounted as ``entry``."""
    path = "/" + cgroup_path.strip("/")
    root = entry.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        raise ConfigError(where, cgroup_path, f"is not below {entry.root!r}, the top of {entry.mountpoint}")
    return os.path.normpath(entry.mountpoint + path[len(root):])


def cgroup_ops(target: str, mount: OciMount, entries: Sequence[MountEntry], cgroupns: bool,
               cgroup_path: Optional[str], where: str) -> List[MountOp]:
    """The ops that put the host's cgroup layout at ``target`` (a host path, its directory made);
    ``where`` names the mount in errors (``mounts[6]``)."""
    flags = mount.parsed.flags
    mine = [e for e in entries if os.path.dirname(e.mountpoint) == CGROUP_ROOT or e.mountpoint == CGROUP_ROOT]
    if any(e.fstype == "cgroup2" and e.mountpoint == CGROUP_ROOT for e in mine):
        return [MountOp(lib.PX_OP_MOUNT, target, source=mount.source or "cgroup2", fstype="cgroup2", flags=flags)]
    # A hybrid host's cgroup2 (/sys/fs/cgroup/unified) has no controllers: left out, as runc does.
    hierarchies = [e for e in mine if e.mountpoint != CGROUP_ROOT and e.fstype == "cgroup"]
    if not hierarchies:
        raise ConfigError(where + ".type", mount.type, f"needs cgroup hierarchies under {CGROUP_ROOT}; "
                          "this host mounts none there")
    if not cgroupns and cgroup_path is None:
        raise ValueError("mount_plan: a cgroup mount without a cgroup namespace on a cgroup v1 host "
                         "needs the container's cgroup_path")
    per_mount = (flags & BIND_FLAGS) & ~lib.MS_RDONLY
    # Read-only (if the mount says ro) only once filled: mounts.py defers that to before pivot_root.
    ops = [MountOp(lib.PX_OP_MOUNT, target, source="tmpfs", fstype="tmpfs", flags=flags, data="mode=755")]
    names = []
    for entry in hierarchies:
        name = os.path.basename(entry.mountpoint)
        names.append(name)
        sub = f"{target}/{name}"
        ops.append(MountOp(lib.PX_OP_MKDIR, sub))
        if cgroupns:
            data = ",".join(o for o in entry.options if o not in _NOT_A_NAME and not o.startswith("release_agent="))
            ops.append(MountOp(lib.PX_OP_MOUNT, sub, source=mount.source or "cgroup", fstype="cgroup",
                               flags=per_mount, data=data))
            if mount.parsed.readonly:
                ops.append(MountOp(lib.PX_OP_REMOUNT, sub, flags=lib.MS_RDONLY | per_mount))
        else:
            assert cgroup_path is not None
            # Optional: the container has a cgroup only in the hierarchies its manager joins (pyexec's v1
            # manager skips name=systemd, and cpuset without cpuset limits); the others stay empty.
            ops.append(MountOp(lib.PX_OP_BIND, sub, source=_host_dir(entry, cgroup_path, where), flags=per_mount,
                               bind_flags=lib.PX_BIND_OPTIONAL | (lib.PX_BIND_RDONLY if mount.parsed.readonly else 0)))
    for name in names:
        for controller in name.split(",") if "," in name else ():
            if controller not in names:
                ops.append(MountOp(lib.PX_OP_SYMLINK, f"{target}/{controller}", source=name))
    return ops
