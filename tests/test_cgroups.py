"""Tests of pyexec.cgroups on the real kernel (needs root).

Every test gets a unique parent cgroup ``pyexec-test-<hex>``; the ``cg``
fixture checks after each test that no directory of that name is left in any
cgroup hierarchy and that the test process itself never joined one (it
removes leftovers before failing, so a failed test does not litter the host).

The v1 tests run on v1/hybrid hosts; the v2 limit tests need a cgroup2 mount
with the memory, cpu and pids controllers and skip, with the reason, where
there is none. Only pure parsing/conversion functions are fed files written
to a temporary directory; nothing kernel-side is mocked.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import List, Tuple

import pytest

from conftest import FORK_LOOP, cgroup_leftovers, sleeper, wait_for
from pyexec.cgroups import V1Manager, V2Manager, detect_mode, new_manager
from pyexec.cgroups.cpu import cpu_max_v2, cpu_quota_us, shares_to_weight, stat_cpu_text_v2, stat_cpu_v2
from pyexec.cgroups.fscommon import parse_keyed
from pyexec.cgroups.io import check_io_v1, parse_io_stat_v2, parse_service_bytes_v1
from pyexec.cgroups.memory import oom_kills_v1, oom_kills_v2, stat_memory_v2, swap_max_v2
from pyexec.cgroups.mounts import cgroup_mounts
from pyexec.cgroups.pids import check_pids_v1
from pyexec.cgroups.v1 import v1_mounts
from pyexec.cgroups.v2 import move_members_to_leaf, own_cgroup, placement_base, unified_root
from pyexec.config import Resources
from pyexec.errors import ConfigError
from pyexec.stats import CpuUsage, IoUsage, MemoryUsage, ResourceUsage

M = 1 << 20

pytestmark = pytest.mark.needs_root(reason="cgroup tests need root")

needs_v1 = pytest.mark.skipif("memory" not in v1_mounts(), reason="no cgroup v1 memory hierarchy on this host")


# --------------------------------------------------------------------------- fixtures

def gated(procs: List[subprocess.Popen], code: str) -> subprocess.Popen:
    """A python child that waits for a line on stdin before running ``code``, so
    the test can move it into a cgroup first (charges and forks land there)."""
    p = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    procs.append(p)
    return p


def release(p: subprocess.Popen) -> None:
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.flush()



def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def cgroup_writes(caplog: pytest.LogCaptureFixture) -> List[Tuple[str, str]]:
    """(file name, text) of each control-file write the cgroup code logged
    (pyexec/cgroups/fscommon.py logs every one at DEBUG)."""
    return [(os.path.basename(r.cgroup_file), r.cgroup_data) for r in caplog.records if hasattr(r, "cgroup_file")]


# --------------------------------------------------------------------------- detection

def test_detect_mode_matches_mountinfo() -> None:
    mounts = cgroup_mounts()
    mode = detect_mode()
    assert mode in ("v1", "v2", "hybrid")
    assert detect_mode() is mode  # cached
    unified_at_top = any(m.fstype == "cgroup2" and m.mountpoint == "/sys/fs/cgroup" for m in mounts)
    has_v1_memory = any(m.fstype == "cgroup" and "memory" in m.options for m in mounts)
    if unified_at_top:
        assert mode == "v2"
    elif has_v1_memory:
        assert mode == ("hybrid" if any(m.fstype == "cgroup2" for m in mounts) else "v1")
    manager = new_manager("x", Resources(), parent="pyexec-test-none")
    assert isinstance(manager, V2Manager if mode == "v2" else V1Manager)


# --------------------------------------------------------------------------- v1 limits

@needs_v1
def test_create_applies_every_limit(cg: str) -> None:
    res = Resources(memory="64M", memory_reservation="32M", cpu_shares=512, cpus=0.5,
                    cpuset_cpus="0", cpuset_mems="0", pids=42)
    m = V1Manager("limits", res, parent=cg)
    m.create()
    try:
        p = m.paths
        assert int(read(f"{p['memory']}/memory.limit_in_bytes")) == 64 * M
        assert int(read(f"{p['memory']}/memory.soft_limit_in_bytes")) == 32 * M
        assert read(f"{p['cpu']}/cpu.shares") == "512"
        assert read(f"{p['cpu']}/cpu.cfs_period_us") == "100000"
        assert read(f"{p['cpu']}/cpu.cfs_quota_us") == "50000"
        assert read(f"{p['cpuset']}/cpuset.cpus") == "0"
        assert read(f"{p['cpuset']}/cpuset.mems") == "0"
        assert read(f"{p['pids']}/pids.max") == "42"
        for ctl in ("devices", "cpuacct", "blkio"):  # joined without limits (stats, device rules)
            if ctl in v1_mounts():
                assert os.path.isdir(p[ctl]), ctl
        assert "name=systemd" not in p  # only what limits and stats need
        assert m.stats().memory.limit == 64 * M and m.stats().pids.limit == 42
    finally:
        m.destroy()
    assert not any(os.path.exists(path) for path in m.paths.values())


@needs_v1
def test_memory_swap_applied_or_config_error_naming_file(cg: str) -> None:
    memory_root = v1_mounts()["memory"]
    res = Resources(memory="64M", memory_swap="128M")
    m = V1Manager("swap", res, parent=cg)
    if os.path.exists(os.path.join(memory_root, "memory.memsw.limit_in_bytes")):
        with m:
            assert int(read(f"{m.paths['memory']}/memory.memsw.limit_in_bytes")) == 128 * M
            assert int(read(f"{m.paths['memory']}/memory.limit_in_bytes")) == 64 * M
    else:  # no swap accounting on this kernel
        with pytest.raises(ConfigError) as err:
            m.create()
        assert err.value.field == "memory_swap"
        assert "memory.memsw.limit_in_bytes" in str(err.value) and "'memory'" in str(err.value)
        assert not m.exists()


@needs_v1
def test_io_weight_applied_or_config_error_naming_blkio(cg: str) -> None:
    if "blkio" not in v1_mounts():
        pytest.skip("no blkio hierarchy mounted")
    with V1Manager("probe", Resources(), parent=cg) as probe:  # the weight files exist only in children
        present = [f for f in ("blkio.weight", "blkio.bfq.weight")
                   if os.path.exists(os.path.join(probe.paths["blkio"], f))]
    m = V1Manager("io", Resources(io_weight=300), parent=cg)
    if present:
        with m:
            assert read(os.path.join(m.paths["blkio"], present[0])) in ("300", "default 300")
    else:
        with pytest.raises(ConfigError) as err:
            m.create()
        assert err.value.field == "io_weight" and "'blkio'" in str(err.value)
        assert "blkio.weight" in str(err.value)
        assert not m.exists()


@needs_v1
def test_missing_control_file_is_config_error_naming_it() -> None:
    """A hierarchy's root cgroup has no per-cgroup limit files (pids.max, the
    blkio weights) by kernel design: a real directory where they are missing."""
    mounts = v1_mounts()
    cases = [("pids", check_pids_v1, Resources(pids=10), "pids", ("pids.max",)),
             ("blkio", check_io_v1, Resources(io_weight=300), "io_weight",
              ("blkio.weight", "blkio.bfq.weight"))]
    tried = 0
    for ctl, check, res, field_name, files in cases:
        root = mounts.get(ctl)
        if root is None or any(os.path.exists(os.path.join(root, f)) for f in files):
            continue
        tried += 1
        with pytest.raises(ConfigError) as err:
            check(root, res)
        assert err.value.field == field_name
        assert f"'{ctl}'" in str(err.value) and files[0] in str(err.value) and root in str(err.value)
    if not tried:
        pytest.skip("the pids/blkio hierarchy roots here do have the limit files")


@needs_v1
def test_unmounted_controller_is_config_error_and_creates_nothing(cg: str) -> None:
    mounts = {c: p for c, p in v1_mounts().items() if c != "pids"}  # use every hierarchy but pids
    m = V1Manager("nopids", Resources(memory="64M", pids=10), parent=cg, mounts=mounts)
    with pytest.raises(ConfigError) as err:
        m.create()
    assert err.value.field == "pids"
    assert "'pids' controller" in str(err.value) and "not mounted" in str(err.value)
    assert not m.exists() and not cgroup_leftovers(cg)


@needs_v1
def test_kernel_rejected_value_rolls_back_everything(cg: str) -> None:
    # A child's CFS quota may not exceed its parent's: the kernel says EINVAL
    # for cpus=0.5 under a parent held at 0.1, after every directory was made
    # and memory was already limited.
    cpu_parent = os.path.join(v1_mounts()["cpu"], cg)
    os.mkdir(cpu_parent)
    try:
        with open(os.path.join(cpu_parent, "cpu.cfs_quota_us"), "w") as f:
            f.write("10000")
        m = V1Manager("bad", Resources(memory="64M", cpus=0.5), parent=cg)
        with pytest.raises(ConfigError) as err:
            m.create()
        assert err.value.field == "cpus" and "cpu.cfs_quota_us" in str(err.value)
        assert "Invalid argument" in str(err.value)
        assert not m.exists()
    finally:
        os.rmdir(cpu_parent)
    assert not cgroup_leftovers(cg)


@needs_v1
def test_a_cpuset_outside_the_parents_is_refused_before_writing(cg: str) -> None:
    m = V1Manager("bad", Resources(memory="64M", cpuset_cpus="0,63"), parent=cg)
    with pytest.raises(ConfigError) as err:
        m.create()
    message = str(err.value)
    assert err.value.field == "cpuset_cpus" and "63; available: " in message, message
    assert "0,63" not in message.split("available: ")[1]
    assert not cgroup_leftovers(cg)


# --------------------------------------------------------------------------- v1 processes

@needs_v1
def test_add_pid_joins_every_hierarchy(cg: str, procs: List[subprocess.Popen]) -> None:
    with V1Manager("join", Resources(), parent=cg) as m:
        p = sleeper(procs)
        m.add_pid(p.pid)
        lines = read(f"/proc/{p.pid}/cgroup").splitlines()
        by_ctl = {}
        for line in lines:
            _id, ctls, path = line.split(":", 2)
            for ctl in ctls.split(","):
                by_ctl[ctl or "unified"] = path  # "0::/path" is the v2 hierarchy
        if detect_mode() == "hybrid":
            assert "unified" in m.paths  # the v2 twin tracks the task on hybrid hosts
        for ctl in m.paths:
            assert by_ctl[ctl] == f"/{cg}/join", (ctl, lines)
        assert m.pids() == [p.pid]
        with pytest.raises(ConfigError):
            m.add_pid(os.getpid())
        assert cg not in read("/proc/self/cgroup")
    assert p.wait(timeout=5) == -signal.SIGKILL  # destroy killed it


@needs_v1
def test_stats_of_a_busy_process(cg: str, procs: List[subprocess.Popen]) -> None:
    code = ("import time\nb = b'x' * (24 << 20)\nt = time.time()\n"
            "while time.time() - t < 0.4: pass\nprint('done', flush=True)\nsys.stdin.readline()\n")
    with V1Manager("busy", Resources(memory="256M", pids=20), parent=cg) as m:
        empty = m.stats()
        assert empty.pids.current == 0 and empty.memory.oom_kills == 0 and empty.source == "cgroup v1"
        p = gated(procs, code)
        m.add_pid(p.pid)
        release(p)
        assert p.stdout is not None and p.stdout.readline() == b"done\n"
        s = m.stats()
        assert isinstance(s, ResourceUsage)
        assert s.pids.current == 1 and s.pids.limit == 20
        assert s.memory.usage >= 20 * M and s.memory.rss >= 20 * M and s.memory.max_usage >= s.memory.usage
        assert s.memory.limit == 256 * M and s.memory.kernel is not None and s.memory.mapped_file is not None
        assert s.cpu.usage_total_s >= 0.2 and s.cpu.user_s > 0 and s.cpu.system_s is not None
        assert s.cpu.throttled_periods == 0 and s.cpu.throttled_time_s == 0
        # one core busy for 0.4 s of the (longer) interval since the empty sample
        assert s.cpu.percent is not None and 5 < s.cpu.percent <= 110, s.cpu
        assert s.io.read_bytes is not None and s.io.write_bytes is not None
        assert abs(s.timestamp - time.time()) < 5
        assert not m.oom_killed()


@needs_v1
def test_oom_kill_is_detected(cg: str, procs: List[subprocess.Popen]) -> None:
    memsw = os.path.exists(os.path.join(v1_mounts()["memory"], "memory.memsw.limit_in_bytes"))
    # memory_swap == memory forbids swapping, so the OOM killer must act even on a host with swap.
    res = Resources(memory="32M", memory_swap="32M" if memsw else None)
    with V1Manager("oom", res, parent=cg) as m:
        if oom_kills_v1(m.paths["memory"]) is None:
            pytest.skip("kernel before 4.13: memory.oom_control has no oom_kill counter")
        assert not m.oom_killed()
        p = gated(procs, "b = b'x' * (200 << 20)\nprint('survived', flush=True)\n")
        m.add_pid(p.pid)
        release(p)
        assert p.wait(timeout=30) == -signal.SIGKILL
        assert m.oom_killed()
        assert m.stats().memory.oom_kills >= 1


class _Subreaper:
    """Make the test process the child subreaper while a fork loop runs, so its
    orphaned children are reaped here rather than left to pid 1."""

    PR_SET_CHILD_SUBREAPER = 36

    def __enter__(self) -> "_Subreaper":
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return self

    def reap(self, timeout: float = 5.0) -> None:
        """Reap adopted orphans until none is left (call after Popen.wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.libc.prctl(self.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@needs_v1
@pytest.mark.parametrize("use_cgroup_kill", [True, False], ids=["unified-cgroup.kill", "freezer"])
def test_kill_all_stops_a_fork_loop(cg: str, procs: List[subprocess.Popen], use_cgroup_kill: bool,
                                    caplog: pytest.LogCaptureFixture) -> None:
    # Every hierarchy, the freezer included (joined by default only without cgroup.kill).
    with _Subreaper() as reaper, V1Manager("forky", Resources(pids=50), parent=cg, mounts=v1_mounts()) as m:
        # hybrid: the v2 twin's cgroup.kill; else the v1 freezer. Each variant
        # needs what it is named after, and checks that it was what killed.
        kill_file = os.path.join(m.paths.get("unified", "/nonexistent"), "cgroup.kill")
        if use_cgroup_kill and not os.path.exists(kill_file):
            pytest.skip("no cgroup v2 twin with cgroup.kill (a hybrid host, kernel 5.14+)")
        if not use_cgroup_kill and "freezer" not in m.paths:
            pytest.skip("no cgroup v1 freezer hierarchy mounted")
        m.use_cgroup_kill = use_cgroup_kill
        m.kill_all()  # empty cgroup: nothing to do
        p = gated(procs, FORK_LOOP)
        m.add_pid(p.pid)
        release(p)
        assert wait_for(lambda: m.stats().pids.current >= 40), m.stats()
        caplog.set_level(logging.DEBUG, logger="pyexec.cgroups")
        m.kill_all(timeout=10)
        written = {name for name, _ in cgroup_writes(caplog)}
        assert written == ({"cgroup.kill"} if use_cgroup_kill else {"freezer.state"}), written
        assert m.pids() == []  # no live process left (zombies are not members)
        assert p.wait(timeout=5) == -signal.SIGKILL
        reaper.reap()
        # pids.current counts a task until it is reaped, hence only now 0.
        assert wait_for(lambda: m.stats().pids.current == 0), m.stats()


@needs_v1
def test_create_cleans_a_stale_cgroup(cg: str, procs: List[subprocess.Popen]) -> None:
    crashed = V1Manager("stale", Resources(pids=5), parent=cg)
    crashed.create()
    p = sleeper(procs)
    crashed.add_pid(p.pid)
    del crashed  # the executor "crashed": nobody destroys it
    m = V1Manager("stale", Resources(pids=7), parent=cg)
    m.create()
    try:
        assert p.wait(timeout=5) == -signal.SIGKILL
        assert m.pids() == []
        assert read(f"{m.paths['pids']}/pids.max") == "7"
    finally:
        m.destroy()


@needs_v1
def test_update_changes_limits_live(cg: str, procs: List[subprocess.Popen]) -> None:
    with V1Manager("upd", Resources(memory="64M", pids=10, cpu_shares=256), parent=cg) as m:
        m.add_pid(sleeper(procs).pid)
        m.update(Resources(memory="128M", pids=20))
        assert int(read(f"{m.paths['memory']}/memory.limit_in_bytes")) == 128 * M
        assert read(f"{m.paths['pids']}/pids.max") == "20"
        assert read(f"{m.paths['cpu']}/cpu.shares") == "256"  # untouched
        assert m.stats().memory.limit == 128 * M and m.stats().pids.limit == 20
        with pytest.raises(ConfigError) as err:
            m.update(Resources(cpuset_cpus="63"))  # not a subset of the parent's cpus
        assert err.value.field == "cpuset_cpus"
        if os.path.exists(f"{m.paths['memory']}/memory.memsw.limit_in_bytes"):
            m.update(Resources(memory_swap="256M"))
            m.update(Resources(memory="32M"))  # lowering memory keeps memsw valid
            assert int(read(f"{m.paths['memory']}/memory.limit_in_bytes")) == 32 * M
            assert int(read(f"{m.paths['memory']}/memory.memsw.limit_in_bytes")) == 256 * M
            with pytest.raises(ConfigError):  # memory above the memory_swap in force
                m.update(Resources(memory="512M"))
            m.update(Resources(memory="512M", memory_swap=-1))
            assert int(read(f"{m.paths['memory']}/memory.limit_in_bytes")) == 512 * M
        assert m.pids()  # the sleeper survived every update


@needs_v1
def test_destroy_is_idempotent(cg: str) -> None:
    m = V1Manager("idem", Resources(memory="64M"), parent=cg)
    m.destroy()  # never created
    m.create()
    m.destroy()
    m.destroy()
    assert not m.exists()
    with pytest.raises(FileNotFoundError):
        m.stats()
    assert not m.oom_killed() and m.pids() == []
    m.kill_all()


@needs_v1
def test_sibling_survives_destroy_of_another(cg: str, procs: List[subprocess.Popen]) -> None:
    with V1Manager("a", Resources(), parent=cg) as a:
        with V1Manager("b", Resources(), parent=cg) as b:
            p = sleeper(procs)
            b.add_pid(p.pid)
            a.destroy()  # the shared parent is busy and stays
            assert b.pids() == [p.pid]
    assert p.wait(timeout=5) == -signal.SIGKILL


@needs_v1
def test_open_dir_fd_is_none_on_v1(cg: str) -> None:
    assert V1Manager("fd", Resources(), parent=cg).open_dir_fd() is None


def test_bad_names_are_config_errors() -> None:
    for name in ("", "a/b", "..", "-x"):
        with pytest.raises(ConfigError):
            V1Manager(name, Resources(), parent="pyexec-test") if detect_mode() != "v2" \
                else V2Manager(name, Resources(), parent="pyexec-test")


# --------------------------------------------------------------------------- v2 pure logic

def test_v2_conversions() -> None:
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(262144) == 10000
    assert cpu_max_v2(0.5) == "50000 100000"
    assert cpu_max_v2(2) == "200000 100000"
    assert cpu_quota_us(0.29) == 29000  # rounded, not truncated
    assert swap_max_v2(-1, 64 * M) == "max"
    assert swap_max_v2(128 * M, 64 * M) == str(64 * M)
    with pytest.raises(ConfigError):
        swap_max_v2(128 * M, None)


def test_v2_stat_parsing(tmp_path) -> None:
    (tmp_path / "memory.current").write_text("52428800\n")
    (tmp_path / "memory.peak").write_text("60000000\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.swap.current").write_text("0\n")
    (tmp_path / "memory.stat").write_text(
        "anon 41943040\nfile 8388608\nkernel 1048576\nkernel_stack 65536\nfile_mapped 4096\npgfault 12345\n"
        "workingset_refault_anon 0\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 1\n")
    (tmp_path / "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnice_usec 0\n"
        "core_sched.force_idle_usec 0\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n"
        "nr_bursts 0\nburst_usec 0\n")
    mem = stat_memory_v2(str(tmp_path))
    assert mem == MemoryUsage(usage=52428800, rss=41943040, cache=8388608, swap=0, mapped_file=4096,
                              kernel=1048576, max_usage=60000000, limit=None, oom_kills=2)
    assert oom_kills_v2(str(tmp_path)) == 2
    cpu = stat_cpu_v2(str(tmp_path))
    assert cpu == CpuUsage(usage_total_s=1.5, user_s=1.0, system_s=0.5, percent=None,
                           throttled_periods=7, throttled_time_s=0.35)
    # No cpu controller: cpu.stat has only the core keys -> throttling is None, not 0.
    core = stat_cpu_text_v2(parse_keyed("usage_usec 10\nuser_usec 6\nsystem_usec 4\n"))
    assert core.throttled_periods is None and core.usage_total_s == 0.00001
    # memory.peak (5.19+) missing and a limit set:
    (tmp_path / "memory.peak").unlink()
    (tmp_path / "memory.max").write_text("33554432\n")
    mem = stat_memory_v2(str(tmp_path))
    assert mem.max_usage is None and mem.limit == 32 * M


# --------------------------------------------------------------------------- v2 on the kernel

def _cgroup2_root() -> str:
    try:
        return unified_root()
    except FileNotFoundError:
        pytest.skip("no cgroup2 file system mounted")
        raise


def test_v2_core_lifecycle_on_the_kernel(cg: str, procs: List[subprocess.Popen],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """The controller-independent half of the v2 backend (mkdir, cgroup.procs,
    cpu.stat, cgroup.kill, cgroup.freeze, rmdir) works on any cgroup2 mount,
    including the controller-less one of a hybrid host."""
    root = _cgroup2_root()
    caplog.set_level(logging.DEBUG, logger="pyexec.cgroups")
    m = V2Manager("core", Resources(), parent=cg, root=root)
    with m:
        fd = m.open_dir_fd()
        try:
            assert os.readlink(f"/proc/self/fd/{fd}") == m.path
        finally:
            os.close(fd)
        for use_kill in (True, False):  # cgroup.kill, then the freeze + SIGKILL fallback
            if use_kill and not os.path.exists(os.path.join(m.path, "cgroup.kill")):
                continue  # a kernel before 5.14; the fallback is still checked
            m.use_cgroup_kill = use_kill
            p = gated(procs, "import time\nt = time.time()\nwhile time.time() - t < 0.2: pass\n"
                             "print('done', flush=True)\nsys.stdin.readline()\n")
            m.add_pid(p.pid)
            release(p)
            assert p.stdout is not None and p.stdout.readline() == b"done\n"
            assert m.pids() == [p.pid]
            s = m.stats()
            assert s.cpu.usage_total_s is not None and s.cpu.usage_total_s >= 0.1
            caplog.clear()
            m.kill_all()
            assert m.pids() == [] and p.wait(timeout=5) == -signal.SIGKILL
            written = {name for name, _ in cgroup_writes(caplog)}
            assert written == ({"cgroup.kill"} if use_kill else {"cgroup.freeze"}), written
        assert cg not in read("/proc/self/cgroup")
    assert not os.path.exists(m.path)


def test_v2_missing_controller_is_config_error(cg: str) -> None:
    root = _cgroup2_root()
    available = set(read(os.path.join(root, "cgroup.controllers")).split())
    candidates = [("memory", Resources(memory="64M"), "memory"), ("pids", Resources(pids=10), "pids"),
                  ("cpu", Resources(cpu_shares=512), "cpu_shares")]
    missing = [c for c in candidates if c[0] not in available]
    if not missing:
        pytest.skip(f"{root} has memory, pids and cpu controllers; nothing is missing")
    ctl, res, field_name = missing[0]
    m = V2Manager("nomem", res, parent=cg, root=root)
    with pytest.raises(ConfigError) as err:
        m.create()
    assert err.value.field == field_name and f"'{ctl}' controller" in str(err.value)
    assert not m.exists()


def _v2_root_with_controllers() -> str:
    root = _cgroup2_root()
    available = set(read(os.path.join(root, "cgroup.controllers")).split())
    if not {"memory", "cpu", "pids"} <= available:
        pytest.skip(f"cgroup2 at {root} has no memory/cpu/pids controllers on this host "
                    f"({detect_mode()}; cgroup.controllers: {' '.join(sorted(available)) or 'none'}); "
                    "the VM suite runs it")
    return root


def test_v2_limits_oom_and_kill_on_the_kernel(cg: str, procs: List[subprocess.Popen]) -> None:
    root = _v2_root_with_controllers()
    res = Resources(memory="32M", memory_reservation="16M", cpu_shares=512, cpus=0.5, pids=50)
    with V2Manager("lim", res, parent=cg, root=root) as m:
        assert read(f"{m.path}/memory.max") == str(32 * M)
        assert read(f"{m.path}/memory.low") == str(16 * M)
        assert read(f"{m.path}/cpu.weight") == str(shares_to_weight(512))
        assert read(f"{m.path}/cpu.max") == "50000 100000"
        assert read(f"{m.path}/pids.max") == "50"
        if os.path.exists(f"{m.path}/memory.oom.group"):  # no group kill: it would take the monitor too
            assert read(f"{m.path}/memory.oom.group") == "0"
        if os.path.exists(f"{m.path}/memory.swap.max"):
            m.update(Resources(memory_swap="32M"))  # no swap: the OOM killer must act
            assert read(f"{m.path}/memory.swap.max") == "0"
        m.update(Resources(pids=60))
        assert read(f"{m.path}/pids.max") == "60"
        p = gated(procs, "b = b'x' * (200 << 20)\nprint('survived', flush=True)\n")
        m.add_pid(p.pid)
        release(p)
        assert p.wait(timeout=30) == -signal.SIGKILL
        assert m.oom_killed() and m.stats().memory.oom_kills >= 1
        with _Subreaper() as reaper:
            f = gated(procs, FORK_LOOP)
            m.add_pid(f.pid)
            release(f)
            assert wait_for(lambda: (m.stats().pids.current or 0) >= 40)
            m.kill_all(timeout=10)
            assert m.pids() == [] and f.wait(timeout=5) == -signal.SIGKILL
            reaper.reap()


# --------------------------------------------------------------------------- v2 placement

def test_own_cgroup_reads_the_unified_line(tmp_path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("12:memory:/a\n1:name=systemd:/user.slice\n0::/user.slice/x.scope\n")
    assert own_cgroup("/sys/fs/cgroup", str(proc)) == "/sys/fs/cgroup/user.slice/x.scope"
    proc.write_text("0::/\n")
    assert own_cgroup("/sys/fs/cgroup/unified", str(proc)) == "/sys/fs/cgroup/unified"
    proc.write_text("3:cpu:/\n")
    with pytest.raises(FileNotFoundError):
        own_cgroup("/sys/fs/cgroup", str(proc))


def test_root_places_task_cgroups_under_the_hierarchy_root() -> None:
    root = _cgroup2_root()
    assert placement_base(root) == root
    assert V2Manager("t", Resources(), parent="p", root=root).path == os.path.join(root, "p", "t")


def test_processes_of_a_base_move_into_a_leaf(cg: str, procs: List[subprocess.Popen]) -> None:
    """What makes a cgroup-namespace root or a delegated cgroup usable as a
    base: its member processes move to base/leaf (real kernel, any cgroup2)."""
    base = os.path.join(_cgroup2_root(), cg)
    os.mkdir(base)
    try:
        p = sleeper(procs)
        with open(os.path.join(base, "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        move_members_to_leaf(base)
        assert read(os.path.join(base, "cgroup.procs")) == ""
        assert read(os.path.join(base, "leaf", "cgroup.procs")) == str(p.pid)
        p.kill()
        p.wait()
    finally:
        for path in (os.path.join(base, "leaf"), base):
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def test_io_stat_parsing() -> None:
    v1 = ("8:0 Read 4096\n8:0 Write 8388608\n8:0 Sync 8392704\n8:0 Async 0\n8:0 Discard 0\n"
          "8:0 Total 8392704\n254:0 Read 100\n254:0 Write 0\nTotal 8392804\n")
    assert parse_service_bytes_v1(v1) == IoUsage(read_bytes=4196, write_bytes=8388608)
    assert parse_service_bytes_v1("Total 0\n") == IoUsage(read_bytes=0, write_bytes=0)
    v2 = ("8:0 rbytes=1024 wbytes=2048 rios=1 wios=2 dbytes=0 dios=0\n"
          "254:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n")
    assert parse_io_stat_v2(v2) == IoUsage(read_bytes=1034, write_bytes=2068)
    assert parse_io_stat_v2("") == IoUsage(read_bytes=0, write_bytes=0)


@needs_v1
def test_a_task_joins_only_the_hierarchies_it_needs(cg: str) -> None:
    from pyexec.cgroups.v1 import joined_by_default
    plain = V1Manager("plain", Resources(pids=5), parent=cg)
    pinned = V1Manager("pinned", Resources(cpuset_cpus="0"), parent=cg)
    assert "cpuset" not in plain.paths and "cpuset" in pinned.paths
    assert "name=systemd" not in plain.paths
    assert set(plain.paths) == set(v1_mounts()) & joined_by_default(Resources(), v1_mounts())
    with plain:
        with pytest.raises(ConfigError, match="can only be set at launch on cgroup v1"):
            plain.update(Resources(cpuset_cpus="0"))
