"""Configs for the pyexec.oci tests: runc's default and one with every field set, as dicts, and the
helpers that change one value of them (``mutate``) and write them into a bundle.

Plain data, no fixtures: test_oci_spec.py, test_oci_spec_fields.py and
test_oci_mounts.py import it.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Union

from pyexec.oci.spec import OciConfig, load_config

CAPS3 = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def runc_default() -> Dict[str, Any]:
    """What ``runc spec`` (runc 1.1.5) writes, as a dict."""
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {s: list(CAPS3) for s in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
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
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": list(MASKED),
            "readonlyPaths": list(READONLY),
        },
    }


def everything() -> Dict[str, Any]:
    """runc's default with every field pyexec reads set to something valid."""
    doc = runc_default()
    doc["ociVersion"] = "1.1.0"
    doc["domainname"] = "example.test"
    doc["annotations"] = {"org.example.key": "value", "empty": ""}
    proc = doc["process"]
    proc.update({
        "consoleSize": {"height": 25, "width": 80},
        "user": {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [5, 6]},
        "capabilities": {s: ["CAP_CHOWN", "CAP_KILL", "CAP_KILL"] for s in
                         ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
                    {"type": "RLIMIT_CORE", "hard": 2 ** 64 - 1, "soft": 0}],
        "oomScoreAdj": -1000,
        "scheduler": {"policy": "SCHED_FIFO", "priority": 10, "nice": -5},
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 7},
    })
    doc["mounts"].append({"destination": "/etc/hosts", "source": "hosts", "options": ["rbind", "ro", "rprivate"]})
    doc["hooks"] = {
        "prestart": [{"path": "/bin/true"}],
        "createRuntime": [{"path": "/bin/echo", "args": ["echo", "hi"], "env": ["A=1"], "timeout": 5}],
        "poststop": [{"path": "/bin/true", "timeout": 1}],
    }
    linux = doc["linux"]
    linux["namespaces"] += [{"type": "user"}, {"type": "cgroup"}, {"type": "time"}]
    linux.update({
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0,
                     "gid": 0},
                    {"type": "p", "path": "/dev/fifo"}],
        "cgroupsPath": "/pyexec/test",
        "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536", "fs.mqueue.msg_max": "10"},
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
                    "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                                 {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                                  "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                                           {"index": 1, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]},
                                 {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]},
        "rootfsPropagation": "rslave",
        "personality": {"domain": "LINUX32"},
    })
    linux["resources"] = {
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                        "access": "rw"},
                    {"allow": True, "type": "b", "major": -1, "access": "r"}],
        "memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 2 << 30, "kernel": -1, "kernelTCP": -1,
                   "swappiness": 0, "disableOOMKiller": False, "useHierarchy": True, "checkBeforeUpdate": True},
        "cpu": {"shares": 1024, "quota": 50000, "burst": 10000, "period": 100000, "realtimeRuntime": 950000,
                "realtimePeriod": 1000000, "cpus": "0-1,3", "mems": "0", "idle": 0},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500, "leafWeight": 300,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 500}, {"major": 8, "minor": 16,
                                                                               "leafWeight": 100}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 30}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
        "unified": {"memory.high": "1073741824", "io.bfq.weight": "100"},
    }
    return doc


def write(bundle: Path, doc: Any) -> Path:
    (bundle / "config.json").write_text(json.dumps(doc))
    return bundle


def load(bundle: Path, doc: Any) -> OciConfig:
    return load_config(str(write(bundle, doc)))


DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> List[Union[str, int]]:
    return [name if name else int(index) for name, index in _STEP.findall(path)]


def mutate(doc: Dict[str, Any], path: str, value: Any) -> Dict[str, Any]:
    """A copy of ``doc`` with the value at ``path`` (``a.b[2].c``) set, or removed (DELETE); parents are made."""
    doc = copy.deepcopy(doc)
    steps = _steps(path)
    node: Any = doc
    for step, following in zip(steps, steps[1:]):
        if isinstance(step, str) and step not in node:
            node[step] = [] if isinstance(following, int) else {}
        node = node[step]
    last = steps[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    return doc


def lsm_paths(tmp_path: Path, *present: str) -> Dict[str, str]:
    """spec_linux.LSM_PATHS for a host with only the security modules ``present``."""
    paths = {name: str(tmp_path / f"lsm-{name}") for name in ("apparmor", "selinux")}
    for name in present:
        Path(paths[name]).mkdir(exist_ok=True)
    return paths
