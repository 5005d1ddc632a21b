"""The container's mount plan: ``mount_plan(config, rootfs) -> List[MountOp]``, run in order by the shim.

The order is runc's rootfs set-up, as ops of csrc/mounts.c (the MountOp of
pyexec/rootfs.py, whose host-mirror plan is the library's other layout):

1. ``/`` becomes a slave tree, recursively: nothing mounted from here on
   reaches the host, while the host's later mounts below a bind's source
   still show (so a bind's ``rslave`` means what it says; runc's default).
2. The rootfs is bound on itself (recursively), to be a mount point.
3. ``mounts[]`` in order: the destination resolved inside the root
   (rootpath.py), the missing directories made one by one, then a bind
   (its per-mount flags applied by the shim's bind remount) or a file
   system mount (flags from the options, the rest as its data), then the
   propagation changes its options name. ``type: cgroup`` becomes the
   host's layout (mounts_cgroup.py).
4. Unless ``/dev`` is a bind mount (the host's /dev, say): runc's default
   devices (null, zero, full, random, urandom, tty) and ``linux.devices``,
   made with mknod (bound from the host instead in a user namespace, where
   mknod is refused), then /dev/ptmx -> pts/ptmx and the /dev/fd, stdin,
   stdout, stderr links into /proc/self/fd.
5. Read-only tmpfs and bind mounts that something was made in are made
   read-only only now (a read-only /dev would refuse its devices).
6. pivot_root into the rootfs; then ``linux.rootfsPropagation`` on ``/``,
   ``readonlyPaths`` read-only, ``maskedPaths`` hidden, and last
   ``root.readonly``: ``/`` remounted read-only.

Nothing is made here: every error (a destination through a file, a symlink
loop) is a ConfigError naming the config value, raised before the plan runs.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from ..cgroups.mounts import MountEntry, cgroup_mounts
from ..errors import ConfigError
from ..native import lib
from ..rootfs import MountOp
from .jsonpath import item
from .mount_options import BIND_FLAGS, PROPAGATION_FLAGS
from .mounts_cgroup import cgroup_ops
from .rootpath import Kind, Node, Resolved, host_node, host_path, resolve_in_root
from .spec import OciConfig, OciMount
from .spec_linux import OciDevice

__all__ = ["mount_plan", "encode_dev", "DEFAULT_DEVICES", "DEV_LINKS"]

#: The devices every container gets (runc's; runtime-spec config-linux.md "Default Devices").
DEFAULT_DEVICES: Tuple[OciDevice, ...] = tuple(
    OciDevice("c", f"/dev/{name}", major, minor, 0o666, None, None)
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)))
#: (link, target) of the /dev symlinks runtime-spec's runtime-linux.md asks for.
DEV_LINKS = (("/dev/ptmx", "pts/ptmx"), ("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
             ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"))

_FILE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
# File systems that come up empty and take new entries: a read-only one of
# these (or a read-only bind) that gets directories or nodes made in it is
# made read-only after them. Others (proc, sysfs, cgroup...) have fixed
# contents: a mkdir there only ever meets an existing directory.
_WRITABLE_FS = ("tmpfs", "ramfs")
# SELinux's context= is refused by these (runc gives them none either).
_NO_CONTEXT_FS = ("proc", "sysfs", "mqueue", "cgroup", "cgroup2")


def encode_dev(major: int, minor: int) -> int:
    """The kernel's new_encode_dev(major, minor), as the C int of px_mount_op.bind_flags
    (two's complement above 2**31 - 1: the shim reads it back as unsigned)."""
    value = (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass(frozen=True)
class _Layer:
    """A mount the plan has made by now: at ``path`` (in the container), a bind
    of ``source`` (host path) or, ``source`` None, a new file system."""

    path: str
    source: Optional[str]
    is_dir: bool


class _View:
    """The container's tree as it will be when the next op runs: the rootfs
    on the host with the plan's mounts on top. It is the resolver's probe."""

    def __init__(self, rootfs: str) -> None:
        self.rootfs = rootfs
        self.layers: List[_Layer] = []
        self.made: Dict[str, int] = {}  # directory the plan makes -> how many layers there were then

    def add(self, path: str, source: Optional[str], is_dir: bool) -> None:
        self.layers.append(_Layer(path, source, is_dir))

    def mkdir(self, path: str) -> None:
        self.made[path] = len(self.layers)

    def probe(self, path: str) -> Node:
        # The last mount over a path is what shows there; a directory made on it
        # shows unless a mount came over it since.
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if path == layer.path:
                return Node(Kind.DIR if layer.is_dir else Kind.OTHER)
            if path.startswith(layer.path + "/"):
                if self.made.get(path, -1) > index:
                    return Node(Kind.DIR)
                if layer.source is None:
                    return Node(Kind.MISSING)  # a new file system: nothing the plan relies on is in it yet
                return host_node(layer.source + path[len(layer.path):])
        if path in self.made:
            return Node(Kind.DIR)
        return host_node(host_path(self.rootfs, path))


class _Plan:
    """Builds the ops before pivot_root (steps 2-5 of the module's docstring)."""

    def __init__(self, config: OciConfig, rootfs: str, cgroup_path: Optional[str],
                 entries: Sequence[MountEntry]) -> None:
        self.config = config
        self.rootfs = rootfs
        self.cgroup_path = cgroup_path
        self.entries = entries
        self.view = _View(rootfs)
        self.ops: List[MountOp] = []
        self.read_only_later: List[Tuple[int, int]] = []  # (index in ops, flags of the remount)
        self.dev_is_bound = False

    def target(self, path: str, field: str, follow_last: bool = True, make_last: bool = True) -> Resolved:
        """Resolve ``path``, plan the directories it lacks (all, or all but the last); the host path is
        host_path(rootfs, resolved.path)."""
        resolved = resolve_in_root(path, self.view.probe, field, follow_last)
        for missing in resolved.missing if make_last else resolved.missing[:-1]:
            self.ops.append(MountOp(lib.PX_OP_MKDIR, host_path(self.rootfs, missing)))
            self.view.mkdir(missing)
        return resolved

    def mount(self, index: int, mount: OciMount) -> None:
        field = f"mounts[{index}].destination"
        resolved = self.target(mount.destination, field, make_last=not mount.bind)
        if resolved.path == "/":
            raise ConfigError(field, mount.destination, "is the container's root (root.path is mounted there)")
        target = host_path(self.rootfs, resolved.path)
        parsed = mount.parsed
        first = len(self.ops)
        if mount.bind:
            assert mount.source is not None  # spec.py requires a bind's source
            bind_flags = (lib.PX_BIND_RECURSIVE if parsed.recursive else 0) | \
                (lib.PX_BIND_RDONLY if parsed.readonly else 0)
            # data: the words a bind has no use for, as runc passes them (the shim and the kernel ignore them).
            self.ops.append(MountOp(lib.PX_OP_BIND, target, source=mount.source, data=parsed.data,
                                    flags=parsed.flags & BIND_FLAGS & ~lib.MS_RDONLY, bind_flags=bind_flags))
            self.view.add(resolved.path, mount.source, os.path.isdir(mount.source))
            if resolved.path == "/dev":
                self.dev_is_bound = True
        else:
            assert mount.type is not None  # spec.py requires the type of a mount that is not a bind
            if resolved.kind is Kind.OTHER:
                raise ConfigError(field, mount.destination, f"is a file ({resolved.path}): a {mount.type} "
                                  "file system is mounted on a directory")
            if mount.type == "cgroup":
                self.ops += cgroup_ops(target, mount, self.entries, self.config.linux.new_namespace("cgroup"),
                                       self.cgroup_path, f"mounts[{index}]")
            else:
                self.ops.append(MountOp(lib.PX_OP_MOUNT, target, source=mount.source or mount.type,
                                        fstype=mount.type, flags=parsed.flags, data=self._data(mount)))
            self.view.add(resolved.path, None, True)
        if parsed.readonly and (mount.bind or self.ops[first].fstype in _WRITABLE_FS):
            self.read_only_later.append((first, lib.MS_RDONLY | (parsed.flags & BIND_FLAGS)))
        self.ops += [MountOp(lib.PX_OP_MOUNT, target, flags=flags) for flags in parsed.propagation]

    def _data(self, mount: OciMount) -> Optional[str]:
        label = self.config.linux.mount_label
        if label is None or mount.type in _NO_CONTEXT_FS:
            return mount.parsed.data
        return ",".join(filter(None, (mount.parsed.data, f'context="{label}"')))

    def devices(self) -> None:
        linux = self.config.linux
        named = {device.path for device in linux.devices}
        userns = linux.namespace("user") is not None
        defaults = [(d, "linux.devices", True) for d in DEFAULT_DEVICES if d.path not in named]
        listed = [(d, item("linux.devices", i) + ".path", False) for i, d in enumerate(linux.devices)]
        for device, field, default in defaults + listed:
            resolved = self.target(device.path, field, follow_last=False, make_last=False)
            if resolved.kind is Kind.DIR:
                raise ConfigError(field, device.path, "is a directory")
            target = host_path(self.rootfs, resolved.path)
            if userns:  # mknod is refused in a user namespace: the host's node, bound
                self.ops.append(MountOp(lib.PX_OP_BIND, target, source=device.path,
                                        bind_flags=lib.PX_BIND_OPTIONAL if default else 0))
                continue
            mode = _FILE_TYPES[device.type] | (0o666 if device.file_mode is None else device.file_mode)
            number = 0 if device.type == "p" else encode_dev(device.major, device.minor)
            self.ops.append(MountOp(lib.PX_OP_MKNOD, target, flags=mode, bind_flags=number))
            if device.uid is not None or device.gid is not None:
                uid = 0xffffffff if device.uid is None else device.uid  # -1: lchown leaves it
                gid = 0xffffffff if device.gid is None else device.gid
                self.ops.append(MountOp(lib.PX_OP_CHOWN, target, flags=uid << 32 | gid))
        for link, dest in DEV_LINKS:
            if link not in named:
                resolved = self.target(link, "linux.devices", follow_last=False, make_last=False)
                self.ops.append(MountOp(lib.PX_OP_SYMLINK, host_path(self.rootfs, resolved.path), source=dest))

    def finish_read_only(self) -> None:
        """Step 5: a read-only mount that later ops made something in is mounted writable, then remounted."""
        for index, flags in self.read_only_later:
            op = self.ops[index]
            inside = op.target.rstrip("/") + "/"
            if not any(later.target.startswith(inside) for later in self.ops[index + 1:]):
                continue
            self.ops[index] = replace(op, flags=op.flags & ~lib.MS_RDONLY, bind_flags=op.bind_flags &
                                      ~lib.PX_BIND_RDONLY) if op.kind == lib.PX_OP_BIND else \
                replace(op, flags=op.flags & ~lib.MS_RDONLY)
            self.ops.append(MountOp(lib.PX_OP_REMOUNT, op.target, flags=flags))


def mount_plan(config: OciConfig, rootfs: str, cgroup_path: Optional[str] = None,
               cgroup_entries: Optional[Sequence[MountEntry]] = None) -> List[MountOp]:
    """The ops that set up the container's mount namespace, in order (see the module's docstring).

    ``rootfs`` is the absolute host path of the root (normally
    ``config.root.path``). ``cgroup_path`` is the container's cgroup below
    each hierarchy's root ("/pyexec/<id>"): a ``cgroup`` mount on a cgroup
    v1 host without a cgroup namespace binds those directories.
    ``cgroup_entries`` are the host's cgroup mounts (default: this
    process's). A mount namespace joined by path gets the same set-up as a new
    one (runc's rule): the container's root is the bundle's in either case.
    """
    linux = config.linux
    mnt = linux.namespace("mount")
    if mnt is None:
        raise ConfigError("linux.namespaces", [ns.type for ns in linux.namespaces],
                          "has no mount namespace: the container's root is set up in one of its own")
    rootfs = os.path.normpath(rootfs)
    plan = _Plan(config, rootfs, cgroup_path, cgroup_mounts() if cgroup_entries is None else cgroup_entries)
    plan.ops += [MountOp(lib.PX_OP_MOUNT, "/", flags=lib.MS_SLAVE | lib.MS_REC),
                 MountOp(lib.PX_OP_BIND, rootfs, source=rootfs, bind_flags=lib.PX_BIND_RECURSIVE)]
    for index, mount in enumerate(config.mounts):
        plan.mount(index, mount)
    if not plan.dev_is_bound:
        plan.devices()
    plan.finish_read_only()
    ops = plan.ops + [MountOp(lib.PX_OP_PIVOT, rootfs)]
    if linux.rootfs_propagation is not None:
        ops.append(MountOp(lib.PX_OP_MOUNT, "/", flags=PROPAGATION_FLAGS[linux.rootfs_propagation]))
    ops += [MountOp(lib.PX_OP_READONLY, path) for path in linux.readonly_paths]
    ops += [MountOp(lib.PX_OP_MASK, path) for path in linux.masked_paths]
    if config.root.readonly:
        ops.append(MountOp(lib.PX_OP_REMOUNT, "/", flags=lib.MS_RDONLY))
    return ops
