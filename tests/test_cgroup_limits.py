"""The Resources fields beyond the basic limits on the real kernel (needs
root; this file covers cgroup v1 and hybrid hosts, tests/v2/ the v2 side):
each is created, read back from its control file, updated and destroyed,
or refused with a ConfigError naming the field (and the file or hierarchy)
where the host lacks it. The ``cg`` fixture checks that nothing is left.
"""
from __future__ import annotations

import os
from typing import Tuple

import pytest

from pyexec.cgroups import V1Manager
from pyexec.cgroups.devices import DeviceRule
from pyexec.cgroups.v1 import v1_mounts
from pyexec.config import Resources
from pyexec.errors import ConfigError

M = 1 << 20

pytestmark = [pytest.mark.needs_root(reason="cgroup tests need root"),
              pytest.mark.skipif("memory" not in v1_mounts(), reason="no cgroup v1 hierarchies on this host")]


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def a_disk() -> Tuple[int, int]:
    """MAJ:MIN of a whole disk of this host (throttle rules need a real queue)."""
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith(("loop", "ram", "zram")):
            major, minor = read(f"/sys/block/{name}/dev").split(":")
            return int(major), int(minor)
    pytest.skip("no disk in /sys/block")


def test_cpu_period_quota_written_exactly_then_updated(cg: str) -> None:
    m = V1Manager("cfs", Resources(cpu_period_us=500000, cpu_quota_us=50000, cpu_shares=2048), parent=cg)
    with m:
        cpu = m.paths["cpu"]
        assert (read(f"{cpu}/cpu.cfs_period_us"), read(f"{cpu}/cpu.cfs_quota_us")) == ("500000", "50000")
        m.update(Resources(cpu_period_us=100000))  # the quota stays 50000 µs per (now shorter) period
        assert (read(f"{cpu}/cpu.cfs_period_us"), read(f"{cpu}/cpu.cfs_quota_us")) == ("100000", "50000")
        m.update(Resources(cpu_quota_us=-1))
        assert read(f"{cpu}/cpu.cfs_quota_us") == "-1"
        m.update(Resources(cpus=0.5))  # cpus replaces the quota: half of the period in force
        assert read(f"{cpu}/cpu.cfs_quota_us") == "50000"


def test_cpus_with_a_period_scales_the_quota(cg: str) -> None:
    with V1Manager("cpus", Resources(cpus=0.25, cpu_period_us=200000), parent=cg) as m:
        assert read(f"{m.paths['cpu']}/cpu.cfs_quota_us") == "50000"
        assert read(f"{m.paths['cpu']}/cpu.cfs_period_us") == "200000"


def test_cpu_burst_and_idle(cg: str) -> None:
    probe = os.path.join(v1_mounts()["cpu"], "cpu.cfs_burst_us")
    res = Resources(cpu_quota_us=50000, cpu_burst_us=20000, cpu_idle=True)
    m = V1Manager("burst", res, parent=cg)
    if not os.path.exists(probe):
        with pytest.raises(ConfigError, match="cpu.cfs_burst_us"):
            m.create()
        return
    with m:
        assert read(f"{m.paths['cpu']}/cpu.cfs_burst_us") == "20000"
        assert read(f"{m.paths['cpu']}/cpu.idle") == "1"
        m.update(Resources(cpu_idle=False))
        assert read(f"{m.paths['cpu']}/cpu.idle") == "0"


def test_realtime_bandwidth_comes_from_the_parent(cg: str) -> None:
    """Under a fresh parent (rt_runtime_us 0) a period is fine but any runtime
    is refused, naming the parent's budget; at the root (950000 µs) it fits."""
    if not os.path.exists(os.path.join(v1_mounts()["cpu"], "cpu.rt_runtime_us")):
        pytest.skip("no CONFIG_RT_GROUP_SCHED")
    with V1Manager("rt", Resources(cpu_rt_period_us=500000, cpu_rt_runtime_us=0), parent=cg) as m:
        assert read(f"{m.paths['cpu']}/cpu.rt_period_us") == "500000"
    m = V1Manager("rt", Resources(cpu_rt_runtime_us=10000), parent=cg)
    with pytest.raises(ConfigError) as err:
        m.create()
    assert err.value.field == "cpu_rt_runtime_us" and "parent's" in str(err.value)
    assert not m.exists()
    with V1Manager(cg, Resources(cpu_rt_period_us=1000000, cpu_rt_runtime_us=10000), parent="") as top:
        assert read(f"{top.paths['cpu']}/cpu.rt_runtime_us") == "10000"
        top.update(Resources(cpu_rt_runtime_us=20000))
        assert read(f"{top.paths['cpu']}/cpu.rt_runtime_us") == "20000"


def test_memory_swappiness_kernel_tcp_and_oom_killer(cg: str) -> None:
    res = Resources(memory="48M", memory_swappiness=10, memory_kernel_tcp=50593792, memory_oom_kill_disable=True)
    with V1Manager("mem", res, parent=cg) as m:
        mem = m.paths["memory"]
        assert read(f"{mem}/memory.swappiness") == "10"
        assert read(f"{mem}/memory.kmem.tcp.limit_in_bytes") == "50593792"
        assert "oom_kill_disable 1" in read(f"{mem}/memory.oom_control")
        m.update(Resources(memory_swappiness=60, memory_kernel_tcp=-1, memory_oom_kill_disable=False))
        assert read(f"{mem}/memory.swappiness") == "60"
        assert int(read(f"{mem}/memory.kmem.tcp.limit_in_bytes")) > 1 << 60
        assert "oom_kill_disable 0" in read(f"{mem}/memory.oom_control")


def test_io_throttle_rules_per_device(cg: str) -> None:
    major, minor = a_disk()
    res = Resources(io_throttle_read_bps=[(major, minor, 1 << 20)], io_throttle_write_bps=[(major, minor, 2 << 20)],
                    io_throttle_read_iops=[(major, minor, 100)], io_throttle_write_iops=[(major, minor, 200)])
    with V1Manager("io", res, parent=cg) as m:
        blkio = m.paths["blkio"]
        for name, rate in (("read_bps", 1 << 20), ("write_bps", 2 << 20), ("read_iops", 100), ("write_iops", 200)):
            assert read(f"{blkio}/blkio.throttle.{name}_device") == f"{major}:{minor} {rate}"
        m.update(Resources(io_throttle_read_bps=[(major, minor, 0)]))  # 0 removes the rule
        assert read(f"{blkio}/blkio.throttle.read_bps_device") == ""


def test_io_weights_applied_or_refused_naming_the_file(cg: str) -> None:
    major, minor = a_disk()
    with V1Manager("probe", Resources(), parent=cg) as probe:
        files = set(os.listdir(probe.paths["blkio"]))
    m = V1Manager("leaf", Resources(io_leaf_weight=300), parent=cg)
    if "blkio.leaf_weight" in files:
        with m:
            assert read(f"{m.paths['blkio']}/blkio.leaf_weight") == "300"
    else:  # CFQ is gone since 5.0
        with pytest.raises(ConfigError, match="blkio.leaf_weight") as err:
            m.create()
        assert err.value.field == "io_leaf_weight" and not m.exists()
    m = V1Manager("wd", Resources(io_weight_devices=[(major, minor, 300, None)]), parent=cg)
    present = [f for f in ("blkio.weight_device", "blkio.bfq.weight_device") if f in files]
    if present:
        with m:
            assert f"{major}:{minor} 300" in read(f"{m.paths['blkio']}/{present[0]}")
    else:
        with pytest.raises(ConfigError, match="blkio.weight_device") as err:
            m.create()
        assert err.value.field == "io_weight_devices" and not m.exists()


def test_hugetlb_joins_its_hierarchy_or_names_it(cg: str) -> None:
    sizes = sorted(os.listdir("/sys/kernel/mm/hugepages")) if os.path.isdir("/sys/kernel/mm/hugepages") else []
    if not sizes:
        pytest.skip("no huge pages on this kernel")
    kb = int(sizes[0].split("-")[1].rstrip("kB"))
    size = f"{kb // 1024}MB" if kb < 1 << 20 else f"{kb >> 20}GB"
    m = V1Manager("huge", Resources(hugetlb={size: 2 << 30}), parent=cg)
    if "hugetlb" not in v1_mounts():
        with pytest.raises(ConfigError, match="'hugetlb'") as err:
            m.create()
        assert err.value.field == "hugetlb" and not m.exists()
        assert "hugetlb" not in V1Manager("plain", Resources(), parent=cg).paths
        return
    with m:
        assert read(f"{m.paths['hugetlb']}/hugetlb.{size}.limit_in_bytes") == str(2 << 30)
        m.update(Resources(hugetlb={size: 1 << 30}))
        assert read(f"{m.paths['hugetlb']}/hugetlb.{size}.limit_in_bytes") == str(1 << 30)
    with pytest.raises(ConfigError, match="hugetlb.3MB.limit_in_bytes"):
        V1Manager("bad", Resources(hugetlb={"3MB": 1 << 30}), parent=cg).create()


def test_net_cls_and_net_prio_need_their_hierarchies(cg: str) -> None:
    for ctl, res, filename, expected in (
            ("net_cls", Resources(net_cls_classid=0x100001), "net_cls.classid", "1048577"),
            ("net_prio", Resources(net_prio_ifpriomap={"lo": 5}), "net_prio.ifpriomap", "lo 5")):
        m = V1Manager("net", res, parent=cg)
        if ctl not in v1_mounts():
            with pytest.raises(ConfigError, match=f"'{ctl}'"):
                m.create()
            assert not m.exists()
            continue
        with m:
            assert expected in read(f"{m.paths[ctl]}/{filename}")


def test_unified_is_refused_on_v1(cg: str) -> None:
    with pytest.raises(ConfigError, match="cgroup v2 files") as err:
        V1Manager("u", Resources(unified={"memory.high": "64M"}), parent=cg).create()
    assert err.value.field == "unified"


def test_device_rules_apply_in_order(cg: str) -> None:
    if "devices" not in v1_mounts():
        pytest.skip("no devices hierarchy")
    m = V1Manager("dev", Resources(), parent=cg)
    m.device_rules = [DeviceRule("c", 10, 229, "rwm"), DeviceRule("b", 8, 20, "rw"), DeviceRule("c", 1, 3, "rwm"),
                      DeviceRule("c", 1, 3, "w", allow=False)]
    with m:
        assert read(f"{m.paths['devices']}/devices.list").splitlines() == ["c 10:229 rwm", "b 8:20 rw", "c 1:3 rm"]
    m = V1Manager("all", Resources(), parent=cg)
    m.device_rules = [DeviceRule("a", None, None, "rwm"), DeviceRule("c", 1, 3, "rwm", allow=False)]
    with m:  # allow everything, then take /dev/null away
        listed = read(f"{m.paths['devices']}/devices.list")
        assert listed == "a *:* rwm"  # the kernel lists the default; the deny is an exception it keeps


def test_a_reopened_manager_sees_the_optional_hierarchies_joined(cg: str) -> None:
    """pyexec-oci's delete opens the cgroup with no limits: it must still
    remove the cpuset directory its create joined."""
    if "cpuset" not in v1_mounts():
        pytest.skip("no cpuset hierarchy")
    m = V1Manager("opt", Resources(cpuset_cpus="0"), parent=cg)
    m.create()
    again = V1Manager("opt", Resources(), parent=cg)
    assert again.paths["cpuset"] == m.paths["cpuset"]
    again.destroy()
    assert not os.path.exists(m.paths["cpuset"])
    assert "cpuset" not in V1Manager("other", Resources(), parent=cg).paths
