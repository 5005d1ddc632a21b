"""pyexec.oci.spec: config.json validated whole, typed, every error naming its JSON path.

No root needed: the configs are written to tmp_path and only parsed. The
capability check asks the kernel through libcap, so these tests need the
compiled shim (pyexec.native), as the package's build makes it.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import pytest

pytest.importorskip("pyexec._shim", reason="pyexec.oci.spec checks capabilities through the compiled shim")

from pyexec.errors import ConfigError
from pyexec.native import lib
from pyexec.oci import spec_linux
from pyexec.oci.spec import (
    OciCapabilities,
    OciConfig,
    OciHook,
    OciRlimit,
    load_config,
    parse_config,
    parse_process,
)
from pyexec.oci.spec_resources import parse_resources

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


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


@pytest.fixture(autouse=True)
def no_lsm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host without AppArmor and SELinux, whatever this one has."""
    monkeypatch.setattr(spec_linux, "LSM_PATHS", {"apparmor": str(tmp_path / "no-apparmor"),
                                                  "selinux": str(tmp_path / "no-selinux")})


def write(bundle: Path, doc: Any) -> Path:
    (bundle / "config.json").write_text(json.dumps(doc))
    return bundle


def load(bundle: Path, doc: Any) -> OciConfig:
    return load_config(str(write(bundle, doc)))


# -- a path setter for the mutations ------------------------------------------------

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


# -- what loads -----------------------------------------------------------------------

def test_runc_default_loads_typed(bundle: Path):
    config = load(bundle, runc_default())
    assert config.bundle == str(bundle)
    assert config.oci_version == "1.0.2-dev"
    assert config.root.path == str(bundle / "rootfs") and config.root.readonly
    proc = config.process
    assert proc is not None
    assert proc.args == ("sh",) and proc.cwd == "/" and proc.terminal and proc.no_new_privileges
    assert proc.user.uid == 0 and proc.user.gid == 0 and proc.user.umask is None
    assert proc.capabilities == OciCapabilities(bounding=tuple(CAPS3), effective=tuple(CAPS3),
                                                permitted=tuple(CAPS3), ambient=tuple(CAPS3))
    assert proc.rlimits == (OciRlimit("RLIMIT_NOFILE", 7, 1024, 1024),)
    assert proc.oom_score_adj is None and proc.apparmor_profile is None
    assert config.hostname == "runc" and config.domainname is None
    assert [m.destination for m in config.mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                                                      "/sys/fs/cgroup"]
    dev = config.mounts[1]
    assert (dev.type, dev.source, dev.bind, dev.parsed.data) == ("tmpfs", "tmpfs", False, "mode=755,size=65536k")
    assert [ns.type for ns in config.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert config.linux.new_namespace("mount") and config.linux.namespace("user") is None
    assert config.linux.masked_paths == tuple(MASKED) and config.linux.readonly_paths == tuple(READONLY)
    assert config.linux.resources is not None and config.linux.resources.devices[0].allow is False
    assert config.linux.resources.devices[0].type == "a" and config.linux.resources.memory is None
    assert config.linux.seccomp is None and config.hooks.prestart == ()


def test_every_field_loads(bundle: Path):
    config = load(bundle, everything())
    proc = config.process
    assert proc is not None and proc.console_size is not None and proc.console_size.width == 80
    assert proc.user.additional_gids == (5, 6) and proc.user.umask == 0o22
    assert proc.capabilities is not None and proc.capabilities.inheritable == ("CAP_CHOWN", "CAP_KILL")  # dedup
    assert proc.rlimits[1].hard == 2 ** 64 - 1
    assert proc.scheduler is not None and (proc.scheduler.priority, proc.scheduler.nice) == (10, -5)
    assert proc.io_priority is not None and proc.io_priority.ioprio_class == "IOPRIO_CLASS_IDLE"
    hosts = config.mounts[-1]
    assert hosts.bind and hosts.source == str(bundle / "hosts") and hosts.parsed.recursive
    assert config.hooks.create_runtime == (OciHook("/bin/echo", ("echo", "hi"), ("A=1",), 5),)
    assert config.hooks.poststop[0].timeout == 1 and config.hooks.start_container == ()
    assert config.annotations == {"org.example.key": "value", "empty": ""}
    linux = config.linux
    assert linux.uid_mappings[0].host_id == 100000
    assert linux.time_offsets == {} and linux.new_namespace("time")
    assert linux.devices[0].file_mode == 0o666 and linux.devices[1].type == "p" and linux.devices[1].major == 0
    assert linux.cgroups_path == "/pyexec/test" and linux.rootfs_propagation == "rslave"
    assert linux.personality is not None and linux.personality.domain == "LINUX32"
    seccomp = linux.seccomp
    assert seccomp is not None and seccomp.default_errno_ret == 1 and seccomp.syscalls[2].errno_ret == 38
    assert seccomp.syscalls[1].args[1].value_two == 8 and seccomp.profile["defaultAction"] == "SCMP_ACT_ERRNO"
    res = linux.resources
    assert res is not None and res.memory is not None and res.cpu is not None and res.block_io is not None
    assert res.devices[2].major is None and res.devices[2].minor is None  # -1 and unset: any
    assert res.memory.swap == 2 << 30 and res.memory.swappiness == 0 and res.memory.check_before_update
    assert res.cpu.cpus == "0-1,3" and res.cpu.burst == 10000
    assert res.pids is not None and res.pids.limit == 100
    assert res.block_io.weight_device[1].weight is None and res.block_io.weight_device[1].leaf_weight == 100
    assert res.block_io.throttle_write_iops_device[0].rate == 100 and res.block_io.throttle_read_iops_device == ()
    assert res.hugepage_limits[0].page_size == "2MB"
    assert res.network is not None and res.network.priorities[0].name == "eth0"
    assert res.rdma["mlx5_1"].hca_objects == 10000 and res.unified["memory.high"] == "1073741824"


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.1.0-rc.1", "1.0.1+build"])
def test_supported_versions(bundle: Path, version: str):
    assert load(bundle, mutate(runc_default(), "ociVersion", version)).oci_version == version


def test_unknown_properties_are_ignored(bundle: Path):
    doc = runc_default()
    doc["unknown"] = "unknown"
    doc["process"]["somethingNew"] = {"x": 1}
    doc["mounts"][0]["future"] = True
    doc["linux"]["netDevices"] = {"eth0": {}}
    doc["linux"]["resources"]["memory"] = {"limit": 1 << 20, "newThing": 3}
    assert load(bundle, doc).linux.resources.memory.limit == 1 << 20  # type: ignore[union-attr]


def test_null_is_absent(bundle: Path):
    # Go's encoding/json writes nil lists of fields without omitempty as null.
    doc = runc_default()
    doc["process"]["capabilities"] = None
    doc["process"]["env"] = None
    doc["linux"]["seccomp"] = None
    doc["hooks"] = {"prestart": None}
    config = load(bundle, doc)
    assert config.process is not None and config.process.capabilities is None and config.process.env == ()
    assert config.linux.seccomp is None and config.hooks.prestart == ()


def test_root_path_relative_to_the_bundle(bundle: Path):
    assert load(bundle, mutate(runc_default(), "root.path", ".")).root.path == str(bundle)
    assert load(bundle, mutate(runc_default(), "root.path", str(bundle / "rootfs"))).root.path == str(bundle / "rootfs")


def test_root_path_is_the_real_one(bundle: Path):
    os.symlink("rootfs", bundle / "link")
    assert load(bundle, mutate(runc_default(), "root.path", "link")).root.path == str(bundle / "rootfs")


def test_process_may_be_absent(bundle: Path):
    # runtime-spec: process is required by start, not by create (runtime-tools' start test).
    assert load(bundle, mutate(runc_default(), "process", DELETE)).process is None


def test_bind_detected_by_type_or_option(bundle: Path):
    doc = runc_default()
    doc["mounts"] = [{"destination": "/a", "type": "bind", "source": "/etc"},
                     {"destination": "/b", "type": "none", "source": "/etc", "options": ["rbind", "ro"]},
                     {"destination": "/c", "source": "/etc", "options": ["bind"]}]
    mounts = load(bundle, doc).mounts
    assert [(m.bind, m.parsed.recursive, m.parsed.readonly) for m in mounts] == [
        (True, False, False), (True, True, True), (True, False, False)]


def test_mount_option_words_in_order(bundle: Path):
    doc = mutate(runc_default(), "mounts[1].options", ["ro", "nosuid", "rw", "suid", "noexec", "shared", "rslave",
                                                       "mode=700", "uid=1"])
    parsed = load(bundle, doc).mounts[1].parsed
    assert parsed.flags == lib.MS_NOEXEC
    assert parsed.propagation == (lib.MS_SHARED, lib.MS_SLAVE | lib.MS_REC)
    assert parsed.data == "mode=700,uid=1"


def test_bind_takes_unknown_words_as_data(bundle: Path):
    # runtime-tools' mounts test gives its binds tmpfs words; mount(2) ignores a bind's data, as runc lets it.
    doc = mutate(runc_default(), "mounts[7]", {"destination": "/mnt/etc", "source": "/etc",
                                               "options": ["nosuid", "strictatime", "mode=755", "size=1k", "bind"]})
    parsed = load(bundle, doc).mounts[7].parsed
    assert (parsed.flags, parsed.data) == (lib.MS_NOSUID | lib.MS_STRICTATIME, "mode=755,size=1k")


def test_lsm_fields_accepted_where_the_module_is(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "aa").mkdir()
    (tmp_path / "se").mkdir()
    monkeypatch.setattr(spec_linux, "LSM_PATHS", {"apparmor": str(tmp_path / "aa"), "selinux": str(tmp_path / "se")})
    doc = mutate(runc_default(), "process.apparmorProfile", "acme_secure_profile")
    doc = mutate(doc, "process.selinuxLabel", "system_u:system_r:container_t:s0")
    doc = mutate(doc, "linux.mountLabel", "system_u:object_r:svirt_sandbox_file_t:s0:c715,c811")
    config = load(bundle, doc)
    assert config.process is not None and config.process.apparmor_profile == "acme_secure_profile"
    assert config.linux.mount_label == "system_u:object_r:svirt_sandbox_file_t:s0:c715,c811"


def test_unset_lsm_fields_need_no_module(bundle: Path):
    doc = mutate(runc_default(), "process.apparmorProfile", "")  # "" is unset, as omitempty writes it
    assert load(bundle, doc).process.apparmor_profile is None  # type: ignore[union-attr]


def test_parse_process_for_exec_names_its_own_paths():
    proc = parse_process({"args": ["ls"], "cwd": "/tmp", "env": ["A=b=c"]})
    assert proc.env == ("A=b=c",)
    with pytest.raises(ConfigError) as info:
        parse_process({"args": ["ls"], "cwd": "tmp"}, path="")
    assert info.value.field == "cwd"


def test_update_resources_as_docker_sends_them():
    # Docker fills every field, with zeros for what it does not set and -1 for no pids limit.
    value = {"memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0, "kernelTCP": 0},
             "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0,
                     "cpus": "", "mems": ""},
             "pids": {"limit": -1}, "blockIO": {"weight": 0}}
    res = parse_resources(value, path="")
    assert res.cpu is not None and res.cpu.cpus is None and res.pids is not None and res.pids.limit == -1
    with pytest.raises(ConfigError) as info:
        parse_resources({"memory": {"limit": "1G"}}, path="")
    assert info.value.field == "memory.limit"


def test_parse_config_takes_a_document(bundle: Path):
    assert parse_config(runc_default(), str(bundle)).hostname == "runc"


# -- what does not: the file itself -------------------------------------------------------

def test_missing_config_json(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.field == "config.json"
    assert str(info.value) == f"config.json: '{tmp_path}/config.json' cannot be read: No such file or directory"


def test_unreadable_config_json(tmp_path: Path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match="cannot be read: Is a directory"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("text", ["{", "", "\xff", "[1, 2"])
def test_config_json_that_is_not_json(tmp_path: Path, text: str):
    (tmp_path / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not JSON") as info:
        load_config(str(tmp_path))
    assert info.value.field == "config.json"


@pytest.mark.parametrize("doc", [[], "x", 3, None])
def test_config_that_is_not_an_object(bundle: Path, doc: Any):
    with pytest.raises(ConfigError, match="must be an object"):
        load(bundle, doc)


# -- what does not: one field at a time -------------------------------------------------------

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


@pytest.mark.parametrize("field, value, text", [
    ("ociVersion", "2.0.0", "ociVersion: '2.0.0' is not a supported runtime-spec version (1.0.0 to 1.1.x)"),
    ("linux.intelRdt", {"closID": "x"}, "linux.intelRdt: {'closID': 'x'} is not supported "
                                        "(pyexec does not manage resctrl)"),
    ("process.user.uid", True, "process.user.uid: True must be an integer, not a boolean"),
    ("process.cwd", DELETE, "process.cwd: <missing> is required"),
    ("linux.resources.memory.swappiness", 101, "linux.resources.memory.swappiness: 101 is out of range (0 to 100)"),
    ("solaris", {}, "solaris: {} is not supported on Linux"),
])
def test_messages_read_whole(bundle: Path, field: str, value: Any, text: str):
    with pytest.raises(ConfigError) as info:
        load(bundle, mutate(runc_default(), field, value))
    assert str(info.value) == text


def test_nothing_is_made_while_validating(bundle: Path):
    write(bundle, mutate(everything(), "linux.resources.pids.limit", "x"))
    before = sorted(os.listdir(bundle))
    with pytest.raises(ConfigError):
        load_config(str(bundle))
    assert sorted(os.listdir(bundle)) == before == ["config.json", "rootfs"]
