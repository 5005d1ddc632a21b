"""Typed configuration of a task: ``ExecCommand``, ``Resources``, ``Isolation``, ``Mount``.

This module owns validation that needs nothing but the values themselves and the
file system: every dataclass checks itself in ``__post_init__`` and raises
``ConfigError`` naming the field and the value, so bad input fails before any
process, mount or directory exists. Parts with rules of their own live
beside it: the network's (``Bridge`` and the joins of a namespace) in
netconfig.py, re-exported here; rlimits in rlimits.py; user-namespace id maps
in idmaps.py; the cgroup limits (``Resources``, ``parse_size``) in
limits.py. Values are normalised on the way in (sizes become bytes, names
become canonical), so consumers read plain ints and tuples.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigError
from .idmaps import IdMap, default_idmap, normalise_idmap
from .idmaps import host_id as host_id  # re-exported: the executor modules import it from here
from .limits import Resources as Resources  # re-exported: the cgroup limits live in limits.py
from .limits import parse_size as parse_size  # re-exported, like Resources
from .netconfig import NETNS_DIR, Bridge, joined_netns_path, reconcile_network
from .rlimits import normalise_rlimits
from .rlimits import rlimit_number as rlimit_number  # re-exported, like host_id

__all__ = [
    "parse_size", "Resources", "Mount", "Isolation", "ExecCommand", "Bridge", "joined_netns_path",
    "NAMESPACES", "DEFAULT_NAMESPACES", "DEFAULT_MASKED_PATHS", "DEFAULT_READONLY_PATHS",
    "DEFAULT_PATH", "NETNS_DIR",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

NAMESPACES = frozenset({"pid", "mnt", "uts", "ipc", "net", "user", "cgroup", "time"})
DEFAULT_NAMESPACES = frozenset({"pid", "mnt", "uts", "ipc", "net"})

# runc's defaults: kernel interfaces a container must neither read nor write.
DEFAULT_MASKED_PATHS: Tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: Tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

@dataclass(frozen=True)
class LogConfig:
    """Rotation of a task's stdout/stderr files (``<name>.stdout.0``, ``.1``, ...).

    A file is closed and the next index opened once it would pass
    ``max_file_size`` (at a newline when one is near); when more than
    ``max_files`` files of a stream exist the oldest are deleted.
    """

    max_files: int = 10
    max_file_size: Union[int, str] = "10M"

    def __post_init__(self) -> None:
        if isinstance(self.max_files, bool) or not isinstance(self.max_files, int) or self.max_files < 1:
            raise ConfigError("log_config.max_files", self.max_files, "must be an integer >= 1")
        size = parse_size("log_config.max_file_size", self.max_file_size)
        if size is None or size < 1024:
            raise ConfigError("log_config.max_file_size", self.max_file_size, "must be at least 1K")
        object.__setattr__(self, "max_file_size", size)


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path ``source`` at ``target`` inside the task."""

    source: str
    target: str
    readonly: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not os.path.isabs(self.source):
            raise ConfigError("mounts.source", self.source, "must be an absolute path")
        if not os.path.exists(self.source):
            raise ConfigError("mounts.source", self.source, "does not exist")
        check_container_path("mounts.target", self.target)


def _has_parent_part(path: str) -> bool:
    """".." among the path's parts. On POSIX those are its "/"-separated
    components (pathlib drops only "" and "."): a split, not a costly Path."""
    if os.name == "nt":  # "\\" separates too, and drives have their own rules
        return ".." in Path(path).parts
    return ".." in path.split("/")


def check_container_path(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigError(field_name, value, "must be an absolute path")
    if _has_parent_part(value):
        raise ConfigError(field_name, value, "must not contain '..'")
    return value


for _path in DEFAULT_MASKED_PATHS + DEFAULT_READONLY_PATHS:  # Isolation skips the default tuples
    check_container_path("default paths", _path)


@dataclass(frozen=True)
class Device:
    """A host device node given to the task at the same path, with cgroup
    access ``permissions`` (r read, w write, m mknod), like ``Device("/dev/fuse", "rwm")``."""

    path: str
    permissions: str = "rwm"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/dev/") or ".." in self.path.split("/"):
            raise ConfigError("devices.path", self.path, "must be a path under /dev/")
        if not isinstance(self.permissions, str) or not self.permissions or \
                set(self.permissions) - set("rwm") or len(set(self.permissions)) != len(self.permissions):
            raise ConfigError("devices.permissions", self.permissions, "must be letters of 'rwm'")


@dataclass(frozen=True)
class Isolation:
    """How the task is isolated from the host. The defaults are a hardened container.

    ``rootfs=None`` builds the *host-mirror root*: a read-only tmpfs with the
    host's /bin /sbin /lib* /usr /etc bound read-only, fresh /proc, a minimal /dev,
    read-only /sys, tmpfs /tmp and ``task_dir/local`` writable at /local.
    ``capabilities=None`` means Docker's default set for root and none for other
    users; a list gives the exact set ("NET_BIND_SERVICE" or "CAP_NET_BIND_SERVICE").
    """

    namespaces: FrozenSet[str] = DEFAULT_NAMESPACES
    rootfs: Optional[str] = None
    readonly_rootfs: bool = True
    hostname: Optional[str] = None
    mounts: Tuple[Mount, ...] = ()
    masked_paths: Tuple[str, ...] = DEFAULT_MASKED_PATHS
    readonly_paths: Tuple[str, ...] = DEFAULT_READONLY_PATHS
    capabilities: Optional[Tuple[str, ...]] = None
    no_new_privs: bool = True
    rlimits: Mapping[str, Any] = field(default_factory=dict)
    uid_map: Optional[IdMap] = None
    gid_map: Optional[IdMap] = None
    #: "default" (a filter with the effect of Docker's default profile), None
    #: (no filter) or the path of an OCI/Docker JSON profile.
    seccomp: Optional[str] = "default"
    #: Device nodes beyond the default set (null zero full random urandom tty, pts, ptmx).
    devices: Tuple["Device", ...] = ()
    #: "none" (own namespace, only lo), "host", a Bridge, or "netns:PATH" /
    #: "ns:PATH" (join that namespace). Decides whether "net" is in namespaces.
    network: Union[str, Bridge] = "none"

    def __post_init__(self) -> None:
        put = object.__setattr__
        if self._all_default():
            put(self, "rlimits", {})  # what normalising gives: not the caller's dict
            return
        if self.seccomp is not None and self.seccomp != "default":
            if not isinstance(self.seccomp, (str, os.PathLike)) or not os.path.isabs(os.fspath(self.seccomp)):
                raise ConfigError("seccomp", self.seccomp, "must be 'default', None or the absolute path of a profile")
            if not os.path.isfile(self.seccomp):
                raise ConfigError("seccomp", self.seccomp, "is not a file")
            put(self, "seccomp", os.fspath(self.seccomp))
        devices = tuple(self.devices)
        for device in devices:
            if not isinstance(device, Device):
                raise ConfigError("devices", device, "is not a Device")
        if devices and "mnt" not in self.namespaces and "mount" not in self.namespaces:
            raise ConfigError("devices", [d.path for d in devices], "need the 'mnt' namespace")
        put(self, "devices", devices)
        namespaces = self.namespaces
        if isinstance(namespaces, str) or not hasattr(namespaces, "__iter__"):
            raise ConfigError("namespaces", namespaces, "must be a set of namespace names")
        names = frozenset("mnt" if n == "mount" else n for n in namespaces)
        for name in sorted(names):
            if name not in NAMESPACES:
                raise ConfigError("namespaces", name, f"is not a namespace (one of {', '.join(sorted(NAMESPACES))})")
        network, names = reconcile_network(self.network, names)
        put(self, "network", network)
        put(self, "namespaces", names)
        if self.rootfs is not None:
            if not isinstance(self.rootfs, (str, os.PathLike)) or not os.path.isabs(str(self.rootfs)):
                raise ConfigError("rootfs", self.rootfs, "must be an absolute path")
            if not os.path.isdir(self.rootfs):
                raise ConfigError("rootfs", self.rootfs, "is not a directory")
            put(self, "rootfs", os.path.realpath(self.rootfs))
            if "mnt" not in names:
                raise ConfigError("rootfs", self.rootfs, "needs the 'mnt' namespace")
        if self.hostname is not None:
            _check_hostname("hostname", self.hostname)
            if "uts" not in names:
                raise ConfigError("hostname", self.hostname, "needs the 'uts' namespace")
        mounts = tuple(self.mounts)
        for mount in mounts:
            if not isinstance(mount, Mount):
                raise ConfigError("mounts", mount, "is not a Mount")
        if mounts and "mnt" not in names:
            raise ConfigError("mounts", [m.target for m in mounts], "need the 'mnt' namespace")
        put(self, "mounts", mounts)
        for field_name, default in (("masked_paths", DEFAULT_MASKED_PATHS),
                                    ("readonly_paths", DEFAULT_READONLY_PATHS)):
            paths = getattr(self, field_name)
            if paths is not default:  # the default tuples were checked once, at import
                paths = tuple(paths)
                for path in paths:
                    check_container_path(field_name, path)
                put(self, field_name, paths)
        if self.capabilities is not None:
            from .caps import parse_capabilities  # needs the compiled shim (libcap names)
            if isinstance(self.capabilities, str):
                raise ConfigError("capabilities", self.capabilities, "must be a list of capability names")
            put(self, "capabilities", parse_capabilities(self.capabilities))
        put(self, "rlimits", normalise_rlimits(self.rlimits))
        put(self, "uid_map", normalise_idmap("uid_map", self.uid_map))
        put(self, "gid_map", normalise_idmap("gid_map", self.gid_map))
        if (self.uid_map or self.gid_map) and "user" not in names:
            raise ConfigError("uid_map", self.uid_map or self.gid_map, "needs the 'user' namespace")
        if "user" in names:
            for field_name, subid in (("uid_map", "/etc/subuid"), ("gid_map", "/etc/subgid")):
                value = getattr(self, field_name) or default_idmap(subid)
                if not any(inside <= 0 < inside + count for inside, _, count in value):
                    raise ConfigError(field_name, value, "must map id 0 (the task's root, and its monitor)")
                put(self, field_name, value)


    def _all_default(self) -> bool:
        """Every field at its default (of the default's type): nothing to check
        or normalise, the default is a valid, normalised Isolation (a test
        compares it with the full validation). Most tasks take it, and
        checking it took most of an ExecCommand's construction."""
        return (self.namespaces is DEFAULT_NAMESPACES and self.rootfs is None and self.readonly_rootfs is True
                and self.hostname is None and type(self.mounts) is tuple and not self.mounts
                and self.masked_paths is DEFAULT_MASKED_PATHS and self.readonly_paths is DEFAULT_READONLY_PATHS
                and self.capabilities is None and self.no_new_privs is True
                and type(self.rlimits) is dict and not self.rlimits and self.uid_map is None
                and self.gid_map is None and type(self.seccomp) is str and self.seccomp == "default"
                and type(self.devices) is tuple and not self.devices
                and type(self.network) is str and self.network == "none")


_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")


def _check_hostname(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or not _HOSTNAME_RE.match(value):
        raise ConfigError(field_name, value, "is not a valid host name (letters, digits, '.', '-'; at most 64)")
    return value


_TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")


def check_argv(argv: Any) -> Tuple[str, ...]:
    """``argv`` as a tuple, or a ConfigError: a non-empty list of strings without NUL."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence) or not argv:
        raise ConfigError("argv", argv, "must be a non-empty list of strings")
    for arg in argv:
        if not isinstance(arg, str) or "\0" in arg:
            raise ConfigError("argv", arg, "must be a string without NUL")
    if not argv[0]:
        raise ConfigError("argv", argv[0], "program name must not be empty")
    return tuple(argv)


def check_env(env: Mapping[str, Any]) -> None:
    """ConfigError for a variable name or value the kernel's environ cannot hold."""
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError("env", key, "is not a valid variable name (no '=' or NUL, not empty)")
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"env.{key}", value, "must be a string without NUL")


def check_user(user: Any) -> None:
    """ConfigError unless ``user`` is 'name', 'uid' or 'uid:gid'."""
    if not isinstance(user, str) or not _USER_RE.match(user):
        raise ConfigError("user", user, "is not a user ('name', 'uid' or 'uid:gid')")


def default_env() -> Dict[str, str]:
    """The environment of a task that names none: PATH only on POSIX; on
    Windows what a program needs to start (PATH, SYSTEMROOT, ...) from ours."""
    if os.name != "nt":
        return {"PATH": DEFAULT_PATH}
    keep = ("PATH", "PATHEXT", "SYSTEMROOT", "SYSTEMDRIVE", "COMSPEC", "TEMP", "TMP", "WINDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


@dataclass(frozen=True)
class ExecCommand:
    """One task: what to run, where, as whom, with which limits and isolation."""

    argv: Sequence[str]
    task_dir: Union[str, os.PathLike]
    name: Optional[str] = None
    env: Optional[Mapping[str, str]] = None
    #: Working directory of the task; None = "/" in a container, the task
    #: directory for the universal and portable executors (Nomad's raw_exec).
    cwd: Optional[str] = None
    user: Optional[str] = None
    stdout_path: Optional[str] = None
    stderr_path: Optional[str] = None
    stdin_path: Optional[str] = None
    resources: Resources = field(default_factory=Resources)
    isolation: Isolation = field(default_factory=Isolation)
    # Open file descriptors to give the task as stdin/stdout/stderr (the CLI
    # passes its own); an entry of None falls back to the *_path fields.
    stdio_fds: Optional[Tuple[Optional[int], Optional[int], Optional[int]]] = None
    #: /proc/<pid>/oom_score_adj of the task (-1000..1000); always written, so
    #: the task never inherits the caller's value.
    oom_score_adj: int = 0
    #: Rotation of the default log files (used when stdout_path/stderr_path are None).
    log_config: LogConfig = field(default_factory=LogConfig)
    #: Kill the task when the calling process exits (subprocess-like). By
    #: default a task outlives its caller and ``pyexec.reattach`` takes it over.
    kill_on_caller_exit: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "argv", check_argv(self.argv))
        task_dir = os.fspath(self.task_dir) if isinstance(self.task_dir, (str, os.PathLike)) else self.task_dir
        if not isinstance(task_dir, str) or not os.path.isabs(task_dir):
            raise ConfigError("task_dir", self.task_dir, "must be an absolute path")
        if os.path.exists(task_dir) and not os.path.isdir(task_dir):
            raise ConfigError("task_dir", task_dir, "exists and is not a directory")
        put(self, "task_dir", os.path.normpath(task_dir))
        name = self.name if self.name is not None else os.path.basename(self.task_dir) or "task"
        if not isinstance(name, str) or not _TASK_NAME_RE.match(name):
            raise ConfigError("name", name,
                              "must be 1-63 letters, digits, '_', '.', '-' (used for host and cgroup names)")
        put(self, "name", name)
        env = dict(self.env) if self.env is not None else default_env()
        check_env(env)
        put(self, "env", env)
        if self.cwd is not None:
            check_container_path("cwd", self.cwd)
        if not isinstance(self.log_config, LogConfig):
            raise ConfigError("log_config", self.log_config, "is not a LogConfig")
        if not isinstance(self.kill_on_caller_exit, bool):
            raise ConfigError("kill_on_caller_exit", self.kill_on_caller_exit, "must be True or False")
        if isinstance(self.oom_score_adj, bool) or not isinstance(self.oom_score_adj, int) \
                or not -1000 <= self.oom_score_adj <= 1000:
            raise ConfigError("oom_score_adj", self.oom_score_adj, "is not an integer in -1000..1000")
        if self.user is not None:
            check_user(self.user)
        for field_name in ("stdout_path", "stderr_path", "stdin_path"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.path.isabs(value)):
                raise ConfigError(field_name, value, "must be an absolute path")
        if self.stdio_fds is not None:
            if len(self.stdio_fds) != 3 or not all(fd is None or (isinstance(fd, int) and fd >= 0)
                                                    for fd in self.stdio_fds):
                raise ConfigError("stdio_fds", self.stdio_fds, "must be three file descriptors or None")
        if not isinstance(self.resources, Resources):
            raise ConfigError("resources", self.resources, "is not a Resources")
        if not isinstance(self.isolation, Isolation):
            raise ConfigError("isolation", self.isolation, "is not an Isolation")
