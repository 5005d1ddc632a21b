"""Validation of the Resources fields beyond the basic limits (no root, no
cgroup): every bad value is a ConfigError naming the field, and values are
normalised (sizes to bytes, sequences to tuples, mappings copied)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest

from pyexec.cgroups.base import merge_update
from pyexec.cgroups.cpu import cpu_max_text_v2
from pyexec.cgroups.iolimits import io_max_lines_v2
from pyexec.cgroups.unified import reject_v1_only
from pyexec.config import Resources
from pyexec.errors import ConfigError

BAD = [
    (lambda: Resources(cpu_period_us=999), "cpu_period_us", "must be between 1000 and 1000000"),
    (lambda: Resources(cpu_period_us=2_000_000), "cpu_period_us", "must be between"),
    (lambda: Resources(cpu_quota_us=500), "cpu_quota_us", "must be at least 1000"),
    (lambda: Resources(cpu_quota_us=True), "cpu_quota_us", "is not an integer"),
    (lambda: Resources(cpus=1, cpu_quota_us=50000), "cpu_quota_us", "cannot be set with cpus"),
    (lambda: Resources(cpu_burst_us=-1), "cpu_burst_us", "must be at least 0"),
    (lambda: Resources(cpu_idle=1), "cpu_idle", "must be True or False"),
    (lambda: Resources(cpu_rt_period_us=0), "cpu_rt_period_us", "must be at least 1"),
    (lambda: Resources(cpu_rt_runtime_us=-2), "cpu_rt_runtime_us", "must be at least 0"),
    (lambda: Resources(cpu_rt_period_us=1000, cpu_rt_runtime_us=2000), "cpu_rt_runtime_us",
     "must not be above cpu_rt_period_us"),
    (lambda: Resources(memory_swappiness=101), "memory_swappiness", "must be between 0 and 100"),
    (lambda: Resources(memory_kernel_tcp="12XB"), "memory_kernel_tcp", "is not a size"),
    (lambda: Resources(memory_oom_kill_disable="yes"), "memory_oom_kill_disable", "must be True or False"),
    (lambda: Resources(io_leaf_weight=5), "io_leaf_weight", "must be between 10 and 1000"),
    (lambda: Resources(io_weight_devices=[(8, 0)]), "io_weight_devices", "must be a tuple of 3 or 4"),
    (lambda: Resources(io_weight_devices=[(8, 0, None, None)]), "io_weight_devices", "needs a weight"),
    (lambda: Resources(io_weight_devices=[(8, 0, 5000)]), "io_weight_devices", "between 10 and 1000"),
    (lambda: Resources(io_weight_devices="8:0 100"), "io_weight_devices", "must be a sequence"),
    (lambda: Resources(io_throttle_read_bps=[(-1, 0, 10)]), "io_throttle_read_bps", "major and minor"),
    (lambda: Resources(io_throttle_write_iops=[(8, 0, -5)]), "io_throttle_write_iops", "needs a rate"),
    (lambda: Resources(hugetlb={"3M": 1}), "hugetlb", "is not a huge page size"),
    (lambda: Resources(hugetlb={"2MB": "lots"}), "hugetlb[2MB]", "is not a size"),
    (lambda: Resources(hugetlb=[("2MB", 1)]), "hugetlb", "must be a mapping"),
    (lambda: Resources(net_cls_classid=1 << 32), "net_cls_classid", "must be between 0 and 4294967295"),
    (lambda: Resources(net_prio_ifpriomap={"e th0": 1}), "net_prio_ifpriomap", "is not a network interface"),
    (lambda: Resources(net_prio_ifpriomap={"eth0": -1}), "net_prio_ifpriomap[eth0]", "must be between"),
    (lambda: Resources(unified={"../memory.max": "1"}), "unified", "is not a cgroup v2 file name"),
    (lambda: Resources(unified={"memory/x.max": "1"}), "unified", "is not a cgroup v2 file name"),
    (lambda: Resources(unified={"memory..max": "1"}), "unified", "is not a cgroup v2 file name"),
    (lambda: Resources(unified={"memory.max": None}), "unified[memory.max]", "must be a string"),
]


@pytest.mark.parametrize("make,field,reason", BAD)
def test_bad_values_name_the_field(make: Callable[[], Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.field == field
    assert reason in str(err.value)


def test_values_are_normalised() -> None:
    hugetlb = {"2MB": "1G"}
    r = Resources(memory_kernel_tcp="64M", io_weight_devices=[[8, 0, 300]], io_throttle_read_bps=[[8, 0, 10]],
                  hugetlb=hugetlb, unified={"pids.max": 10}, cpu_rt_runtime_us=-1)
    hugetlb["2MB"] = 1
    assert r.memory_kernel_tcp == 64 << 20
    assert r.io_weight_devices == ((8, 0, 300, None),)
    assert r.io_throttle_read_bps == ((8, 0, 10),)
    assert r.hugetlb == {"2MB": 1 << 30}  # a copy: the caller's dict changed afterwards
    assert r.unified == {"pids.max": "10"}
    assert r.cpu_rt_runtime_us == -1
    assert not r.is_empty() and Resources().is_empty()


def test_cfs_bandwidth_and_cpu_max() -> None:
    assert Resources(cpus=0.5).cfs_bandwidth() == (100000, 50000)
    assert Resources(cpus=0.5, cpu_period_us=500000).cfs_bandwidth() == (500000, 250000)
    assert Resources(cpu_period_us=500000, cpu_quota_us=50000).cfs_bandwidth() == (500000, 50000)
    assert Resources(cpu_quota_us=-1).cfs_bandwidth() == (None, -1)
    assert cpu_max_text_v2(Resources(cpu_period_us=500000, cpu_quota_us=50000)) == "50000 500000"
    assert cpu_max_text_v2(Resources(cpu_quota_us=-1), "20000 100000") == "max 100000"
    assert cpu_max_text_v2(Resources(cpu_period_us=200000), "20000 100000") == "20000 200000"
    assert cpu_max_text_v2(Resources()) is None


def test_io_max_lines_combine_the_rates_of_a_device() -> None:
    r = Resources(io_throttle_read_bps=[(8, 0, 100), (8, 16, 5)], io_throttle_write_iops=[(8, 0, 0)])
    assert io_max_lines_v2(r) == ["8:0 rbps=100 wiops=max", "8:16 rbps=5"]


def test_merge_update_replaces_the_other_spelling_of_the_quota() -> None:
    merged, to_apply = merge_update(Resources(cpus=0.5), Resources(cpu_quota_us=20000))
    assert (merged.cpus, merged.cpu_quota_us) == (None, 20000)
    merged, to_apply = merge_update(Resources(cpu_quota_us=20000), Resources(cpus=2))
    assert (merged.cpus, merged.cpu_quota_us) == (2.0, None)
    merged, to_apply = merge_update(Resources(cpus=0.5), Resources(cpu_period_us=200000))
    assert to_apply.cpus == 0.5 and to_apply.cfs_bandwidth() == (200000, 100000)


@pytest.mark.parametrize("field,value", [
    ("cpu_rt_period_us", 1000), ("cpu_rt_runtime_us", 0), ("memory_swappiness", 10),
    ("memory_kernel_tcp", 1 << 20), ("memory_oom_kill_disable", True), ("io_leaf_weight", 100),
    ("io_weight_devices", [(8, 0, None, 100)]), ("net_cls_classid", 1), ("net_prio_ifpriomap", {"lo": 1})])
def test_v1_only_fields_are_refused_for_v2_by_name(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        reject_v1_only(dataclasses.replace(Resources(), **{field: value}))
    assert err.value.field == field and "cgroup v2" in str(err.value)
    reject_v1_only(Resources(memory_oom_kill_disable=False, io_weight_devices=[(8, 0, 100, None)]))
