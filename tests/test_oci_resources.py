"""pyexec-oci's mapping of ``linux.resources`` onto Resources and device
rules (pyexec/oci/resources.py): pure, no root or cgroup needed."""
from __future__ import annotations

import logging
from typing import Any, Dict

import pytest

from pyexec.cgroups.devices import DEFAULT_DEVICE_RULES, DeviceRule
from pyexec.errors import ConfigError
from pyexec.oci.resources import device_rules, to_resources
from pyexec.oci.spec_resources import parse_resources


def res(value: Dict[str, Any]) -> Any:
    return parse_resources(value)


def test_runtime_tools_memory_case(caplog: pytest.LogCaptureFixture) -> None:
    limit = 50593792
    with caplog.at_level(logging.WARNING):
        r = to_resources(res({"memory": {"limit": limit, "reservation": limit, "swap": limit, "kernel": limit,
                                         "kernelTCP": limit, "swappiness": 10, "disableOOMKiller": True}}))
    assert (r.memory, r.memory_reservation, r.memory_swap, r.memory_kernel_tcp) == (limit,) * 4
    assert (r.memory_swappiness, r.memory_oom_kill_disable) == (10, True)
    assert "memory.kernel is ignored" in caplog.text


def test_unlimited_values() -> None:
    r = to_resources(res({"memory": {"limit": -1, "reservation": -1, "swap": -1, "kernelTCP": -1},
                          "cpu": {"quota": -1, "realtimeRuntime": -1}, "pids": {"limit": -1}}))
    assert (r.memory, r.memory_reservation, r.memory_swap, r.memory_kernel_tcp) == (None, None, -1, -1)
    assert (r.cpu_quota_us, r.cpu_rt_runtime_us, r.pids) == (-1, -1, None)
    assert to_resources(res({"pids": {"limit": 0}})).pids is None


def test_cpu_period_and_quota_exactly() -> None:
    r = to_resources(res({"cpu": {"shares": 1024, "period": 500000, "quota": 50000, "cpus": "0", "mems": "0",
                                  "realtimePeriod": 1000000, "realtimeRuntime": 950000, "burst": 1000, "idle": 1}}))
    assert (r.cpu_period_us, r.cpu_quota_us, r.cpus) == (500000, 50000, None)
    assert (r.cpu_rt_period_us, r.cpu_rt_runtime_us, r.cpu_burst_us, r.cpu_idle) == (1000000, 950000, 1000, True)
    assert (r.cpu_shares, r.cpuset_cpus, r.cpuset_mems) == (1024, "0", "0")
    assert to_resources(res({"cpu": {"period": 200000}})).cfs_bandwidth() == (200000, None)


def test_block_io_hugetlb_network_unified() -> None:
    r = to_resources(res({
        "blockIO": {"weight": 500, "leafWeight": 300,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 400},
                                     {"major": 8, "minor": 16, "leafWeight": 20}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 700}],
                    "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 800}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 900}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 30}],
        "network": {"classID": 1048577, "priorities": [{"name": "lo", "priority": 2}]},
        "unified": {"memory.high": "64M"}}))
    assert (r.io_weight, r.io_leaf_weight) == (500, 300)
    assert r.io_weight_devices == ((8, 0, 400, None), (8, 16, None, 20))
    assert (r.io_throttle_read_bps, r.io_throttle_write_bps) == (((8, 0, 600),), ((8, 0, 700),))
    assert (r.io_throttle_read_iops, r.io_throttle_write_iops) == (((8, 0, 800),), ((8, 0, 900),))
    assert r.hugetlb == {"2MB": 2 << 30}
    assert (r.net_cls_classid, r.net_prio_ifpriomap) == (1048577, {"lo": 2})
    assert r.unified == {"memory.high": "64M"}


def test_errors_name_the_json_path() -> None:
    with pytest.raises(ConfigError) as err:
        to_resources(res({"cpu": {"quota": 500}}))
    assert err.value.field == "linux.resources.cpu.quota"
    with pytest.raises(ConfigError) as err:
        to_resources(res({"rdma": {"mlx5_0": {"hcaHandles": 1}}}))
    assert err.value.field == "linux.resources.rdma" and "not supported" in str(err.value)


def test_device_rules_keep_the_list_order() -> None:
    rules = device_rules(res({"devices": [{"allow": False, "access": "rwm"},
                                          {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
                                          {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"},
                                          {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "w"}]}),
                         [])
    assert rules is not None
    assert rules[:4] == [DeviceRule("a", None, None, "rwm", False), DeviceRule("c", 10, 229, "rwm"),
                         DeviceRule("b", 8, 20, "rw"), DeviceRule("c", 10, 229, "w", False)]
    assert rules[4:] == list(DEFAULT_DEVICE_RULES)  # runc's defaults come after the config's rules


def test_device_rules_without_a_leading_deny_start_from_allow_all() -> None:
    rules = device_rules(res({"devices": [{"allow": False, "type": "c", "major": 1, "minor": 3}]}), [])
    assert rules is not None and rules[:2] == [DeviceRule("a", None, None, "rwm", True),
                                               DeviceRule("c", 1, 3, "rwm", False)]
    assert device_rules(res({}), []) is None
