"""pyexec.oci.spec: each bad value of a config.json, one at a time, is refused naming its JSON path.

Every case changes runc's default config in one place (or a few, to set the
scene) and expects a ConfigError whose field is exactly the path of the
offending value. No root needed; the capability check needs the compiled shim.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import pytest

pytest.importorskip("pyexec._shim", reason="pyexec.oci.spec checks capabilities through the compiled shim")

from oci_configs import DELETE, load, lsm_paths, mutate, runc_default
from pyexec.errors import ConfigError
from pyexec.oci import spec_linux


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


@pytest.fixture(autouse=True)
def no_lsm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host without AppArmor and SELinux, whatever this one has."""
    monkeypatch.setattr(spec_linux, "LSM_PATHS", lsm_paths(tmp_path))


def _nested_userns(doc: Dict[str, Any]) -> Dict[str, Any]:
    doc = mutate(doc, "linux.namespaces[5]", {"type": "user"})
    return mutate(doc, "linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 10}])


def _no_uts(doc: Dict[str, Any]) -> Dict[str, Any]:
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != "uts"]
    return doc


def _no_net(doc: Dict[str, Any]) -> Dict[str, Any]:
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != "network"]
    return doc


def _with_time_ns(doc: Dict[str, Any]) -> Dict[str, Any]:
    return mutate(doc, "linux.namespaces[5]", {"type": "time"})


SECCOMP = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                                             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
BIND = {"destination": "/mnt", "source": "/etc", "options": ["rbind"]}

Mutation = Union[Tuple[str, Any], Callable[[Dict[str, Any]], Dict[str, Any]]]

# (what to change: (path, value) or a function, the field the error must name)
BAD: Dict[str, Tuple[List[Mutation], str]] = {
    "version": ([("ociVersion", "2.0.0")], "ociVersion"),
    "version unset": ([("ociVersion", DELETE)], "ociVersion"),
    "version not semver": ([("ociVersion", "1.0")], "ociVersion"),
    "version int": ([("ociVersion", 1)], "ociVersion"),
    "root unset": ([("root", DELETE)], "root"),
    "root path missing": ([("root.path", "nope")], "root.path"),
    "root path unset": ([("root.path", DELETE)], "root.path"),
    "root readonly str": ([("root.readonly", "true")], "root.readonly"),
    "solaris": ([("solaris", {})], "solaris"),
    "windows": ([("windows", {"layerFolders": []})], "windows"),
    "vm": ([("vm", {"kernel": {"path": "/k"}})], "vm"),
    "zos": ([("zos", {})], "zos"),
    "process not object": ([("process", ["sh"])], "process"),
    "args empty": ([("process.args", [])], "process.args"),
    "args unset": ([("process.args", DELETE)], "process.args"),
    "args str": ([("process.args", "sh")], "process.args"),
    "args item int": ([("process.args", ["sh", 1])], "process.args[1]"),
    "args0 empty": ([("process.args", [""])], "process.args[0]"),
    "args NUL": ([("process.args", ["sh", "a\0b"])], "process.args[1]"),
    "commandLine": ([("process.commandLine", "cmd.exe")], "process.commandLine"),
    "cwd relative": ([("process.cwd", "tmp")], "process.cwd"),
    "cwd unset": ([("process.cwd", DELETE)], "process.cwd"),
    "env no =": ([("process.env", ["PATH=/bin", "NOEQUALS"])], "process.env[1]"),
    "env empty key": ([("process.env", ["=x"])], "process.env[0]"),
    "terminal str": ([("process.terminal", "yes")], "process.terminal"),
    "terminal int": ([("process.terminal", 1)], "process.terminal"),
    "consoleSize width": ([("process.consoleSize", {"height": 10})], "process.consoleSize.width"),
    "consoleSize neg": ([("process.consoleSize", {"height": -1, "width": 1})], "process.consoleSize.height"),
    "uid negative": ([("process.user.uid", -1)], "process.user.uid"),
    "uid bool": ([("process.user.uid", True)], "process.user.uid"),
    "uid str": ([("process.user.uid", "0")], "process.user.uid"),
    "uid float": ([("process.user.uid", 0.0)], "process.user.uid"),
    "uid unset": ([("process.user.uid", DELETE)], "process.user.uid"),
    "gid too big": ([("process.user.gid", 2 ** 32)], "process.user.gid"),
    "username": ([("process.user.username", "admin")], "process.user.username"),
    "additionalGids": ([("process.user.additionalGids", [1, "x"])], "process.user.additionalGids[1]"),
    "umask": ([("process.user.umask", 0o1000)], "process.user.umask"),
    "cap unknown": ([("process.capabilities.bounding[1]", "CAP_TEST")], "process.capabilities.bounding[1]"),
    "cap lower case": ([("process.capabilities.effective", ["cap_kill"])], "process.capabilities.effective[0]"),
    "cap ALL": ([("process.capabilities.ambient", ["ALL"])], "process.capabilities.ambient[0]"),
    "caps not list": ([("process.capabilities.permitted", "CAP_KILL")], "process.capabilities.permitted"),
    "rlimit type": ([("process.rlimits[0].type", "RLIMIT_TEST")], "process.rlimits[0].type"),
    "rlimit type lower": ([("process.rlimits[0].type", "rlimit_nofile")], "process.rlimits[0].type"),
    "rlimit duplicate": ([("process.rlimits[1]", {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1})],
                         "process.rlimits[1].type"),
    "rlimit soft above hard": ([("process.rlimits[0].soft", 2048)], "process.rlimits[0].soft"),
    "rlimit hard float": ([("process.rlimits[0].hard", 1.5)], "process.rlimits[0].hard"),
    "rlimit hard neg": ([("process.rlimits[0].hard", -1)], "process.rlimits[0].hard"),
    "rlimit soft unset": ([("process.rlimits[0].soft", DELETE)], "process.rlimits[0].soft"),
    "noNewPrivileges": ([("process.noNewPrivileges", 1)], "process.noNewPrivileges"),
    "oomScoreAdj": ([("process.oomScoreAdj", 1001)], "process.oomScoreAdj"),
    "apparmor without module": ([("process.apparmorProfile", "p")], "process.apparmorProfile"),
    "selinux without module": ([("process.selinuxLabel", "l")], "process.selinuxLabel"),
    "ioprio class": ([("process.ioPriority", {"class": "IOPRIO_CLASS_X", "priority": 0})],
                     "process.ioPriority.class"),
    "ioprio priority": ([("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8})],
                        "process.ioPriority.priority"),
    "scheduler policy": ([("process.scheduler", {"policy": "SCHED_FAST"})], "process.scheduler.policy"),
    "scheduler flag": ([("process.scheduler", {"policy": "SCHED_RR", "priority": 1, "flags": ["X"]})],
                       "process.scheduler.flags[0]"),
    "scheduler flag unsupported": ([("process.scheduler", {"policy": "SCHED_OTHER",
                                                           "flags": ["SCHED_FLAG_RESET_ON_FORK"]})],
                                   "process.scheduler.flags[0]"),
    "scheduler deadline": ([("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 1})],
                           "process.scheduler.policy"),
    "scheduler iso": ([("process.scheduler", {"policy": "SCHED_ISO"})], "process.scheduler.policy"),
    "scheduler runtime": ([("process.scheduler", {"policy": "SCHED_OTHER", "runtime": 5})],
                          "process.scheduler.runtime"),
    "scheduler rt priority": ([("process.scheduler", {"policy": "SCHED_FIFO"})], "process.scheduler.priority"),
    "scheduler other priority": ([("process.scheduler", {"policy": "SCHED_BATCH", "priority": 5})],
                                 "process.scheduler.priority"),
    "scheduler nice": ([("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20})], "process.scheduler.nice"),
    "hostname long": ([("hostname", "h" * 65)], "hostname"),
    "hostname int": ([("hostname", 5)], "hostname"),
    "hostname without uts": ([("hostname", "x"), _no_uts], "hostname"),
    "domainname without uts": ([("hostname", DELETE), ("domainname", "x"), _no_uts], "domainname"),
    "mounts not list": ([("mounts", {})], "mounts"),
    "mount destination relative": ([("mounts[2].destination", "dev/pts")], "mounts[2].destination"),
    "mount destination unset": ([("mounts[2].destination", DELETE)], "mounts[2].destination"),
    "mount option int": ([("mounts[1].options[1]", 7)], "mounts[1].options[1]"),
    "mount uidMappings": ([("mounts[0].uidMappings", [{"containerID": 0, "hostID": 0, "size": 1}])],
                          "mounts[0].uidMappings"),
    "mount gidMappings": ([("mounts[0].gidMappings", [])], "mounts[0].gidMappings"),
    "mount recursive attr": ([("mounts[6].options[5]", "rro")], "mounts[6].options[5]"),
    "mount tmpcopyup": ([("mounts[3].options[5]", "tmpcopyup")], "mounts[3].options[5]"),
    "mount idmap": ([("mounts[7]", dict(BIND, options=["rbind", "idmap"]))], "mounts[7].options[1]"),
    "bind without source": ([("mounts[7]", {"destination": "/x", "options": ["bind"]})], "mounts[7].source"),
    "mount without type": ([("mounts[0].type", DELETE)], "mounts[0].type"),
    "bind with sync": ([("mounts[7]", dict(BIND, options=["rbind", "sync"]))], "mounts[7].options[1]"),
    "mount option comma": ([("mounts[1].options[2]", "mode=755,size=1k")], "mounts[1].options[2]"),
    "hook path relative": ([("hooks.prestart[0]", {"path": "bin/true"})], "hooks.prestart[0].path"),
    "hook path unset": ([("hooks.createContainer[0]", {"args": ["x"]})], "hooks.createContainer[0].path"),
    "hook timeout zero": ([("hooks.poststop[0]", {"path": "/bin/true", "timeout": 0})], "hooks.poststop[0].timeout"),
    "hook args": ([("hooks.poststart[0]", {"path": "/bin/true", "args": "x"})], "hooks.poststart[0].args"),
    "hook env": ([("hooks.startContainer[0]", {"path": "/bin/true", "env": ["X"]})],
                 "hooks.startContainer[0].env[0]"),
    "annotation value": ([("annotations", {"a": 1})], "annotations.a"),
    "annotation dotted key": ([("annotations", {"org.x": 1})], 'annotations["org.x"]'),
    "annotation empty key": ([("annotations", {"": "x"})], "annotations"),
    "linux not object": ([("linux", [])], "linux"),
    "intelRdt": ([("linux.intelRdt", {"closID": "x"})], "linux.intelRdt"),
    "namespace type": ([("linux.namespaces[0].type", "foo")], "linux.namespaces[0].type"),
    "namespace type unset": ([("linux.namespaces[0]", {})], "linux.namespaces[0].type"),
    "namespace duplicate": ([("linux.namespaces[5]", {"type": "pid"})], "linux.namespaces[5].type"),
    "namespace path relative": ([("linux.namespaces[0].path", "proc/1/ns/pid")], "linux.namespaces[0].path"),
    "mappings without userns": ([("linux.uidMappings", [{"containerID": 0, "hostID": 0, "size": 1}])],
                                "linux.uidMappings"),
    "userns without mappings": ([("linux.namespaces[5]", {"type": "user"})], "linux.uidMappings"),
    "mappings of joined userns": ([_nested_userns, ("linux.namespaces[5].path", "/proc/1/ns/user")],
                                  "linux.uidMappings"),
    "mapping size zero": ([_nested_userns, ("linux.uidMappings[0].size", 0)], "linux.uidMappings[0].size"),
    "mapping past the end": ([_nested_userns, ("linux.uidMappings[0].hostID", 2 ** 32 - 5)],
                             "linux.uidMappings[0].size"),
    "mapping overlap": ([_nested_userns, ("linux.uidMappings[1]", {"containerID": 5, "hostID": 5000, "size": 1})],
                        "linux.uidMappings[1]"),
    "gid mapping unset": ([_nested_userns], "linux.gidMappings"),
    "timeOffsets without timens": ([("linux.timeOffsets", {"monotonic": {"secs": 1}})], "linux.timeOffsets"),
    "timeOffsets clock": ([_with_time_ns, ("linux.timeOffsets", {"realtime": {"secs": 1}})],
                          "linux.timeOffsets.realtime"),
    "timeOffsets nanosecs": ([_with_time_ns, ("linux.timeOffsets", {"boottime": {"nanosecs": 10 ** 9}})],
                             "linux.timeOffsets.boottime.nanosecs"),
    "timeOffsets unsupported": ([_with_time_ns, ("linux.timeOffsets", {"monotonic": {"secs": 1, "nanosecs": 5}})],
                                "linux.timeOffsets"),
    "device type": ([("linux.devices[0]", {"type": "x", "path": "/dev/x"})], "linux.devices[0].type"),
    "device path relative": ([("linux.devices[0]", {"type": "p", "path": "dev/x"})], "linux.devices[0].path"),
    "device major unset": ([("linux.devices[0]", {"type": "c", "path": "/dev/x", "minor": 1})],
                           "linux.devices[0].major"),
    "device major too big": ([("linux.devices[0]", {"type": "b", "path": "/dev/x", "major": 4096, "minor": 0})],
                             "linux.devices[0].major"),
    "device fileMode": ([("linux.devices[0]", {"type": "p", "path": "/dev/x", "fileMode": 0o10000})],
                        "linux.devices[0].fileMode"),
    "device uid": ([("linux.devices[0]", {"type": "p", "path": "/dev/x", "uid": -1})], "linux.devices[0].uid"),
    "device duplicate": ([("linux.devices", [{"type": "p", "path": "/dev/x"}, {"type": "p", "path": "/dev//x"}])],
                         "linux.devices[1].path"),
    "sysctl of the host": ([("linux.sysctl", {"vm.swappiness": "1"})], 'linux.sysctl["vm.swappiness"]'),
    "sysctl without netns": ([("linux.sysctl", {"net.ipv4.ip_forward": "1"}), _no_net],
                             'linux.sysctl["net.ipv4.ip_forward"]'),
    "sysctl path escape": ([("linux.sysctl", {"net/../../x": "1"})], 'linux.sysctl["net/../../x"]'),
    "sysctl value": ([("linux.sysctl", {"kernel.shmmax": 1})], 'linux.sysctl["kernel.shmmax"]'),
    "seccomp defaultAction unset": ([("linux.seccomp", {})], "linux.seccomp.defaultAction"),
    "seccomp defaultAction": ([("linux.seccomp", {"defaultAction": "SCMP_ACT_FOO"})], "linux.seccomp.defaultAction"),
    "seccomp notify": ([("linux.seccomp", {"defaultAction": "SCMP_ACT_NOTIFY"})], "linux.seccomp.defaultAction"),
    "seccomp arch": ([("linux.seccomp", dict(SECCOMP, architectures=["SCMP_ARCH_FOO"]))],
                     "linux.seccomp.architectures[0]"),
    "seccomp flag unsupported": ([("linux.seccomp", dict(SECCOMP, flags=["SECCOMP_FILTER_FLAG_LOG"]))],
                                 "linux.seccomp.flags[0]"),
    "seccomp flag unknown": ([("linux.seccomp", dict(SECCOMP, flags=["SECCOMP_FILTER_FLAG_TSYNC", "X"]))],
                             "linux.seccomp.flags[1]"),
    "seccomp errno of kill": ([("linux.seccomp", {"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1})],
                              "linux.seccomp.defaultErrnoRet"),
    "seccomp metadata alone": ([("linux.seccomp", dict(SECCOMP, listenerMetadata="x"))],
                               "linux.seccomp.listenerMetadata"),
    "syscall names empty": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].names", [])],
                            "linux.seccomp.syscalls[0].names"),
    "syscall names unset": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].names", DELETE)],
                            "linux.seccomp.syscalls[0].names"),
    "syscall name empty": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].names", ["read", ""])],
                           "linux.seccomp.syscalls[0].names[1]"),
    "syscall action": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].action", "SCMP_ACT_NOTIFY")],
                       "linux.seccomp.syscalls[0].action"),
    "syscall errno of allow": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].errnoRet", 1)],
                               "linux.seccomp.syscalls[0].errnoRet"),
    "syscall arg index": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].args[0].index", 6)],
                          "linux.seccomp.syscalls[0].args[0].index"),
    "syscall arg op": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].args[0].op", "SCMP_CMP_FOO")],
                       "linux.seccomp.syscalls[0].args[0].op"),
    "syscall arg value": ([("linux.seccomp", SECCOMP), ("linux.seccomp.syscalls[0].args[0].value", -1)],
                          "linux.seccomp.syscalls[0].args[0].value"),
    "rootfsPropagation": ([("linux.rootfsPropagation", "bogus")], "linux.rootfsPropagation"),
    "maskedPaths relative": ([("linux.maskedPaths[10]", "masked-relpath")], "linux.maskedPaths[10]"),
    "readonlyPaths int": ([("linux.readonlyPaths[0]", 5)], "linux.readonlyPaths[0]"),
    "mountLabel without selinux": ([("linux.mountLabel", "system_u:object_r:x:s0")], "linux.mountLabel"),
    "personality domain": ([("linux.personality", {"domain": "LINUX64"})], "linux.personality.domain"),
    "personality flags": ([("linux.personality", {"domain": "LINUX", "flags": ["X"]})],
                          "linux.personality.flags[0]"),
    "memory limit str": ([("linux.resources.memory.limit", "1G")], "linux.resources.memory.limit"),
    "memory limit below -1": ([("linux.resources.memory.limit", -2)], "linux.resources.memory.limit"),
    "memory swappiness": ([("linux.resources.memory.swappiness", 101)], "linux.resources.memory.swappiness"),
    "memory swap below limit": ([("linux.resources.memory", {"limit": 100 << 20, "swap": 50 << 20})],
                                "linux.resources.memory.swap"),
    "memory disableOOMKiller": ([("linux.resources.memory.disableOOMKiller", "true")],
                                "linux.resources.memory.disableOOMKiller"),
    "cpu cpus": ([("linux.resources.cpu.cpus", "0-a")], "linux.resources.cpu.cpus"),
    "cpu quota range": ([("linux.resources.cpu.quota", 2 ** 63)], "linux.resources.cpu.quota"),
    "cpu burst above quota": ([("linux.resources.cpu", {"quota": 1000, "burst": 2000})], "linux.resources.cpu.burst"),
    "cpu shares negative": ([("linux.resources.cpu.shares", -1)], "linux.resources.cpu.shares"),
    "cpu idle": ([("linux.resources.cpu.idle", 2)], "linux.resources.cpu.idle"),
    "pids limit unset": ([("linux.resources.pids", {})], "linux.resources.pids.limit"),
    "pids limit bool": ([("linux.resources.pids.limit", True)], "linux.resources.pids.limit"),
    "blkio weight": ([("linux.resources.blockIO.weight", 70000)], "linux.resources.blockIO.weight"),
    "blkio weightDevice no weight": ([("linux.resources.blockIO.weightDevice[0]", {"major": 8, "minor": 0})],
                                     "linux.resources.blockIO.weightDevice[0]"),
    "blkio throttle rate unset": ([("linux.resources.blockIO.throttleReadBpsDevice[0]", {"major": 8, "minor": 0})],
                                  "linux.resources.blockIO.throttleReadBpsDevice[0].rate"),
    "hugepage size": ([("linux.resources.hugepageLimits[0]", {"pageSize": "2M", "limit": 1})],
                      "linux.resources.hugepageLimits[0].pageSize"),
    "net_prio priority": ([("linux.resources.network.priorities[0]", {"name": "eth0", "priority": -1})],
                          "linux.resources.network.priorities[0].priority"),
    "net_cls classID": ([("linux.resources.network.classID", "1")], "linux.resources.network.classID"),
    "rdma empty": ([("linux.resources.rdma", {"mlx5_1": {}})], "linux.resources.rdma.mlx5_1"),
    "unified key escape": ([("linux.resources.unified", {"../x": "1"})], 'linux.resources.unified["../x"]'),
    "unified value": ([("linux.resources.unified", {"memory.high": 1})], 'linux.resources.unified["memory.high"]'),
    "device rule allow unset": ([("linux.resources.devices[0]", {"access": "rwm"})],
                                "linux.resources.devices[0].allow"),
    "device rule access": ([("linux.resources.devices[0].access", "rwx")], "linux.resources.devices[0].access"),
    "device rule type": ([("linux.resources.devices[0].type", "z")], "linux.resources.devices[0].type"),
    "device rule major": ([("linux.resources.devices[0].major", -2)], "linux.resources.devices[0].major"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_field_is_named(bundle: Path, case: str):
    mutations, field = BAD[case]
    doc = runc_default()
    for mutation in mutations:
        doc = mutation(doc) if callable(mutation) else mutate(doc, *mutation)
    with pytest.raises(ConfigError) as info:
        load(bundle, doc)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
