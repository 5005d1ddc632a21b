"""The ``linux`` section of a config.json, validated and typed (all but ``resources``: spec_resources.py).

runtime-spec config-linux.md: namespaces, user namespace id mappings, time
offsets, devices, cgroupsPath, sysctl, seccomp, rootfsPropagation, masked
and read-only paths, mountLabel, personality. Besides the types it checks
what must hold together: one entry per namespace type; id mappings only
with a new user namespace, which must have them; time offsets only with a
new time namespace; sysctls only of namespaces the container has (writing
any other would change the host); errno values only with the actions that
return one; a mount label only on a host with SELinux.

Refused as not supported: ``intelRdt``; ``timeOffsets`` (checked first: a
time namespace takes them only before it has a process, and the shim's
clone3 makes the container's init in it); seccomp's SCMP_ACT_NOTIFY and the
filter flags LOG, SPEC_ALLOW and WAIT_KILLABLE_RECV (the shim installs its
filter with no flags; TSYNC is accepted: the task is one thread then).

The host's security modules are found under ``LSM_PATHS`` (read, never
changed); everything else here reads only its arguments.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from .jsonpath import INT64, MISSING, UINT32, UINT64, JsonObject, expect_abs_path, expect_choice, item, member
from .spec_resources import OciResources, parse_resources

__all__ = [
    "NAMESPACE_TYPES", "ROOTFS_PROPAGATIONS", "SECCOMP_ACTIONS", "SECCOMP_OPERATORS", "SECCOMP_ARCHES",
    "SECCOMP_FLAGS", "LSM_PATHS", "host_has_lsm", "OciNamespace", "OciIdMapping", "OciTimeOffset", "OciDevice",
    "OciSeccompArg", "OciSyscall", "OciSeccomp", "OciPersonality", "OciLinux", "parse_linux",
]

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
ROOTFS_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable")
SECCOMP_ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
                   "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
SECCOMP_OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                     "SCMP_CMP_MASKED_EQ")
SECCOMP_ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
                  "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
                  "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                  "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
                  "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64")
SECCOMP_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                 "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
_SUPPORTED_SECCOMP_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC",)
_ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# Where the kernel shows a security module that is active (securityfs, selinuxfs).
LSM_PATHS: Dict[str, str] = {"apparmor": "/sys/kernel/security/apparmor", "selinux": "/sys/fs/selinux"}

# The largest device numbers the kernel's dev_t holds (12-bit major, 20-bit minor).
_MAX_MAJOR, _MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1
_NSEC_PER_SEC = 1_000_000_000

# Sysctls of the IPC namespace (besides fs.mqueue.*), after runc's list.
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
_SYSCTL_KEY = re.compile(r"^[A-Za-z0-9_*:+-]+([./][A-Za-z0-9_*:+-]+)*$")


def host_has_lsm(name: str) -> bool:
    """Whether the security module ``name`` ("apparmor", "selinux") is active on this host."""
    return os.path.isdir(LSM_PATHS[name])


@dataclass(frozen=True)
class OciNamespace:
    """A namespace to create (``path`` None) or join (``path``: a namespace file of the runtime's mount namespace)."""

    type: str
    path: Optional[str] = None


@dataclass(frozen=True)
class OciIdMapping:
    """``size`` ids from ``container_id`` in the container are ``host_id``... on the host."""

    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class OciTimeOffset:
    """How far the container's clock is ahead: ``secs`` (may be negative) plus ``nanosecs`` (0-999999999)."""

    secs: int = 0
    nanosecs: int = 0


@dataclass(frozen=True)
class OciDevice:
    """A device node the container must have at ``path`` (absolute, in the container).

    ``type`` "c", "b", "u" (unbuffered char, made as "c") or "p" (a FIFO;
    no numbers). ``file_mode`` permission bits (None: runc's 0666);
    ``uid``/``gid`` None: root's, unchanged.
    """

    type: str
    path: str
    major: int = 0
    minor: int = 0
    file_mode: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None


@dataclass(frozen=True)
class OciSeccompArg:
    """A condition on syscall argument ``index`` (0-5): ``op`` compares it with ``value``
    (``value_two``: the mask of SCMP_CMP_MASKED_EQ)."""

    index: int
    value: int
    op: str
    value_two: int = 0


@dataclass(frozen=True)
class OciSyscall:
    """A rule: ``action`` for ``names`` when every arg condition holds; ``errno_ret`` for ERRNO/TRACE."""

    names: Tuple[str, ...]
    action: str
    errno_ret: Optional[int] = None
    args: Tuple[OciSeccompArg, ...] = ()


@dataclass(frozen=True)
class OciSeccomp:
    """``linux.seccomp``, validated; ``profile`` is the JSON object itself, for pyexec.seccomp.compile_profile.

    Syscall names are not checked: a profile names calls of every
    architecture, and the compiler skips those this one lacks.
    """

    default_action: str
    default_errno_ret: Optional[int] = None
    architectures: Tuple[str, ...] = ()
    flags: Tuple[str, ...] = ()
    listener_path: Optional[str] = None
    listener_metadata: Optional[str] = None
    syscalls: Tuple[OciSyscall, ...] = ()
    profile: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OciPersonality:
    """personality(2): ``domain`` "LINUX" or "LINUX32" (runtime-spec defines no flags)."""

    domain: str


@dataclass(frozen=True)
class OciLinux:
    """``linux``: what is not set is empty or None (an absent section is ``OciLinux()``).

    Namespace types are runtime-spec's ("network", "mount", ...). ``sysctl``
    is the dataclass's own dict: treat it as read-only. ``time_offsets`` is
    always empty for now (a config that sets them is refused), kept for the
    day the shim can write them.
    """

    namespaces: Tuple[OciNamespace, ...] = ()
    uid_mappings: Tuple[OciIdMapping, ...] = ()
    gid_mappings: Tuple[OciIdMapping, ...] = ()
    time_offsets: Dict[str, OciTimeOffset] = field(default_factory=dict)
    devices: Tuple[OciDevice, ...] = ()
    cgroups_path: Optional[str] = None
    resources: Optional[OciResources] = None
    sysctl: Dict[str, str] = field(default_factory=dict)
    seccomp: Optional[OciSeccomp] = None
    rootfs_propagation: Optional[str] = None
    masked_paths: Tuple[str, ...] = ()
    readonly_paths: Tuple[str, ...] = ()
    mount_label: Optional[str] = None
    personality: Optional[OciPersonality] = None

    def namespace(self, kind: str) -> Optional[OciNamespace]:
        """The entry of namespace type ``kind``, or None: the container shares the runtime's."""
        return next((ns for ns in self.namespaces if ns.type == kind), None)

    def new_namespace(self, kind: str) -> bool:
        """Whether the container gets a namespace of type ``kind`` of its own (not joined)."""
        ns = self.namespace(kind)
        return ns is not None and ns.path is None


def _namespaces(obj: JsonObject) -> Tuple[OciNamespace, ...]:
    seen: Dict[str, str] = {}
    out = []
    for entry in obj.children("namespaces"):
        kind = expect_choice(entry.required("type"), entry.at("type"), NAMESPACE_TYPES)
        if kind in seen:
            raise ConfigError(entry.at("type"), kind, f"is listed twice (also {seen[kind]})")
        seen[kind] = entry.path
        path = expect_abs_path(entry.raw("path"), entry.at("path")) if entry.has("path") else None
        out.append(OciNamespace(kind, path))
    return tuple(out)


def _id_mappings(obj: JsonObject, key: str) -> Tuple[OciIdMapping, ...]:
    out: List[OciIdMapping] = []
    for entry in obj.children(key):
        mapping = OciIdMapping(entry.required_number("containerID", UINT32), entry.required_number("hostID", UINT32),
                               entry.required_number("size", (1, UINT32[1])))
        for start_key, start in (("containerID", mapping.container_id), ("hostID", mapping.host_id)):
            if start + mapping.size - 1 > UINT32[1]:
                raise ConfigError(entry.at("size"), mapping.size, f"runs past the last id from {start_key} {start}")
        for other in out:
            if _overlap(mapping.container_id, other.container_id, mapping.size, other.size) or \
                    _overlap(mapping.host_id, other.host_id, mapping.size, other.size):
                raise ConfigError(entry.path, entry.value, "overlaps an earlier mapping")
        out.append(mapping)
    return tuple(out)


def _overlap(a: int, b: int, size_a: int, size_b: int) -> bool:
    return a < b + size_b and b < a + size_a


def _check_user_namespace(obj: JsonObject, linux: Dict[str, Any]) -> None:
    user = next((ns for ns in linux["namespaces"] if ns.type == "user"), None)
    for key, mappings in (("uidMappings", linux["uid_mappings"]), ("gidMappings", linux["gid_mappings"])):
        if mappings and user is None:
            raise ConfigError(obj.at(key), obj.raw(key), "need a user namespace (none in linux.namespaces)")
        if mappings and user is not None and user.path is not None:
            raise ConfigError(obj.at(key), obj.raw(key), "cannot be set for a joined user namespace (it has its own)")
        if not mappings and user is not None and user.path is None:
            raise ConfigError(obj.at(key), MISSING, "are required for a new user namespace")


def _time_offsets(obj: JsonObject, new_time_ns: bool) -> Dict[str, OciTimeOffset]:
    section = obj.child("timeOffsets")
    if section is None:
        return {}
    if not new_time_ns:
        raise ConfigError(section.path, section.value, "need a new time namespace (type 'time' without a path)")
    out = {}
    for clock in section.value:
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(member(section.path, clock), section.value[clock], "is not a clock with an offset "
                              "(monotonic, boottime)")
        entry = JsonObject(section.value[clock], section.at(clock))
        out[clock] = OciTimeOffset(entry.number("secs", INT64) or 0,
                                   entry.number("nanosecs", (0, _NSEC_PER_SEC - 1)) or 0)
    # A time namespace takes offsets only before its first process exists, and
    # the shim's clone3 creates the container's init in it: nothing can write them.
    raise ConfigError(section.path, section.value, "is not supported (the offsets must be written before the "
                      "time namespace has a process; the shim creates the container's in it)")


def _devices(obj: JsonObject) -> Tuple[OciDevice, ...]:
    seen: Dict[str, str] = {}
    out = []
    for entry in obj.children("devices"):
        kind = expect_choice(entry.required("type"), entry.at("type"), ("c", "b", "u", "p"))
        path = os.path.normpath(expect_abs_path(entry.required("path"), entry.at("path")))
        if path in seen:
            raise ConfigError(entry.at("path"), path, f"is listed twice (also {seen[path]})")
        seen[path] = entry.path
        if kind == "p":
            major = entry.number("major", INT64) or 0
            minor = entry.number("minor", INT64) or 0
        else:
            major = entry.required_number("major", (0, _MAX_MAJOR))
            minor = entry.required_number("minor", (0, _MAX_MINOR))
        out.append(OciDevice(kind, path, major, minor, entry.number("fileMode", (0, 0o7777)),
                             entry.number("uid", UINT32), entry.number("gid", UINT32)))
    return tuple(out)


def _sysctl_namespace(key: str) -> Optional[str]:
    """The namespace type a sysctl belongs to, None for one of the whole host."""
    name = key.replace("/", ".")
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return "ipc"
    if name.startswith("net."):
        return "network"
    if name in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def _sysctl(obj: JsonObject, namespaces: Sequence[OciNamespace]) -> Dict[str, str]:
    values = obj.mapping("sysctl")
    kinds = {ns.type for ns in namespaces}
    for key in values:
        path = member(obj.at("sysctl"), key)
        if not _SYSCTL_KEY.match(key):
            raise ConfigError(path, key, "is not a sysctl name like 'net.ipv4.ip_forward'")
        kind = _sysctl_namespace(key)
        if kind is None:
            raise ConfigError(path, key, "is not a sysctl of a namespace: setting it would change the host")
        if kind not in kinds:
            raise ConfigError(path, key, f"needs a {kind} namespace of the container's own (linux.namespaces)")
    return values


def _errno_ret(obj: JsonObject, key: str, action: str) -> Optional[int]:
    value = obj.number(key, UINT32)
    if value is not None and action not in _ERRNO_ACTIONS:
        raise ConfigError(obj.at(key), value, f"is set, but {action} returns no errno")
    return value


def _action(obj: JsonObject, key: str) -> str:
    action = expect_choice(obj.required(key), obj.at(key), SECCOMP_ACTIONS)
    if action == "SCMP_ACT_NOTIFY":
        raise ConfigError(obj.at(key), action, "is not supported (pyexec has no seccomp agent support)")
    return action


def _syscall(obj: JsonObject) -> OciSyscall:
    names = obj.texts("names", nonempty=True)
    if not names:
        raise ConfigError(obj.at("names"), list(names) if obj.has("names") else obj.required("names"),
                          "must name at least one syscall")
    action = _action(obj, "action")
    args = []
    for arg in obj.children("args"):
        args.append(OciSeccompArg(arg.required_number("index", (0, 5)), arg.required_number("value", UINT64),
                                  expect_choice(arg.required("op"), arg.at("op"), SECCOMP_OPERATORS),
                                  arg.number("valueTwo", UINT64) or 0))
    return OciSyscall(names, action, _errno_ret(obj, "errnoRet", action), tuple(args))


def _seccomp(obj: JsonObject) -> OciSeccomp:
    default = _action(obj, "defaultAction")
    arches = tuple(expect_choice(v, p, SECCOMP_ARCHES) for v, p in obj.items("architectures"))
    flags = tuple(expect_choice(v, p, SECCOMP_FLAGS) for v, p in obj.items("flags"))
    for index, flag in enumerate(flags):
        if flag not in _SUPPORTED_SECCOMP_FLAGS:
            raise ConfigError(item(obj.at("flags"), index), flag, "is not supported (the filter is installed "
                              "without flags)")
    listener_path = obj.opt_text("listenerPath")
    metadata = obj.opt_text("listenerMetadata")
    if metadata is not None and listener_path is None:
        raise ConfigError(obj.at("listenerMetadata"), metadata, "must not be set without listenerPath")
    return OciSeccomp(default, _errno_ret(obj, "defaultErrnoRet", default), arches, flags, listener_path, metadata,
                      tuple(_syscall(s) for s in obj.children("syscalls")), obj.value)


def _personality(obj: JsonObject) -> OciPersonality:
    domain = expect_choice(obj.required("domain"), obj.at("domain"), ("LINUX", "LINUX32"))
    for value, path in obj.items("flags"):
        raise ConfigError(path, value, "is not a personality flag (runtime-spec defines none)")
    return OciPersonality(domain)


def _propagation(obj: JsonObject) -> Optional[str]:
    value = obj.opt_text("rootfsPropagation")  # "" is unset, as Go's omitempty writes it
    return expect_choice(value, obj.at("rootfsPropagation"), ROOTFS_PROPAGATIONS) if value else None


def _abs_paths(obj: JsonObject, key: str) -> Tuple[str, ...]:
    return tuple(expect_abs_path(v, p) for v, p in obj.items(key))


def parse_linux(value: Any, path: str = "linux") -> OciLinux:
    """``linux`` of a config.json; None (absent) is ``OciLinux()``."""
    if value is None:
        return OciLinux()
    obj = JsonObject(value, path)
    obj.reject("intelRdt", "is not supported (pyexec does not manage resctrl)")
    namespaces = _namespaces(obj)
    parts: Dict[str, Any] = {"namespaces": namespaces, "uid_mappings": _id_mappings(obj, "uidMappings"),
                             "gid_mappings": _id_mappings(obj, "gidMappings")}
    _check_user_namespace(obj, parts)
    new_time_ns = any(ns.type == "time" and ns.path is None for ns in namespaces)
    mount_label = obj.opt_text("mountLabel")
    if mount_label is not None and not host_has_lsm("selinux"):
        raise ConfigError(obj.at("mountLabel"), mount_label, "needs SELinux, which this host does not have")
    resources = obj.raw("resources")
    seccomp = obj.child("seccomp")
    personality = obj.child("personality")
    return OciLinux(
        time_offsets=_time_offsets(obj, new_time_ns),
        devices=_devices(obj),
        cgroups_path=obj.opt_text("cgroupsPath"),
        resources=parse_resources(resources, obj.at("resources")) if resources is not None else None,
        sysctl=_sysctl(obj, namespaces),
        seccomp=_seccomp(seccomp) if seccomp else None,
        rootfs_propagation=_propagation(obj),
        masked_paths=_abs_paths(obj, "maskedPaths"),
        readonly_paths=_abs_paths(obj, "readonlyPaths"),
        mount_label=mount_label,
        personality=_personality(personality) if personality else None,
        **parts)
