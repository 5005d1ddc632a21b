"""A bundle's config.json, validated whole and typed: ``load_config(bundle) -> OciConfig``.

runtime-spec 1.0.x and 1.1.x (config.md): the top level, ``process``,
``root``, ``mounts``, ``hooks``, ``annotations``, ``hostname`` and
``domainname`` here; ``linux`` in spec_linux.py and ``linux.resources`` in
spec_resources.py. Every error is a ``ConfigError`` whose field is the JSON
path of the offending value (``process.rlimits[1].type``), raised before
anything exists. The result is frozen dataclasses; the module only reads
(config.json, whether root.path is a directory, the host's capability set
and security modules).

Unknown properties are ignored, as runtime-spec requires. A known one pyexec
cannot honour is an error naming it, never dropped: ``process.commandLine``
and ``process.user.username`` (Windows), ``mounts[].uidMappings`` and
``gidMappings`` (idmapped mounts), the ``solaris``, ``windows``, ``vm`` and
``zos`` sections, an AppArmor profile or SELinux label on a host without
that module, the scheduler settings only sched_setattr(2) makes
(SCHED_DEADLINE and its parameters, scheduler flags; SCHED_ISO is no Linux
policy at all); spec_linux.py and mount_options.py list theirs.

Where the spec leaves room: JSON null is taken as absent (Go's encoding/json
writes it for nil lists); ``process`` may be absent (``create`` then makes
the container and ``start`` must fail, runtime-spec's rule); capabilities
must be the kernel's, named ``CAP_*`` (runtime-spec says to warn, its test
suite wants an error: an unknown one is more likely a typo than a wish).
"""
from __future__ import annotations

import json
import os
import re
import resource
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..caps import parse_capabilities
from ..errors import ConfigError
from .jsonpath import (
    INT32,
    INT64,
    MISSING,
    UINT16,
    UINT32,
    UINT64,
    JsonObject,
    expect_abs_path,
    expect_choice,
    expect_int,
    expect_str,
    item,
)
from .mount_options import MountOptions, parse_mount_options
from .spec_linux import OciLinux, host_has_lsm, parse_linux

__all__ = [
    "SPEC_VERSIONS", "HOOK_PHASES", "OciUser", "OciConsoleSize", "OciCapabilities", "OciRlimit", "OciScheduler",
    "OciIOPriority", "OciProcess", "OciRoot", "OciMount", "OciHook", "OciHooks", "OciConfig",
    "load_config", "parse_config", "parse_process",
]

SPEC_VERSIONS = "1.0.0 to 1.1.x"
_VERSION = re.compile(r"^1\.[01]\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_CAP_NAME = re.compile(r"^CAP_[A-Z0-9_]+$")
_ENV_ENTRY = re.compile(r"^[^=]+=", re.S)
_HOST_NAME_MAX = 64  # the kernel's limit for sethostname(2) and setdomainname(2)
HOOK_PHASES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_SCHED_POLICIES = ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE",
                   "SCHED_DEADLINE")
_SCHED_FLAGS = ("SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN",
                "SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN",
                "SCHED_FLAG_UTIL_CLAMP_MAX")
_IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
_NOT_LINUX = "is not supported on Linux"


@dataclass(frozen=True)
class OciUser:
    """Ids in the container's user namespace; ``umask`` None: the runtime's is kept."""

    uid: int = 0
    gid: int = 0
    umask: Optional[int] = None
    additional_gids: Tuple[int, ...] = ()


@dataclass(frozen=True)
class OciConsoleSize:
    """The terminal's size in characters (rows, columns)."""

    height: int
    width: int


@dataclass(frozen=True)
class OciCapabilities:
    """The five capability sets, as ``CAP_*`` names the kernel knows, in config order."""

    bounding: Tuple[str, ...] = ()
    effective: Tuple[str, ...] = ()
    inheritable: Tuple[str, ...] = ()
    permitted: Tuple[str, ...] = ()
    ambient: Tuple[str, ...] = ()


@dataclass(frozen=True)
class OciRlimit:
    """``type`` "RLIMIT_NOFILE"..., ``resource`` its number (Python's resource module);
    limits in the resource's unit (bytes, seconds, count), 2**64-1 is RLIM_INFINITY."""

    type: str
    resource: int
    soft: int
    hard: int


@dataclass(frozen=True)
class OciScheduler:
    """The scheduling policy (SCHED_OTHER, FIFO, RR, BATCH or IDLE: what os.sched_setscheduler
    sets), its static ``priority`` (1-99 for FIFO and RR) and the ``nice`` value (-20 to 19)."""

    policy: str
    nice: int = 0
    priority: int = 0


@dataclass(frozen=True)
class OciIOPriority:
    """ioprio_set(2): ``ioprio_class`` IOPRIO_CLASS_RT/BE/IDLE, ``priority`` 0 (highest) to 7."""

    ioprio_class: str
    priority: int


@dataclass(frozen=True)
class OciProcess:
    """``process``: what runs in the container.

    ``env`` is "KEY=value" strings in config order; ``cwd`` absolute, in the
    container. None / empty where unset: ``capabilities`` None means the
    config names none (runc then changes no capability set).
    """

    args: Tuple[str, ...]
    cwd: str
    env: Tuple[str, ...] = ()
    terminal: bool = False
    console_size: Optional[OciConsoleSize] = None
    user: OciUser = field(default_factory=OciUser)
    capabilities: Optional[OciCapabilities] = None
    rlimits: Tuple[OciRlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: Optional[str] = None
    selinux_label: Optional[str] = None
    oom_score_adj: Optional[int] = None
    scheduler: Optional[OciScheduler] = None
    io_priority: Optional[OciIOPriority] = None


@dataclass(frozen=True)
class OciRoot:
    """The root file system: ``path`` absolute and real (no symlink) on the host; a relative one is the bundle's."""

    path: str
    readonly: bool = False


@dataclass(frozen=True)
class OciMount:
    """One entry of ``mounts``, in the container, in config order.

    ``destination`` absolute in the container, as written (mounts.py
    resolves it inside the root). ``bind``: the options say bind/rbind (or
    the type is "bind"); a bind's ``source`` is absolute on the host (a
    relative one is the bundle's), any other's is the file system's source
    string (None: the type's name is used). ``options`` are the words as
    written, ``parsed`` what they mean (mount_options.MountOptions).
    """

    destination: str
    type: Optional[str]
    source: Optional[str]
    options: Tuple[str, ...]
    bind: bool
    parsed: MountOptions


@dataclass(frozen=True)
class OciHook:
    """A hook: ``path`` absolute on the host, ``args`` its whole argv, ``timeout`` in seconds (None: none)."""

    path: str
    args: Tuple[str, ...] = ()
    env: Tuple[str, ...] = ()
    timeout: Optional[int] = None


@dataclass(frozen=True)
class OciHooks:
    """The hooks of each lifecycle phase, in the order they run."""

    prestart: Tuple[OciHook, ...] = ()
    create_runtime: Tuple[OciHook, ...] = ()
    create_container: Tuple[OciHook, ...] = ()
    start_container: Tuple[OciHook, ...] = ()
    poststart: Tuple[OciHook, ...] = ()
    poststop: Tuple[OciHook, ...] = ()


@dataclass(frozen=True)
class OciConfig:
    """A bundle's config.json. ``bundle`` is the bundle's absolute path;
    ``annotations`` is the dataclass's own dict: treat it as read-only."""

    bundle: str
    oci_version: str
    root: OciRoot
    process: Optional[OciProcess] = None
    hostname: Optional[str] = None
    domainname: Optional[str] = None
    mounts: Tuple[OciMount, ...] = ()
    hooks: OciHooks = field(default_factory=OciHooks)
    annotations: Dict[str, str] = field(default_factory=dict)
    linux: OciLinux = field(default_factory=OciLinux)


def _env(obj: JsonObject, key: str) -> Tuple[str, ...]:
    entries = obj.texts(key)
    for index, entry in enumerate(entries):
        if not _ENV_ENTRY.match(entry):
            raise ConfigError(item(obj.at(key), index), entry, "is not KEY=value")
    return entries


def _user(obj: Optional[JsonObject]) -> OciUser:
    if obj is None:
        return OciUser()
    obj.reject("username", _NOT_LINUX + " (a Windows user name)")
    gids = tuple(expect_int(v, p, *UINT32) for v, p in obj.items("additionalGids"))
    return OciUser(obj.required_number("uid", UINT32), obj.required_number("gid", UINT32),
                   obj.number("umask", (0, 0o777)), gids)


def _capabilities(obj: JsonObject) -> OciCapabilities:
    sets: Dict[str, Tuple[str, ...]] = {}
    for name in _CAP_SETS:
        seen: Dict[str, None] = {}
        for index, cap in enumerate(obj.texts(name)):
            where = item(obj.at(name), index)
            if not _CAP_NAME.match(cap):
                raise ConfigError(where, cap, "is not a capability name (CAP_...)")
            try:
                parse_capabilities([cap])
            except ConfigError as exc:
                raise ConfigError(where, cap, exc.reason) from None
            seen[cap] = None
        sets[name] = tuple(seen)
    return OciCapabilities(**sets)


def _rlimits(obj: JsonObject) -> Tuple[OciRlimit, ...]:
    out = []
    seen: Dict[str, str] = {}
    for entry in obj.children("rlimits"):
        kind = entry.required_text("type")
        number = getattr(resource, kind, None) if re.match(r"^RLIMIT_[A-Z]+$", kind) else None
        if not isinstance(number, int):
            raise ConfigError(entry.at("type"), kind, "is not a resource limit of this kernel (RLIMIT_...)")
        if kind in seen:
            raise ConfigError(entry.at("type"), kind, f"is listed twice (also {seen[kind]})")
        seen[kind] = entry.path
        soft, hard = entry.required_number("soft", UINT64), entry.required_number("hard", UINT64)
        if soft > hard:
            raise ConfigError(entry.at("soft"), soft, f"is above the hard limit ({hard})")
        out.append(OciRlimit(kind, number, soft, hard))
    return tuple(out)


def _lsm_label(obj: JsonObject, key: str, lsm: str) -> Optional[str]:
    value = obj.opt_text(key)
    if value is not None and not host_has_lsm(lsm):
        raise ConfigError(obj.at(key), value, f"needs {'AppArmor' if lsm == 'apparmor' else 'SELinux'}, "
                          "which this host does not have")
    return value


def _scheduler(obj: JsonObject) -> OciScheduler:
    policy = expect_choice(obj.required("policy"), obj.at("policy"), _SCHED_POLICIES)
    if policy == "SCHED_ISO":
        raise ConfigError(obj.at("policy"), policy, "is not a policy of Linux (it was never merged)")
    if policy == "SCHED_DEADLINE":
        raise ConfigError(obj.at("policy"), policy, "is not supported (it needs sched_setattr(2))")
    # What only sched_setattr(2) sets: the DEADLINE parameters and the flags.
    for key in ("runtime", "deadline", "period"):
        if obj.number(key, UINT64):
            raise ConfigError(obj.at(key), obj.raw(key), "applies to SCHED_DEADLINE only")
    for value, path in obj.items("flags"):
        expect_choice(value, path, _SCHED_FLAGS)
        raise ConfigError(path, value, "is not supported (scheduler flags need sched_setattr(2))")
    priority = obj.number("priority", INT32) or 0
    if priority and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise ConfigError(obj.at("priority"), priority, f"must be 0 for {policy} (1-99 for SCHED_FIFO, SCHED_RR)")
    if policy in ("SCHED_FIFO", "SCHED_RR") and not 1 <= priority <= 99:
        raise ConfigError(obj.at("priority"), priority, f"must be 1 to 99 for {policy}")
    return OciScheduler(policy, obj.number("nice", (-20, 19)) or 0, priority)


def parse_process(value: Any, path: str = "process") -> OciProcess:
    """``process`` of a config.json, or the process.json of ``exec --process`` (``path`` names it in errors)."""
    obj = JsonObject(value, path)
    obj.reject("commandLine", _NOT_LINUX + " (a Windows command line: use args)")
    args = obj.texts("args")
    if not args:
        raise ConfigError(obj.at("args"), list(args) if obj.has("args") else obj.required("args"),
                          "must name the program to run")
    if not args[0]:
        raise ConfigError(item(obj.at("args"), 0), args[0], "must not be empty")
    console = obj.child("consoleSize")
    caps = obj.child("capabilities")
    sched = obj.child("scheduler")
    ioprio = obj.child("ioPriority")
    return OciProcess(
        args=args,
        cwd=expect_abs_path(obj.required("cwd"), obj.at("cwd")),
        env=_env(obj, "env"),
        terminal=obj.flag("terminal"),
        console_size=OciConsoleSize(console.required_number("height", UINT16),
                                    console.required_number("width", UINT16)) if console else None,
        user=_user(obj.child("user")),
        capabilities=_capabilities(caps) if caps else None,
        rlimits=_rlimits(obj),
        no_new_privileges=obj.flag("noNewPrivileges"),
        apparmor_profile=_lsm_label(obj, "apparmorProfile", "apparmor"),
        selinux_label=_lsm_label(obj, "selinuxLabel", "selinux"),
        oom_score_adj=obj.number("oomScoreAdj", (-1000, 1000)),
        scheduler=_scheduler(sched) if sched else None,
        io_priority=OciIOPriority(expect_choice(ioprio.required("class"), ioprio.at("class"), _IOPRIO_CLASSES),
                                  ioprio.required_number("priority", (0, 7))) if ioprio else None)


def _root(obj: Optional[JsonObject], bundle: str) -> OciRoot:
    if obj is None:
        raise ConfigError("root", MISSING, "is required on Linux (the root file system)")
    raw = obj.required_text("path")
    # The real path: the mount plan names the root in pivot_root and mountinfo, and
    # resolves the image's own paths below it (a symlink on the way is the operator's).
    path = os.path.realpath(os.path.join(bundle, raw))
    if not os.path.isdir(path):
        raise ConfigError(obj.at("path"), raw, f"is not a directory ({path})")
    return OciRoot(path, obj.flag("readonly"))


def _mount(obj: JsonObject, bundle: str) -> OciMount:
    for key in ("uidMappings", "gidMappings"):
        obj.reject(key, "is not supported (idmapped mounts)")
    destination = expect_abs_path(obj.required("destination"), obj.at("destination"))
    kind = obj.opt_text("type")
    options = obj.texts("options")
    bind = kind == "bind" or "bind" in options or "rbind" in options
    source = obj.opt_text("source")
    if bind:
        if source is None:
            raise ConfigError(obj.at("source"), obj.raw("source"), "is required for a bind mount")
        source = os.path.normpath(os.path.join(bundle, source))
    elif kind is None:
        raise ConfigError(obj.at("type"), obj.raw("type"), "is required for a mount that is not a bind mount")
    parsed = parse_mount_options(options, bind, obj.at("options"))
    return OciMount(destination, kind, source, options, bind, parsed)


def _hooks(obj: Optional[JsonObject]) -> OciHooks:
    if obj is None:
        return OciHooks()
    phases: Dict[str, Tuple[OciHook, ...]] = {}
    for phase in HOOK_PHASES:
        hooks = []
        for entry in obj.children(phase):
            hooks.append(OciHook(expect_abs_path(entry.required("path"), entry.at("path")), entry.texts("args"),
                                 _env(entry, "env"), entry.number("timeout", (1, INT64[1]))))
        phases[re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), phase)] = tuple(hooks)
    return OciHooks(**phases)


def _name(obj: JsonObject, key: str, namespaces: OciLinux) -> Optional[str]:
    value = obj.opt_text(key)
    if value is None:
        return None
    if len(value.encode()) > _HOST_NAME_MAX:
        raise ConfigError(obj.at(key), value, f"is longer than {_HOST_NAME_MAX} bytes")
    if namespaces.namespace("uts") is None:
        raise ConfigError(obj.at(key), value, "needs a uts namespace (none in linux.namespaces)")
    return value


def parse_config(document: Any, bundle: str) -> OciConfig:
    """A parsed config.json of the bundle at ``bundle`` (root.path and bind sources are relative to it)."""
    bundle = os.path.abspath(bundle)
    obj = JsonObject(document, "")
    version = expect_str(obj.required("ociVersion"), "ociVersion")
    if not _VERSION.match(version):
        raise ConfigError("ociVersion", version, f"is not a supported runtime-spec version ({SPEC_VERSIONS})")
    for key in ("solaris", "windows", "vm", "zos"):
        obj.reject(key, _NOT_LINUX)
    linux = parse_linux(obj.raw("linux"))
    process = obj.raw("process")
    return OciConfig(
        bundle=bundle,
        oci_version=version,
        root=_root(obj.child("root"), bundle),
        process=parse_process(process) if process is not None else None,
        hostname=_name(obj, "hostname", linux),
        domainname=_name(obj, "domainname", linux),
        mounts=tuple(_mount(m, bundle) for m in obj.children("mounts")),
        hooks=_hooks(obj.child("hooks")),
        annotations=obj.mapping("annotations"),
        linux=linux)


def load_config(bundle: str) -> OciConfig:
    """Read and validate ``<bundle>/config.json`` whole; a ConfigError names the first bad value."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except OSError as exc:
        raise ConfigError("config.json", path, f"cannot be read: {exc.strerror}") from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ConfigError("config.json", path, f"is not JSON: {exc}") from None
    return parse_config(document, bundle)
