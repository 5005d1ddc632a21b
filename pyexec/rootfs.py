"""The mount plan: what the task's root looks like, as a list of operations.

Python decides every path here, before the clone; the shim only runs the list
in order (csrc/mounts.c, ``px_run_mount_ops``). Two layouts:

* host-mirror root (``Isolation.rootfs is None``): a small tmpfs with the host's
  /bin /sbin /lib* /usr /etc bound read-only (symlinks such as /bin -> usr/bin
  are re-created, not followed), fresh /proc, a minimal /dev, read-only /sys,
  tmpfs /tmp, ``task_dir/local`` at /local; nothing is copied. The root itself
  ends read-only and host secrets under /etc are masked.
* a given ``rootfs`` directory, bound on itself and prepared the same way.

What a plan reads from the host (which of /bin, /lib, ... are symlinks, the
ssh host keys to mask) and the ops after pivot_root are kept while / and
/etc/ssh are unchanged (see ``_host_key``).
"""
from __future__ import annotations

import functools
import glob
import os
import time
from dataclasses import dataclass
from typing import FrozenSet, Hashable, List, Optional, Sequence, Tuple

from .config import Device, ExecCommand
from .native import lib

__all__ = ["MountOp", "plan_mounts", "HOST_MIRROR_DIRS", "HOST_SECRETS"]

HOST_MIRROR_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
HOST_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                "/etc/sudoers", "/etc/sudoers.d", "/etc/security/opasswd")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
             ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx"))

_NOSUID_NODEV_NOEXEC = lib.MS_NOSUID | lib.MS_NODEV | lib.MS_NOEXEC


@dataclass(frozen=True)
class MountOp:
    """One step of the plan; ``kind`` is a PX_OP_* constant from csrc/pyexec.h."""

    kind: int
    target: str
    source: Optional[str] = None
    fstype: Optional[str] = None
    flags: int = 0
    data: Optional[str] = None
    bind_flags: int = 0


def _mount(fstype: str, target: str, flags: int, data: Optional[str] = None) -> List[MountOp]:
    return [MountOp(lib.PX_OP_MKDIR, target),
            MountOp(lib.PX_OP_MOUNT, target, source=fstype, fstype=fstype, flags=flags, data=data)]


def _bind(source: str, target: str, readonly: bool, optional: bool = False) -> MountOp:
    bind_flags = lib.PX_BIND_RECURSIVE
    if readonly:
        bind_flags |= lib.PX_BIND_RDONLY
    if optional:
        bind_flags |= lib.PX_BIND_OPTIONAL
    return MountOp(lib.PX_OP_BIND, target, source=source, bind_flags=bind_flags)


def _host_secrets() -> List[str]:
    return list(HOST_SECRETS) + sorted(glob.glob("/etc/ssh/ssh_host_*key"))


def _kernel_filesystems(root: str, namespaces: FrozenSet[str], devices: Sequence[Device]) -> List[MountOp]:
    ops = _mount("proc", f"{root}/proc", _NOSUID_NODEV_NOEXEC)
    ops += _mount("tmpfs", f"{root}/dev", lib.MS_NOSUID | lib.MS_STRICTATIME, "mode=755,size=65536k")
    ops += [_bind(f"/dev/{node}", f"{root}/dev/{node}", readonly=False, optional=True) for node in DEV_NODES]
    for device in devices:  # the host's node at the same path
        parts = device.path.split("/")[2:-1]  # directories below /dev, e.g. net of /dev/net/tun
        ops += [MountOp(lib.PX_OP_MKDIR, f"{root}/dev/" + "/".join(parts[:i])) for i in range(1, len(parts) + 1)]
        ops.append(_bind(device.path, f"{root}{device.path}", readonly=False))
    ops += _mount("devpts", f"{root}/dev/pts", lib.MS_NOSUID | lib.MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620")
    ops += _mount("tmpfs", f"{root}/dev/shm", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k")
    if "ipc" in namespaces:
        ops += _mount("mqueue", f"{root}/dev/mqueue", _NOSUID_NODEV_NOEXEC)
    ops += [MountOp(lib.PX_OP_SYMLINK, f"{root}/dev/{name}", source=dest) for dest, name in DEV_LINKS]
    if "net" in namespaces:
        # A sysfs of our own shows only the task's network devices.
        ops += _mount("sysfs", f"{root}/sys", _NOSUID_NODEV_NOEXEC | lib.MS_RDONLY)
    else:
        ops += [MountOp(lib.PX_OP_MKDIR, f"{root}/sys"), _bind("/sys", f"{root}/sys", readonly=True)]
    ops += _mount("tmpfs", f"{root}/tmp", lib.MS_NOSUID | lib.MS_NODEV, "mode=1777")
    return ops


def _user_mounts(root: str, cmd: ExecCommand) -> List[MountOp]:
    ops = [MountOp(lib.PX_OP_MKDIR, f"{root}/local"),
           _bind(os.path.join(cmd.task_dir, "local"), f"{root}/local", readonly=False)]
    for mount in cmd.isolation.mounts:
        parts = mount.target.strip("/").split("/")
        for depth in range(1, len(parts)):
            ops.append(MountOp(lib.PX_OP_MKDIR, f"{root}/" + "/".join(parts[:depth])))
        ops.append(_bind(mount.source, f"{root}{mount.target}", readonly=mount.readonly))
    return ops


# What a host-mirror plan reads from the host: the entries of / (which of
# HOST_MIRROR_DIRS are directories, which symlinks and to where) and the host
# keys in /etc/ssh. A directory's mtime and ctime change when an entry is
# added, removed or renamed (the ctime also when the mtime is set by hand);
# one changed within the last _SETTLE_S seconds may change again without its
# (coarse) timestamps moving, so nothing read from it is reused until then.
_HOST_DIRS = ("/", "/etc/ssh")
_SETTLE_S = 2.0


def _host_key(now: float) -> Hashable:
    """A value that changes whenever what plan_mounts reads from the host may
    have; a new object (equal to no cached key) while that is unsure."""
    key: List[Optional[Tuple[int, int, int, int]]] = []
    for path in _HOST_DIRS:
        try:
            st = os.stat(path)
        except OSError:
            key.append(None)
            continue
        if now - max(st.st_mtime, st.st_ctime) < _SETTLE_S:
            return object()
        key.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(key)


@functools.lru_cache(maxsize=4)
def _host_mirror(host: Hashable) -> Tuple[Tuple[str, Optional[str]], ...]:
    """(name, symlink target or None for a directory) of each HOST_MIRROR_DIRS
    entry / has, as of ``host`` (see _host_key)."""
    found: List[Tuple[str, Optional[str]]] = []
    for name in HOST_MIRROR_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            found.append((name, os.readlink(path)))
        elif os.path.isdir(path):
            found.append((name, None))
    return tuple(found)


@functools.lru_cache(maxsize=16)
def _after_pivot(paths_to_mask: Tuple[str, ...], readonly_paths: Tuple[str, ...], readonly_root: bool,
                 host: Hashable) -> Tuple[MountOp, ...]:
    """The ops after pivot_root (masks, read-only paths and root), host
    secrets masked too when ``host`` is a _host_key. They name paths inside
    the task's root only, so the same ops serve every task alike."""
    if host is not None:
        paths_to_mask += tuple(_host_secrets())
    ops = [MountOp(lib.PX_OP_MASK, path) for path in paths_to_mask]
    ops += [MountOp(lib.PX_OP_READONLY, path) for path in readonly_paths]
    if readonly_root:
        ops.append(MountOp(lib.PX_OP_REMOUNT, "/", flags=lib.MS_RDONLY))
    return tuple(ops)


def plan_mounts(cmd: ExecCommand, mirror_root: str) -> List[MountOp]:
    """The whole plan; ``mirror_root`` is the directory the host-mirror tmpfs
    is mounted on (in the task's mount namespace: what it holds stays
    hidden there, and is untouched on the host)."""
    isolation = cmd.isolation
    if "mnt" not in isolation.namespaces:
        return []
    if isolation.rootfs is None:
        root = mirror_root
        host = _host_key(time.time())
        ops = [MountOp(lib.PX_OP_MOUNT, root, source="tmpfs", fstype="tmpfs",
                       flags=lib.MS_NOSUID | lib.MS_NODEV, data="mode=0755,size=1m")]
        for name, link in _host_mirror(host):
            if link is not None:
                ops.append(MountOp(lib.PX_OP_SYMLINK, f"{root}/{name}", source=link))
            else:
                ops.append(_bind(f"/{name}", f"{root}/{name}", readonly=True))
        after = _after_pivot(isolation.masked_paths, isolation.readonly_paths, True, host)
    else:
        root = str(isolation.rootfs)
        ops = [_bind(root, root, readonly=False)]
        after = _after_pivot(isolation.masked_paths, isolation.readonly_paths, isolation.readonly_rootfs, None)
    ops += _kernel_filesystems(root, isolation.namespaces, isolation.devices)
    ops += _user_mounts(root, cmd)
    ops.append(MountOp(lib.PX_OP_PIVOT, root))
    return ops + list(after)
