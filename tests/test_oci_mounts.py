"""pyexec.oci.mounts and rootpath: the container's mount plan, and paths resolved inside its root.

The plan only produces ops, so nothing here needs root or mounts anything:
the rootfs is a directory under tmp_path. The op kinds and MS_* flags come
from the compiled shim (pyexec.native).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

pytest.importorskip("pyexec._shim", reason="the mount plan's op kinds and flags come from the compiled shim")

from oci_configs import lsm_paths, mutate, runc_default
from pyexec.cgroups.mounts import MountEntry
from pyexec.errors import ConfigError
from pyexec.native import lib
from pyexec.oci import spec_linux
from pyexec.oci.mounts import DEFAULT_DEVICES, encode_dev, mount_plan
from pyexec.oci.rootpath import Kind, Node, host_probe, resolve_in_root
from pyexec.oci.spec import OciConfig, load_config
from pyexec.rootfs import MountOp

V2 = [MountEntry("cgroup2", "/sys/fs/cgroup", "/", ("rw", "nsdelegate"))]
V1 = [MountEntry("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "/", ("rw", "cpu", "cpuacct")),
      MountEntry("cgroup", "/sys/fs/cgroup/memory", "/", ("rw", "memory")),
      MountEntry("cgroup", "/sys/fs/cgroup/systemd", "/", ("rw", "xattr", "release_agent=/x", "name=systemd")),
      MountEntry("cgroup2", "/sys/fs/cgroup/unified", "/", ("rw",)),
      MountEntry("cgroup", "/elsewhere/pids", "/", ("rw", "pids"))]

OP_NAMES = {getattr(lib, name): name[6:] for name in dir(lib) if name.startswith("PX_OP_")}
NOSUID, NODEV, NOEXEC, RDONLY = lib.MS_NOSUID, lib.MS_NODEV, lib.MS_NOEXEC, lib.MS_RDONLY


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for name in ("proc", "dev", "sys", "etc", "tmp", "run"):
        (root / name).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return tmp_path


def config_of(bundle: Path, doc: Dict[str, Any]) -> OciConfig:
    (bundle / "config.json").write_text(json.dumps(doc))
    return load_config(str(bundle))


def plan_of(bundle: Path, doc: Dict[str, Any], **kw: Any) -> List[MountOp]:
    kw.setdefault("cgroup_entries", V2)
    config = config_of(bundle, doc)
    return mount_plan(config, config.root.path, **kw)


def brief(ops: List[MountOp], root: Path) -> List[Tuple[Any, ...]]:
    """(kind name, target with the rootfs as "R", then what is set of source, fstype, flags, data, bind_flags)."""
    out = []
    for op in ops:
        target = op.target.replace(str(root / "rootfs"), "R")
        extra = tuple(v for v in (op.source, op.fstype, op.flags or None, op.data, op.bind_flags or None)
                      if v is not None)
        out.append((OP_NAMES[op.kind], target) + extra)
    return out


def doc_with_mounts(*mounts: Dict[str, Any], **linux: Any) -> Dict[str, Any]:
    doc = runc_default()
    doc["mounts"] = list(mounts)
    doc["linux"].update(linux)
    return doc


# -- rootpath.resolve_in_root ---------------------------------------------------------------

@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "var" / "run").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("x")
    os.symlink("../var/run", r / "run")                 # relative, inside
    os.symlink("/", r / "etc" / "to-root")              # absolute: the container's root
    os.symlink("/host/dev", r / "devlink")              # absolute, to something missing
    os.symlink("../../../../../../..", r / "up")        # climbing out
    os.symlink("../run/resolv.conf", r / "etc" / "resolv.conf")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    return r


@pytest.mark.parametrize("path, resolved, kind, missing", [
    ("/etc", "/etc", Kind.DIR, ()),
    ("/", "/", Kind.DIR, ()),
    ("//etc/./", "/etc", Kind.DIR, ()),
    ("/etc/passwd", "/etc/passwd", Kind.OTHER, ()),
    ("/a/b/c", "/a/b/c", Kind.MISSING, ("/a", "/a/b", "/a/b/c")),
    ("/etc/x/y", "/etc/x/y", Kind.MISSING, ("/etc/x", "/etc/x/y")),
    ("/run/x", "/var/run/x", Kind.MISSING, ("/var/run/x",)),
    ("/etc/to-root/etc/passwd", "/etc/passwd", Kind.OTHER, ()),
    ("/devlink/pts", "/host/dev/pts", Kind.MISSING, ("/host", "/host/dev", "/host/dev/pts")),
    ("/up/etc", "/etc", Kind.DIR, ()),
    ("/../../../etc", "/etc", Kind.DIR, ()),
    ("/etc/resolv.conf", "/var/run/resolv.conf", Kind.MISSING, ("/var/run/resolv.conf",)),
    ("/a/../etc", "/etc", Kind.DIR, ()),
    ("/run/../etc", "/var/etc", Kind.MISSING, ("/var/etc",)),  # ".." after a symlink: its target's parent
])
def test_resolve_in_root(root: Path, path: str, resolved: str, kind: Kind, missing: Tuple[str, ...]):
    result = resolve_in_root(path, host_probe(str(root)), "f")
    assert (result.path, result.kind, result.missing) == (resolved, kind, missing)


def test_resolve_never_looks_outside_the_root(root: Path):
    seen: List[str] = []

    def probe(path: str) -> Node:
        seen.append(path)
        return host_probe(str(root))(path)

    for path in ("/up/up/etc/to-root/devlink/x", "/etc/to-root/../../run/../../up", "/devlink/../../etc"):
        resolve_in_root(path, probe, "f")
    assert seen and all(p.startswith("/") and ".." not in p.split("/") for p in seen)


def test_resolve_keeps_a_last_symlink_when_asked(root: Path):
    result = resolve_in_root("/etc/resolv.conf", host_probe(str(root)), "f", follow_last=False)
    assert (result.path, result.kind) == ("/etc/resolv.conf", Kind.LINK)
    # ... but still follows one on the way.
    assert resolve_in_root("/run/x", host_probe(str(root)), "f", follow_last=False).path == "/var/run/x"


def test_resolve_symlink_loop(root: Path):
    with pytest.raises(ConfigError, match="too many levels of symbolic links") as info:
        resolve_in_root("/loop1/x", host_probe(str(root)), "mounts[0].destination")
    assert info.value.field == "mounts[0].destination"


def test_resolve_through_a_file(root: Path):
    with pytest.raises(ConfigError, match="goes through '/etc/passwd', which is not a directory"):
        resolve_in_root("/etc/passwd/x", host_probe(str(root)), "f")


def test_resolve_reports_a_failing_probe():
    def probe(path: str) -> Node:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(ConfigError, match="cannot be looked up at '/a': Permission denied"):
        resolve_in_root("/a/b", probe, "f")


# -- the plan ---------------------------------------------------------------------------------

def test_runc_default_plan(bundle: Path):
    ops = plan_of(bundle, runc_default())
    assert brief(ops, bundle) == [
        ("MOUNT", "/", lib.MS_SLAVE | lib.MS_REC),
        ("BIND", "R", str(bundle / "rootfs"), lib.PX_BIND_RECURSIVE),
        ("MOUNT", "R/proc", "proc", "proc"),
        ("MOUNT", "R/dev", "tmpfs", "tmpfs", NOSUID | lib.MS_STRICTATIME, "mode=755,size=65536k"),
        ("MKDIR", "R/dev/pts"),
        ("MOUNT", "R/dev/pts", "devpts", "devpts", NOSUID | NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("MKDIR", "R/dev/shm"),
        ("MOUNT", "R/dev/shm", "shm", "tmpfs", NOSUID | NODEV | NOEXEC, "mode=1777,size=65536k"),
        ("MKDIR", "R/dev/mqueue"),
        ("MOUNT", "R/dev/mqueue", "mqueue", "mqueue", NOSUID | NODEV | NOEXEC),
        ("MOUNT", "R/sys", "sysfs", "sysfs", NOSUID | NODEV | NOEXEC | RDONLY),
        ("MKDIR", "R/sys/fs"),
        ("MKDIR", "R/sys/fs/cgroup"),
        ("MOUNT", "R/sys/fs/cgroup", "cgroup", "cgroup2", NOSUID | NODEV | NOEXEC | lib.MS_RELATIME | RDONLY),
    ] + [("MKNOD", f"R{d.path}", stat.S_IFCHR | 0o666, encode_dev(d.major, d.minor)) for d in DEFAULT_DEVICES] + [
        ("SYMLINK", "R/dev/ptmx", "pts/ptmx"),
        ("SYMLINK", "R/dev/fd", "/proc/self/fd"),
        ("SYMLINK", "R/dev/stdin", "/proc/self/fd/0"),
        ("SYMLINK", "R/dev/stdout", "/proc/self/fd/1"),
        ("SYMLINK", "R/dev/stderr", "/proc/self/fd/2"),
        ("PIVOT", "R"),
        ("READONLY", "/proc/bus"), ("READONLY", "/proc/fs"), ("READONLY", "/proc/irq"), ("READONLY", "/proc/sys"),
        ("READONLY", "/proc/sysrq-trigger"),
    ] + [("MASK", p) for p in runc_default()["linux"]["maskedPaths"]] + [
        ("REMOUNT", "/", RDONLY),
    ]


def test_no_mount_namespace_is_an_error(bundle: Path):
    doc = runc_default()
    doc["linux"]["namespaces"] = [{"type": "pid"}, {"type": "uts"}]
    with pytest.raises(ConfigError) as info:
        plan_of(bundle, doc)
    assert info.value.field == "linux.namespaces"


def test_a_joined_mount_namespace_gets_the_same_plan(bundle: Path):
    joined = plan_of(bundle, mutate(runc_default(), "linux.namespaces[4].path", "/proc/1/ns/mnt"))
    assert joined and joined == plan_of(bundle, runc_default())


def test_bind_flags_and_propagation(bundle: Path, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/data", "type": "bind", "source": str(src),
         "options": ["rbind", "ro", "nosuid", "nodev", "noatime", "rshared"]},
        {"destination": "/plain", "source": "src", "options": ["bind", "private"]}))  # relative to the bundle
    bound = [op for op in brief(ops, bundle)[2:] if op[0] != "MKDIR"][:4]
    assert bound[0] == ("BIND", "R/data", str(src), NOSUID | NODEV | lib.MS_NOATIME,
                        lib.PX_BIND_RECURSIVE | lib.PX_BIND_RDONLY)
    assert bound[1] == ("MOUNT", "R/data", lib.MS_SHARED | lib.MS_REC)
    assert bound[2] == ("BIND", "R/plain", str(src))  # neither recursive nor read-only: no flags
    assert bound[3] == ("MOUNT", "R/plain", lib.MS_PRIVATE)


def test_missing_directories_one_by_one_and_a_bound_file_made_by_the_bind(bundle: Path, tmp_path: Path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/a/b/c", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/x/y/hosts", "source": str(hosts), "options": ["bind"]}))
    assert brief(ops, bundle)[2:9] == [
        ("MKDIR", "R/a"), ("MKDIR", "R/a/b"), ("MKDIR", "R/a/b/c"), ("MOUNT", "R/a/b/c", "tmpfs", "tmpfs"),
        ("MKDIR", "R/x"), ("MKDIR", "R/x/y"), ("BIND", "R/x/y/hosts", str(hosts)),
    ]


def test_a_symlink_in_the_image_cannot_send_a_mount_to_the_host(bundle: Path):
    rootfs = bundle / "rootfs"
    os.symlink("/", rootfs / "evil")                      # absolute: means the container's /
    os.symlink("../../../../../../../../tmp", rootfs / "up")
    os.symlink("/proc/self/root/etc", rootfs / "selfroot")  # /proc is not mounted yet: just a path in the root
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/evil/etc/shadow-dir", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/up/x", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/selfroot", "type": "tmpfs", "source": "tmpfs"}))
    targets = [op.target for op in ops if op.kind in (lib.PX_OP_MKDIR, lib.PX_OP_MOUNT) and op.target != "/"]
    assert all(t.startswith(str(rootfs) + "/") for t in targets), targets
    assert str(rootfs / "etc" / "shadow-dir") in targets and str(rootfs / "tmp" / "x") in targets
    assert str(rootfs / "proc" / "self" / "root" / "etc") in targets


def test_a_directory_is_made_once_while_it_shows(bundle: Path):
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/new/a", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/new/b", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/new", "type": "tmpfs", "source": "tmpfs"},     # hides /new/a and /new/b
        {"destination": "/new/a/x", "type": "tmpfs", "source": "tmpfs"}))
    assert [op for op in brief(ops, bundle)[2:] if op[0] == "MKDIR"] == [
        ("MKDIR", "R/new"), ("MKDIR", "R/new/a"), ("MKDIR", "R/new/b"),  # /new once, though both are below it
        ("MKDIR", "R/new/a"), ("MKDIR", "R/new/a/x")]                    # /new/a again: the new tmpfs hid it


def test_a_mount_below_an_earlier_one_is_resolved_through_it(bundle: Path, tmp_path: Path):
    src = tmp_path / "vol"
    (src / "real").mkdir(parents=True)
    os.symlink("/etc", src / "link")  # inside the volume, an absolute link: the container's /etc
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/vol", "source": str(src), "options": ["rbind"]},
        {"destination": "/vol/link/sub", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/vol/real/sub", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/t", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/t/new", "type": "tmpfs", "source": "tmpfs"}))
    assert brief(ops, bundle)[3:11] == [
        ("MKDIR", "R/etc/sub"), ("MOUNT", "R/etc/sub", "tmpfs", "tmpfs"),          # not the host's /etc
        ("MKDIR", "R/vol/real/sub"), ("MOUNT", "R/vol/real/sub", "tmpfs", "tmpfs"),
        ("MKDIR", "R/t"), ("MOUNT", "R/t", "tmpfs", "tmpfs"),
        ("MKDIR", "R/t/new"), ("MOUNT", "R/t/new", "tmpfs", "tmpfs"),              # a new tmpfs is empty
    ]


def test_read_only_deferred_while_something_is_made_inside(bundle: Path, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/ro-tmp", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "nosuid"]},
        {"destination": "/ro-tmp/inner", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/ro-bind", "source": str(src), "options": ["rbind", "ro"]},
        {"destination": "/ro-bind/inner", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/ro-alone", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]}))
    b = brief(ops, bundle)
    assert ("MOUNT", "R/ro-tmp", "tmpfs", "tmpfs", NOSUID) in b
    assert ("BIND", "R/ro-bind", str(src), lib.PX_BIND_RECURSIVE) in b
    assert ("MOUNT", "R/ro-alone", "tmpfs", "tmpfs", RDONLY) in b
    pivot = b.index(("PIVOT", "R"))
    assert b[pivot - 2:pivot] == [("REMOUNT", "R/ro-tmp", RDONLY | NOSUID), ("REMOUNT", "R/ro-bind", RDONLY)]


def test_destination_errors(bundle: Path):
    (bundle / "rootfs" / "file").write_text("")
    for mounts, field, text in [
        ([{"destination": "/etc/passwd/x", "type": "tmpfs", "source": "tmpfs"}], "mounts[0].destination",
         "which is not a directory"),
        ([{"destination": "/proc", "type": "proc"}, {"destination": "/file", "type": "tmpfs"}],
         "mounts[1].destination", "is a file"),
        ([{"destination": "/..", "type": "tmpfs"}], "mounts[0].destination", "is the container's root"),
    ]:
        with pytest.raises(ConfigError, match=text) as info:
            plan_of(bundle, doc_with_mounts(*mounts))
        assert info.value.field == field


def test_devices_made_with_mknod(bundle: Path):
    ops = plan_of(bundle, doc_with_mounts(
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        devices=[{"type": "c", "path": "/dev/null", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 5},
                 {"type": "b", "path": "/dev/test2", "major": 8, "minor": 666, "fileMode": 0o660, "uid": 0,
                  "gid": 6},
                 {"type": "p", "path": "/dev/fifo", "major": 8, "minor": 666},
                 {"type": "u", "path": "/dev/net/tun", "major": 10, "minor": 200}]))
    b = brief(ops, bundle)
    nodes = [op for op in b if op[0] in ("MKNOD", "CHOWN", "MKDIR") and op[1] != "R/dev"]
    assert nodes == [("MKNOD", f"R{d.path}", stat.S_IFCHR | 0o666, encode_dev(d.major, d.minor))
                     for d in DEFAULT_DEVICES if d.path != "/dev/null"] + [
        ("MKNOD", "R/dev/null", stat.S_IFCHR | 0o600, 259),
        ("CHOWN", "R/dev/null", 5 << 32 | 0xffffffff),          # gid unset: left as it is
        ("MKNOD", "R/dev/test2", stat.S_IFBLK | 0o660, encode_dev(8, 666)),
        ("CHOWN", "R/dev/test2", 6),
        ("MKNOD", "R/dev/fifo", stat.S_IFIFO | 0o666),          # a FIFO has no device number
        ("MKDIR", "R/dev/net"),
        ("MKNOD", "R/dev/net/tun", stat.S_IFCHR | 0o666, encode_dev(10, 200)),
    ]


def test_devices_bound_from_the_host_in_a_user_namespace(bundle: Path):
    doc = doc_with_mounts({"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                          devices=[{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229}],
                          uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
                          gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}])
    doc["linux"]["namespaces"].append({"type": "user"})
    b = brief(plan_of(bundle, doc), bundle)
    assert [op for op in b if op[0] in ("MKNOD", "CHOWN")] == []
    binds = [op for op in b if op[0] == "BIND" and op[1].startswith("R/dev/")]
    assert binds == [("BIND", f"R{d.path}", d.path, lib.PX_BIND_OPTIONAL) for d in DEFAULT_DEVICES] + [
        ("BIND", "R/dev/fuse", "/dev/fuse")]


def test_no_devices_when_dev_is_bound(bundle: Path):
    b = brief(plan_of(bundle, doc_with_mounts({"destination": "/dev", "source": "/dev", "options": ["rbind"]})),
              bundle)
    assert [op for op in b if op[0] in ("MKNOD", "SYMLINK", "CHOWN")] == []


def test_encode_dev_is_the_kernels():
    for major, minor in ((1, 3), (5, 0), (10, 229), (259, 0x12345), (4095, (1 << 20) - 1), (8, 0x80000)):
        value = encode_dev(major, minor)
        assert -(1 << 31) <= value < 1 << 31  # fits px_mount_op.bind_flags, a C int
        dev = value & 0xffffffff              # what the shim reads back (unsigned)
        assert (os.major(dev), os.minor(dev)) == (major, minor)


def test_after_pivot_order(bundle: Path):
    doc = mutate(runc_default(), "linux.rootfsPropagation", "shared")
    doc["linux"]["maskedPaths"] = ["/proc/kcore"]
    doc["linux"]["readonlyPaths"] = ["/proc/sys"]
    b = brief(plan_of(bundle, doc), bundle)
    pivot = b.index(("PIVOT", "R"))
    assert b[pivot:] == [("PIVOT", "R"), ("MOUNT", "/", lib.MS_SHARED), ("READONLY", "/proc/sys"),
                         ("MASK", "/proc/kcore"), ("REMOUNT", "/", RDONLY)]
    assert brief(plan_of(bundle, mutate(doc, "root.readonly", False)), bundle)[-1] == ("MASK", "/proc/kcore")


def test_cgroup_v1_without_cgroup_namespace_binds_the_containers_cgroup(bundle: Path):
    doc = doc_with_mounts({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["nosuid", "ro"]})
    b = brief(plan_of(bundle, doc, cgroup_entries=V1, cgroup_path="/pyexec/c1"), bundle)
    start = b.index(("MKDIR", "R/sys/fs"))
    rdonly_optional = lib.PX_BIND_OPTIONAL | lib.PX_BIND_RDONLY
    assert b[start:start + 11] == [
        ("MKDIR", "R/sys/fs"), ("MKDIR", "R/sys/fs/cgroup"),
        ("MOUNT", "R/sys/fs/cgroup", "tmpfs", "tmpfs", NOSUID, "mode=755"),   # read-only once filled
        ("MKDIR", "R/sys/fs/cgroup/cpu,cpuacct"),
        ("BIND", "R/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/pyexec/c1", NOSUID, rdonly_optional),
        ("MKDIR", "R/sys/fs/cgroup/memory"),
        ("BIND", "R/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/pyexec/c1", NOSUID, rdonly_optional),
        ("MKDIR", "R/sys/fs/cgroup/systemd"),
        ("BIND", "R/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd/pyexec/c1", NOSUID, rdonly_optional),
        ("SYMLINK", "R/sys/fs/cgroup/cpu", "cpu,cpuacct"),
        ("SYMLINK", "R/sys/fs/cgroup/cpuacct", "cpu,cpuacct"),
    ]
    pivot = b.index(("PIVOT", "R"))
    assert b[pivot - 1] == ("REMOUNT", "R/sys/fs/cgroup", RDONLY | NOSUID)
    with pytest.raises(ValueError, match="cgroup_path"):
        plan_of(bundle, doc, cgroup_entries=V1)


def test_cgroup_v1_with_cgroup_namespace_mounts_each_hierarchy(bundle: Path):
    doc = doc_with_mounts({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"})
    doc["linux"]["namespaces"].append({"type": "cgroup"})
    b = brief(plan_of(bundle, doc, cgroup_entries=V1), bundle)
    mounts = [op for op in b if op[0] == "MOUNT" and op[1].startswith("R/sys/fs/cgroup/")]
    assert mounts == [("MOUNT", "R/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cgroup", "cpu,cpuacct"),
                      ("MOUNT", "R/sys/fs/cgroup/memory", "cgroup", "cgroup", "memory"),
                      ("MOUNT", "R/sys/fs/cgroup/systemd", "cgroup", "cgroup", "xattr,name=systemd")]


def test_cgroup_path_outside_the_hosts_view(bundle: Path):
    doc = doc_with_mounts({"destination": "/sys/fs/cgroup", "type": "cgroup"})
    entries = [MountEntry("cgroup", "/sys/fs/cgroup/memory", "/lxc/host", ("rw", "memory"))]
    with pytest.raises(ConfigError) as info:
        plan_of(bundle, doc, cgroup_entries=entries, cgroup_path="/other")
    assert info.value.field == "mounts[0]"
    ops = plan_of(bundle, doc, cgroup_entries=entries, cgroup_path="/lxc/host/pyexec/c1")
    assert any(op.source == "/sys/fs/cgroup/memory/pyexec/c1" for op in ops)


def test_mount_label_goes_into_the_data_of_the_file_systems_that_take_it(bundle: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(spec_linux, "LSM_PATHS", lsm_paths(tmp_path, "selinux"))
    doc = doc_with_mounts({"destination": "/proc", "type": "proc", "source": "proc"},
                          {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]},
                          mountLabel="system_u:object_r:container_file_t:s0")
    ops = plan_of(bundle, doc)
    data: Dict[str, Optional[str]] = {op.target[-4:]: op.data for op in ops if op.kind == lib.PX_OP_MOUNT}
    assert data["proc"] is None
    assert data["/tmp"] == 'mode=1777,context="system_u:object_r:container_file_t:s0"'
