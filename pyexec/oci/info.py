"""What the runtime says about itself: ``features`` and ``spec``.

``features`` prints runtime-spec features.md's JSON: the spec versions,
hooks, mount options, namespaces, capabilities, cgroup versions and the
seccomp actions, operators, architectures and flags this runtime
understands. ``spec`` writes a starter config.json for a bundle: ``sh`` in
a ``rootfs`` directory with a terminal, the default namespaces, mounts and
masked paths, and with ``--rootless`` a user namespace mapping the caller's
uid and gid to root (no network namespace of its own, no cgroup limits).
"""
from __future__ import annotations

import json
import os
import sys
from typing import IO, Any, Dict, List

from ..caps import last_cap, names_of_mask

__all__ = ["features", "default_spec", "write_spec", "MOUNT_OPTIONS", "SECCOMP_ACTIONS", "SECCOMP_OPERATORS",
           "SECCOMP_ARCHES", "SECCOMP_FLAGS"]

OCI_VERSION = "1.1.0"
HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
MOUNT_OPTIONS = sorted({
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "iversion", "lazytime",
    "loud", "mand", "noatime", "nodev", "nodiratime", "noexec", "noiversion", "nolazytime", "nomand",
    "norelatime", "nostrictatime", "nosuid", "nosymfollow", "private", "rbind", "relatime", "remount",
    "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "silent", "slave",
    "strictatime", "suid", "symfollow", "sync", "unbindable",
})
NAMESPACES = ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]
SECCOMP_ACTIONS = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                   "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"]
SECCOMP_OPERATORS = ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                     "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]
SECCOMP_ARCHES = ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
SECCOMP_FLAGS = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]


def _all_capabilities() -> List[str]:
    return list(names_of_mask((1 << (last_cap() + 1)) - 1))


def features(out: IO[str] = sys.stdout) -> None:
    value: Dict[str, Any] = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": _all_capabilities(),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": SECCOMP_ACTIONS, "operators": SECCOMP_OPERATORS,
                        "archs": SECCOMP_ARCHES, "knownFlags": SECCOMP_FLAGS, "supportedFlags": SECCOMP_FLAGS},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.version": "none (pyexec-oci)"},
    }
    json.dump(value, out, indent=4)
    out.write("\n")


def default_spec(rootless: bool = False) -> Dict[str, Any]:
    """A starter config.json (runtime-spec 1.1): ``sh`` with a terminal."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec: Dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {name: list(caps) for name in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyexec",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        linux = spec["linux"]
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup", "user")]
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        del linux["resources"]
        # sysfs of a network namespace it does not own cannot be mounted: bind the host's.
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        spec["mounts"].append({"destination": "/sys", "type": "none", "source": "/sys",
                               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        for mount in spec["mounts"]:
            if mount["destination"] == "/dev/pts":
                mount["options"] = [o for o in mount["options"] if o != "gid=5"]
    return spec


def write_spec(bundle: str, rootless: bool = False) -> None:
    """Write ``<bundle>/config.json``; an existing one is an error (runc's rule)."""
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise FileExistsError(f"File {path} exists. Remove it first") from None
    with os.fdopen(fd, "w") as f:
        json.dump(default_spec(rootless), f, indent="\t")
        f.write("\n")
