"""Validation of ExecCommand, Resources, Isolation and Mount: every ConfigError case.

Each case asserts the exception type, the field it names and that the message
is "<field>: <value!r> <reason>", so a caller can show it as is. Bad input
must fail before anything exists: the launch-time cases check that no task or
state directory was made.
"""
from __future__ import annotations

import resource
from typing import Tuple

import pytest

from pyexec import ExecCommand, Isolation, Mount, Resources, new_executor
from pyexec.config import DEFAULT_PATH, parse_size
from pyexec.errors import ConfigError, LaunchError, PyexecError

TD = "/tmp/pyexec-config-test-task"   # never created: validation fails first


def cmd(**fields):
    fields.setdefault("argv", ["true"])
    fields.setdefault("task_dir", TD)
    return ExecCommand(**fields)


CASES = [
    # (id, factory, field, value as it appears in the message, reason fragment)
    ("empty argv", lambda: cmd(argv=[]), "argv", [], "must be a non-empty list of strings"),
    ("argv is a string", lambda: cmd(argv="ls -l"), "argv", "ls -l", "must be a non-empty list"),
    ("argv with a non-str", lambda: cmd(argv=["echo", 1]), "argv", 1, "must be a string"),
    ("argv with NUL", lambda: cmd(argv=["echo", "a\0b"]), "argv", "a\0b", "without NUL"),
    ("empty program", lambda: cmd(argv=[""]), "argv", "", "must not be empty"),
    ("relative task_dir", lambda: cmd(task_dir="rel/dir"), "task_dir", "rel/dir", "must be an absolute path"),
    ("task_dir is a file", lambda: cmd(task_dir="/etc/hostname"), "task_dir", "/etc/hostname",
     "is not a directory"),
    ("bad name", lambda: cmd(name="a b"), "name", "a b", "must be 1-63 letters"),
    ("unknown namespace", lambda: Isolation(namespaces={"pid", "bogus"}), "namespaces", "bogus",
     "is not a namespace"),
    ("namespaces as a string", lambda: Isolation(namespaces="pid"), "namespaces", "pid",
     "must be a set of namespace names"),
    ("uid 0 unmapped", lambda: Isolation(namespaces={"mnt", "user"}, uid_map=[(1, 100000, 10)]), "uid_map",
     ((1, 100000, 10),), "must map id 0"),
    ("unknown capability", lambda: Isolation(capabilities=["NOPE"]), "capabilities", "CAP_NOPE",
     "is not a capability this kernel knows"),
    ("capabilities as a string", lambda: Isolation(capabilities="CAP_KILL"), "capabilities", "CAP_KILL",
     "must be a list"),
    ("empty capability", lambda: Isolation(capabilities=[" "]), "capabilities", " ", "is not a capability name"),
    ("non-existent rootfs", lambda: Isolation(rootfs="/nonexistent/rootfs"), "rootfs", "/nonexistent/rootfs",
     "is not a directory"),
    ("relative rootfs", lambda: Isolation(rootfs="rootfs"), "rootfs", "rootfs", "must be an absolute path"),
    ("rootfs without mnt", lambda: Isolation(rootfs="/usr", namespaces={"pid"}), "rootfs", "/usr",
     "needs the 'mnt' namespace"),
    ("non-existent mount source", lambda: Mount(source="/nonexistent/src", target="/data"), "mounts.source",
     "/nonexistent/src", "does not exist"),
    ("relative mount source", lambda: Mount(source="usr", target="/data"), "mounts.source", "usr",
     "must be an absolute path"),
    ("relative mount target", lambda: Mount(source="/usr", target="data"), "mounts.target", "data",
     "must be an absolute path"),
    ("mount target with ..", lambda: Mount(source="/usr", target="/a/../etc"), "mounts.target", "/a/../etc",
     "must not contain '..'"),
    ("mounts without mnt", lambda: Isolation(mounts=(Mount("/usr", "/data"),), namespaces={"pid"}), "mounts",
     ["/data"], "need the 'mnt' namespace"),
    ("mounts not Mount", lambda: Isolation(mounts=("/usr",)), "mounts", "/usr", "is not a Mount"),
    ("relative masked path", lambda: Isolation(masked_paths=("proc/kcore",)), "masked_paths", "proc/kcore",
     "must be an absolute path"),
    ("bad user syntax", lambda: cmd(user="bad user!"), "user", "bad user!", "is not a user"),
    ("bad user syntax, two colons", lambda: cmd(user="1:2:3"), "user", "1:2:3", "is not a user"),
    ("bad size string", lambda: Resources(memory="12XB"), "memory", "12XB", "is not a size"),
    ("negative size", lambda: Resources(memory=-5), "memory", -5, "must not be negative"),
    ("size as bool", lambda: Resources(memory=True), "memory", True, "is not a size"),
    ("memory too small", lambda: Resources(memory="4k"), "memory", 4096, "is too small"),
    ("negative pids", lambda: Resources(pids=-1), "pids", -1, "must be at least 1"),
    ("pids not an int", lambda: Resources(pids="10"), "pids", "10", "is not an integer"),
    ("cpu_shares too low", lambda: Resources(cpu_shares=1), "cpu_shares", 1, "must be between 2 and 262144"),
    ("cpu_shares too high", lambda: Resources(cpu_shares=262145), "cpu_shares", 262145,
     "must be between 2 and 262144"),
    ("cpus too small", lambda: Resources(cpus=0.001), "cpus", 0.001, "must be a number of CPUs"),
    ("cpus nan", lambda: Resources(cpus=float("nan")), "cpus", None, "must be a number of CPUs"),
    ("bad cpuset", lambda: Resources(cpuset_cpus="0-"), "cpuset_cpus", "0-", "is not a cpu/node list"),
    ("io_weight out of range", lambda: Resources(io_weight=5), "io_weight", 5, "must be between 10 and 1000"),
    ("swap below memory", lambda: Resources(memory="64M", memory_swap="32M"), "memory_swap", 32 << 20,
     "must be at least memory"),
    ("env key with =", lambda: cmd(env={"A=B": "x"}), "env", "A=B", "is not a valid variable name"),
    ("env key with NUL", lambda: cmd(env={"A\0": "x"}), "env", "A\0", "is not a valid variable name"),
    ("empty env key", lambda: cmd(env={"": "x"}), "env", "", "is not a valid variable name"),
    ("env value with NUL", lambda: cmd(env={"A": "x\0y"}), "env.A", "x\0y", "must be a string without NUL"),
    ("env value not a str", lambda: cmd(env={"A": 1}), "env.A", 1, "must be a string without NUL"),
    ("bad hostname", lambda: Isolation(hostname="bad_host!"), "hostname", "bad_host!", "is not a valid host name"),
    ("hostname too long", lambda: Isolation(hostname="h" * 65), "hostname", "h" * 65, "is not a valid host name"),
    ("hostname without uts", lambda: Isolation(hostname="h1", namespaces={"mnt"}), "hostname", "h1",
     "needs the 'uts' namespace"),
    ("bad rlimit name", lambda: Isolation(rlimits={"bogus": (1, 2)}), "rlimits", "bogus",
     "is not a resource limit name"),
    ("soft above hard", lambda: Isolation(rlimits={"nofile": (10, 5)}), "rlimits.nofile", (10, 5),
     "soft limit is above the hard limit"),
    ("unlimited soft, finite hard", lambda: Isolation(rlimits={"nofile": ("unlimited", 5)}), "rlimits.nofile",
     ("unlimited", 5), "soft limit is above the hard limit"),
    ("negative rlimit", lambda: Isolation(rlimits={"nofile": (-2, 5)}), "rlimits.nofile", -2, "is not a limit"),
    ("rlimit triple", lambda: Isolation(rlimits={"nofile": (1, 2, 3)}), "rlimits.nofile", (1, 2, 3),
     "must be (soft, hard)"),
    ("uid_map without user ns", lambda: Isolation(uid_map=[(0, 1000, 1)]), "uid_map", ((0, 1000, 1),),
     "needs the 'user' namespace"),
    ("bad uid_map entry", lambda: Isolation(uid_map=[(0, 1000, 0)]), "uid_map", (0, 1000, 0),
     "must be (inside_id, host_id, count)"),
    ("relative cwd", lambda: cmd(cwd="tmp"), "cwd", "tmp", "must be an absolute path"),
    ("relative stdout_path", lambda: cmd(stdout_path="out.log"), "stdout_path", "out.log",
     "must be an absolute path"),
    ("relative stderr_path", lambda: cmd(stderr_path="err.log"), "stderr_path", "err.log",
     "must be an absolute path"),
    ("relative stdin_path", lambda: cmd(stdin_path="in"), "stdin_path", "in", "must be an absolute path"),
    ("bad stdio_fds", lambda: cmd(stdio_fds=(0, 1)), "stdio_fds", (0, 1), "must be three file descriptors"),
    ("resources not Resources", lambda: cmd(resources={"memory": "1G"}), "resources", {"memory": "1G"},
     "is not a Resources"),
    ("isolation not Isolation", lambda: cmd(isolation=None), "isolation", None, "is not an Isolation"),
    ("unknown executor kind", lambda: new_executor("bogus"), "kind", "bogus", "is not an executor kind"),
]


@pytest.mark.parametrize("factory, field, value, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_error(factory, field, value, reason):
    with pytest.raises(ConfigError) as info:
        factory()
    error = info.value
    assert isinstance(error, PyexecError) and isinstance(error, ValueError)
    assert error.field == field
    assert str(error).startswith(f"{field}: ")
    if value is not None:                       # nan != nan: only the field is checked then
        assert str(error).startswith(f"{field}: {value!r} ")
        assert error.value == value
    assert reason in str(error)
    assert str(error) == f"{error.field}: {error.value!r} {error.reason}"


def test_exact_message_of_a_bad_size():
    with pytest.raises(ConfigError) as info:
        Resources(memory="12XB")
    assert str(info.value) == "memory: '12XB' is not a size"


@pytest.mark.parametrize("text, expected", [
    ("64M", 64 << 20), ("1.5G", 3 << 29), ("512k", 512 << 10), ("100", 100), ("64MiB", 64 << 20),
    ("1g", 1 << 30), ("512kb", 512 << 10), (" 2 T ", 2 << 40), ("10B", 10), (4096, 4096), (None, None),
])
def test_parse_size_accepts(text, expected):
    assert parse_size("memory", text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1e3", "12XB", "1iB", "M", "1.2.3G", "0x10", True, [1]])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError) as info:
        parse_size("memory", text)
    assert str(info.value).startswith(f"memory: {text!r} ")


def test_values_are_normalised():
    r = Resources(memory="64M", memory_swap="-1", cpus=1)
    assert (r.memory, r.memory_swap, r.cpus) == (64 << 20, -1, 1.0)
    iso = Isolation(namespaces={"mount", "pid"}, capabilities=["kill", "CAP_CHOWN", "chown"],
                    rlimits={"RLIMIT_NOFILE": 100, "core": ("unlimited", -1)})
    assert iso.namespaces == frozenset({"mnt", "pid"})
    assert iso.capabilities == ("CAP_CHOWN", "CAP_KILL")
    assert iso.rlimits == {"nofile": (100, 100), "core": (resource.RLIM_INFINITY, resource.RLIM_INFINITY)}
    c = ExecCommand(argv=["true"], task_dir="/tmp/x/../task/")
    assert (c.task_dir, c.name, c.env, c.argv) == ("/tmp/task", "task", {"PATH": DEFAULT_PATH}, ("true",))


def test_all_capabilities():
    iso = Isolation(capabilities=["ALL"])
    assert "CAP_SYS_ADMIN" in iso.capabilities and "CAP_CHOWN" in iso.capabilities


# -- errors raised by launch(), before anything exists ----------------------------------------

# The container executor refuses a caller without CAP_SYS_ADMIN before it looks at the user.
@pytest.mark.needs_root
@pytest.mark.parametrize("user, reason", [
    ("no-such-user-pyexec", "is not a user in /etc/passwd"),
    ("nobody:no-such-group-pyexec", "names a group not in /etc/group"),
])
def test_unknown_user_is_refused_by_launch_before_anything_is_made(tmp_path, user, reason):
    task_dir = tmp_path / "task"
    state_root = tmp_path / "state"
    ex = new_executor("container", state_root=str(state_root))
    with pytest.raises(ConfigError) as info:
        ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir), user=user))
    assert str(info.value) == f"user: {user!r} {reason}"
    assert not task_dir.exists()
    assert not state_root.exists()
    assert ex.pid is None


@pytest.mark.needs_root
def test_unopenable_stdout_is_a_config_error_and_leaves_nothing(tmp_path):
    task_dir = tmp_path / "task"
    state_root = tmp_path / "state"
    bad = str(tmp_path / "no-such-dir" / "out.log")
    ex = new_executor("container", state_root=str(state_root))
    with pytest.raises(ConfigError) as info:
        ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir), stdout_path=bad))
    assert str(info.value) == f"stdout_path: {bad!r} cannot be opened: No such file or directory"
    assert not task_dir.exists()
    assert not state_root.exists() or list(state_root.iterdir()) == []
    assert ex.pid is None


def test_launch_takes_only_an_exec_command():
    with pytest.raises(TypeError):
        new_executor("container").launch(["true"])


def test_error_types():
    assert issubclass(ConfigError, PyexecError) and issubclass(ConfigError, ValueError)
    assert issubclass(LaunchError, PyexecError) and issubclass(LaunchError, OSError)
    error = LaunchError("exec", "/nope", 2)
    assert (str(error), error.errno, error.step, error.path) == (
        "exec /nope: No such file or directory", 2, "exec", "/nope")


def root_subid_range(path: str) -> Tuple[int, int]:
    """The test's own reading of /etc/subuid or /etc/subgid: root's first
    ``root:first:count`` range, else 100000:65536 (pyexec's fallback)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        name, _, rest = line.strip().partition(":")
        first, _, count = rest.partition(":")
        if name in ("root", "0") and first.isdigit() and count.isdigit():
            return (int(first), int(count))
    return (100000, 65536)


def test_user_namespace_maps_default_to_a_subordinate_range():
    # The exact range this host gives root (it was "the default, or anything
    # starting at 0", which held for almost any map).
    iso = Isolation(namespaces={"mnt", "pid", "user"})
    assert iso.uid_map == ((0,) + root_subid_range("/etc/subuid"),)
    assert iso.gid_map == ((0,) + root_subid_range("/etc/subgid"),)
    given = Isolation(namespaces={"user"}, uid_map=[(0, 200000, 1000)], gid_map=[(0, 300000, 1000)])
    assert given.uid_map == ((0, 200000, 1000),) and given.gid_map == ((0, 300000, 1000),)


def test_default_idmap_reads_the_owners_range(tmp_path):
    from pyexec.idmaps import default_idmap, host_id
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nroot:400000:5000\n")
    assert default_idmap(str(subuid)) == ((0, 400000, 5000),)
    assert default_idmap(str(tmp_path / "missing")) == ((0, 100000, 65536),)
    assert host_id(((0, 400000, 5000),), 0) == 400000 and host_id(((0, 400000, 5000),), 5000) is None


@pytest.mark.parametrize("path", ["/a/..", "/..", "//..", "/a//../b", "/a/./../", "/a/...", "/a/..b", "/b../c",
                                  "/.../..", "/a/./b", "/a/.", "/"])
def test_dot_dot_check_agrees_with_pathlib(path):
    """check_container_path splits on "/" instead of building a Path: the
    same paths must be refused as by pathlib's parts."""
    from pathlib import PurePosixPath

    from pyexec.config import check_container_path
    if ".." in PurePosixPath(path).parts:
        with pytest.raises(ConfigError, match="must not contain '..'"):
            check_container_path("cwd", path)
    else:
        assert check_container_path("cwd", path) == path


def test_the_default_isolation_is_what_full_validation_makes():
    """Isolation() skips its checks when every field is at its default; the
    result must equal a validation of the same values (forced here by
    passing them as a list / a new dict, which takes the full path)."""
    import dataclasses

    from pyexec.config import DEFAULT_MASKED_PATHS
    fast = Isolation()
    full = Isolation(masked_paths=list(DEFAULT_MASKED_PATHS))
    assert not full._all_default() and fast._all_default()
    assert dataclasses.asdict(fast) == dataclasses.asdict(full)
    assert {f.name: type(getattr(fast, f.name)) for f in dataclasses.fields(Isolation)} == \
        {f.name: type(getattr(full, f.name)) for f in dataclasses.fields(Isolation)}
    mine = {}
    assert Isolation(rlimits=mine).rlimits is not mine  # normalised into a dict of its own, as before
