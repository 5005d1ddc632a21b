"""OCI bundles for runc and crun: a busybox rootfs and a config equivalent to
pyexec's default isolation.

pyexec's default (``Isolation()`` with ``Resources(memory="64M", pids=64,
cpu_shares=512)``): new pid, mount, uts, ipc and net namespaces; a read-only
root with a fresh /proc, a tmpfs /dev holding the usual nodes plus pts, shm
and mqueue, a read-only sysfs, a tmpfs /tmp; runc's masked and read-only
/proc paths; Docker's default capabilities; no_new_privs; pyexec's default
seccomp deny-list (see ``oci_seccomp``); the cgroup limits.
The bundle says the same in OCI terms. Differences that remain: the root is
a busybox directory instead of pyexec's host mirror (read-only binds of /usr,
/etc, ...), and the runtimes also apply their default device cgroup list.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

__all__ = ["DOCKER_CAPS", "MASKED_PATHS", "READONLY_PATHS", "make_rootfs", "oci_config", "write_bundle"]

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
               "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
               "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

#: Applets linked into the rootfs's /bin (busybox picks the applet by argv[0]).
APPLETS = ("sh", "true", "false", "sleep", "cat", "echo", "ls", "seq", "wait", "kill")


def make_rootfs(path: str, busybox: str) -> str:
    """A minimal root: /bin/busybox (static) and applet links; idempotent."""
    bin_dir = os.path.join(path, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, "busybox")
    if not os.path.exists(target):
        shutil.copy2(busybox, target)
    for applet in APPLETS:
        link = os.path.join(bin_dir, applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    for name in ("proc", "dev", "sys", "tmp", "etc", "root"):
        os.makedirs(os.path.join(path, name), exist_ok=True)
    return path


def oci_seccomp(capabilities: Sequence[str] = tuple(DOCKER_CAPS)) -> Optional[Dict[str, object]]:
    """pyexec's default seccomp profile in OCI terms, for a task with
    ``capabilities``; None when this pyexec has no seccomp module.

    The rules that apply to these capabilities (Docker's
    ``includes``/``excludes.caps``, which runc and crun do not read), as they
    are: the profile is written for libseccomp, which runc and crun use, and
    pyexec's own filter for it decides the same (tests/test_seccomp_differential.py).
    """
    try:
        from pyexec.seccomp import default_profile
    except ImportError:
        return None
    profile = default_profile()
    caps = set(capabilities)
    rules = []
    for rule in profile["syscalls"]:
        includes = set(rule.get("includes", {}).get("caps", ()))
        excludes = set(rule.get("excludes", {}).get("caps", ()))
        if includes <= caps and not excludes & caps:
            rules.append({key: rule[key] for key in ("names", "action", "errnoRet", "args") if key in rule})
    return {"defaultAction": profile["defaultAction"], "architectures": list(profile.get("architectures", [])),
            "syscalls": rules}


def oci_config(args: Sequence[str], rootfs: str, cgroups_path: str, memory: Optional[int] = 64 << 20,
               pids: Optional[int] = 64, cpu_shares: Optional[int] = 512,
               hostname: str = "pxbench", seccomp: bool = True) -> Dict[str, object]:
    """An OCI runtime config (spec 1.0) for ``args`` with the isolation above."""
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    resources: Dict[str, object] = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory is not None:
        resources["memory"] = {"limit": memory}
    if pids is not None:
        resources["pids"] = {"limit": pids}
    if cpu_shares is not None:
        resources["cpu"] = {"shares": cpu_shares}
    linux: Dict[str, object] = {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "resources": resources,
        "cgroupsPath": cgroups_path,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    filters = oci_seccomp() if seccomp else None
    if filters is not None:
        linux["seccomp"] = filters
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/bin", "HOME=/root"],
            "cwd": "/",
            "capabilities": {key: list(DOCKER_CAPS) for key in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": nosuid_noexec_nodev},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": nosuid_noexec_nodev + ["mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid_noexec_nodev},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": nosuid_noexec_nodev + ["ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        ],
        "linux": linux,
    }


def write_bundle(path: str, config: Dict[str, object]) -> str:
    """``path``/config.json (the rootfs is named by absolute path in the config)."""
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=1)
    os.rename(tmp, os.path.join(path, "config.json"))
    return path


def bundle_names(prefix: str, count: int) -> List[str]:
    return [f"{prefix}{i}" for i in range(count)]
