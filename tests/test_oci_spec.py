"""pyexec.oci.spec: config.json validated whole, typed, every error naming its JSON path.

No root needed: the configs are written to tmp_path and only parsed. The
capability check asks the kernel through libcap, so these tests need the
compiled shim (pyexec.native), as the package's build makes it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyexec._shim", reason="pyexec.oci.spec checks capabilities through the compiled shim")

from oci_configs import CAPS3, DELETE, MASKED, READONLY, everything, load, lsm_paths, mutate, runc_default, write
from pyexec.errors import ConfigError
from pyexec.native import lib
from pyexec.oci import spec_linux
from pyexec.oci.spec import OciCapabilities, OciHook, OciRlimit, load_config, parse_config, parse_process
from pyexec.oci.spec_resources import parse_resources


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


@pytest.fixture(autouse=True)
def no_lsm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host without AppArmor and SELinux, whatever this one has."""
    monkeypatch.setattr(spec_linux, "LSM_PATHS", lsm_paths(tmp_path))


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
    monkeypatch.setattr(spec_linux, "LSM_PATHS", lsm_paths(tmp_path, "apparmor", "selinux"))
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
