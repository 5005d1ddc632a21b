"""Container tasks on a pure cgroup v2 host, end to end (the VM suite runs
these: ``libexec/dev vm-test``; elsewhere they skip).

What the v1 suite cannot show: every limit lands in its v2 file of the task's
cgroup, the task is born in that cgroup (clone3 CLONE_INTO_CGROUP, never a
cgroup.procs write), stats carry the same fields as on v1, an OOM kill is
read from memory.events while the task's monitor survives it, and killing
uses cgroup.kill.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import List, Tuple

import pytest

from conftest import wait_for
from pyexec import ExecCommand, Resources
from pyexec.cgroups import detect_mode
from pyexec.cgroups.cpu import shares_to_weight
from pyexec.cgroups.v2 import placement_base, unified_root

M = 1 << 20
PY = "/usr/bin/python3"  # inside a container: the host-mirror root has /usr, not a venv elsewhere


def _v2_with_controllers() -> str:
    try:
        mode = detect_mode()
    except FileNotFoundError:
        return "no cgroup file system"
    if mode != "v2":
        return f"not a cgroup v2 host ({mode}); the VM suite runs these (libexec/dev vm-test)"
    with open(os.path.join(unified_root(), "cgroup.controllers")) as f:
        available = set(f.read().split())
    missing = {"memory", "cpu", "pids", "io", "cpuset"} - available
    return f"cgroup2 lacks {' '.join(sorted(missing))}" if missing else ""


pytestmark = [pytest.mark.needs_root(reason="v2 task cgroups need root"),
              pytest.mark.skipif(bool(_v2_with_controllers()), reason=_v2_with_controllers() or "-")]


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def task_pids(path: str):
    return [int(p) for p in read(os.path.join(path, "cgroup.procs")).split()]


def cgroup_writes(caplog) -> List[Tuple[str, str]]:
    """(file name, text) of each control-file write the cgroup code logged
    (pyexec/cgroups/fscommon.py logs every one at DEBUG)."""
    return [(os.path.basename(r.cgroup_file), r.cgroup_data) for r in caplog.records if hasattr(r, "cgroup_file")]


def test_every_limit_lands_in_its_v2_file(executors, task_dir):
    cpus = os.sched_getaffinity(0)
    cpu = str(max(cpus))  # the last CPU: not what an unrestricted task would show
    res = Resources(memory="96M", memory_reservation="32M", memory_swap="128M", cpu_shares=512, cpus=0.5,
                    cpuset_cpus=cpu, cpuset_mems="0", pids=40, io_weight=300)
    ex = executors()
    ex.launch(ExecCommand(argv=["/bin/sh", "-c", "grep Cpus_allowed_list /proc/self/status; exec sleep 60"],
                          task_dir=str(task_dir), resources=res))
    path = ex._cgroup.path
    assert path == os.path.join(placement_base(unified_root()), "pyexec", ex.task_id)
    assert read(f"{path}/memory.max") == str(96 * M)
    assert read(f"{path}/memory.low") == str(32 * M)
    assert read(f"{path}/memory.swap.max") == str(32 * M)  # v2 counts swap alone: 128M - 96M
    assert read(f"{path}/cpu.weight") == str(shares_to_weight(512))
    assert read(f"{path}/cpu.max") == "50000 100000"
    assert read(f"{path}/cpuset.cpus") == cpu
    assert read(f"{path}/cpuset.mems") == "0"
    assert read(f"{path}/pids.max") == "40"
    assert read(f"{path}/io.weight") in ("default 300", "300")
    assert read(f"{path}/memory.oom.group") == "0"  # the monitor must outlive an OOM kill
    # The monitor and the task's processes are all members, nothing else.
    wait_for(lambda: "Cpus_allowed_list" in _stdout(task_dir), what="the task's output")
    assert _stdout(task_dir).split()[-1] == cpu
    members = task_pids(path)
    assert len(members) >= 2 and os.getpid() not in members  # the monitor and the task
    for pid in members:
        try:
            assert read(f"/proc/{pid}/cgroup") == "0::" + path[len(unified_root()):]
        except FileNotFoundError:  # the shell's grep, exiting
            pass
    # Live update goes to the same files.
    ex.update_resources(Resources(memory="128M", memory_swap="128M", pids=50, cpus=0.25))
    assert (read(f"{path}/memory.max"), read(f"{path}/memory.swap.max")) == (str(128 * M), "0")
    assert (read(f"{path}/pids.max"), read(f"{path}/cpu.max")) == ("50", "25000 100000")
    ex.shutdown(grace=0)
    assert not os.path.exists(path)


def _stdout(task_dir) -> str:
    path = task_dir / "logs" / f"{task_dir.name}.stdout.0"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("kind", ["container", "universal"])
def test_tasks_are_born_in_their_cgroup_by_clone3(executors, task_dir, caplog, kind):
    """CLONE_INTO_CGROUP: the executor never has a pid written into cgroup.procs.
    The cgroup code logs each time it hands out the cgroup.procs files for
    that (CgroupManager.procs_files, which the shim's fallback and add_pid
    use) and each write it makes itself."""
    caplog.set_level(logging.DEBUG, logger="pyexec.cgroups")
    ex = executors(kind)
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir), resources=Resources(pids=20)))
    handed_out = [r.cgroup_procs_files for r in caplog.records if hasattr(r, "cgroup_procs_files")]
    assert not handed_out, f"a pid was to be written into {handed_out}: clone3 CLONE_INTO_CGROUP was not used"
    assert "cgroup.procs" not in [name for name, _ in cgroup_writes(caplog)]
    assert len(task_pids(ex._cgroup.path)) >= 1


def test_stats_have_every_field_v1_has(executors, task_dir):
    code = ("import time\nb = bytearray(40 << 20)\nb[::4096] = b'x' * len(b[::4096])\n"
            "open('/local/f', 'wb').write(b'y' * (4 << 20))\nimport os\nos.sync()\n"
            "t = time.time()\nwhile time.time() - t < 0.5: pass\nprint('ready', flush=True)\ntime.sleep(60)\n")
    ex = executors()
    ex.launch(ExecCommand(argv=[PY, "-c", code], task_dir=str(task_dir),
                          resources=Resources(memory="256M", pids=30, cpus=1.5)))
    ex.stats()  # starts the percent interval
    wait_for(lambda: "ready" in _stdout(task_dir), timeout=60, what="the task to allocate and write")
    s = ex.stats()
    assert s.source == "cgroup v2"
    for group in (s.memory, s.cpu, s.pids, s.io):
        missing = [f.name for f in dataclasses.fields(group) if getattr(group, f.name) is None]
        assert not missing, f"{type(group).__name__}: {missing} are None on v2"
    assert s.memory.rss >= 35 * M and s.memory.limit == 256 * M and s.memory.max_usage >= s.memory.usage
    assert s.pids.current >= 2 and s.pids.limit == 30
    assert s.cpu.usage_total_s > 0.3 and s.cpu.throttled_periods is not None
    assert s.io.write_bytes >= 4 * M  # /local is on the scratch disk: real block I/O


def test_an_oom_kill_is_read_from_memory_events_and_the_monitor_survives(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=[PY, "-c", "import time\ntime.sleep(0.3)\nb = bytearray(300 << 20)\n"],
                          task_dir=str(task_dir), resources=Resources(memory="48M", memory_swap="48M")))
    path = ex._cgroup.path
    state = os.path.join(ex.state_root, ex.task_id)
    # The monitor (not the caller) writes the exit record: it must not die with the task.
    wait_for(lambda: os.path.exists(os.path.join(state, "exit.json")), timeout=60, what="the monitor's exit record")
    with open(os.path.join(state, "exit.json")) as f:
        record = json.load(f)
    events = dict(line.split() for line in read(f"{path}/memory.events").splitlines())
    assert int(events["oom_kill"]) >= 1
    result = ex.wait(30)
    assert result.oom_killed is True and result.signal == signal.SIGKILL, (result, record)
    assert result.usage.memory.oom_kills >= 1


def test_shutdown_uses_cgroup_kill(executors, task_dir, caplog):
    """A universal task's fork bomb (no pid namespace to die with its init)
    dies by cgroup.kill alone: the kill rounds write cgroup.kill and never
    freeze (the control-file writes are logged by the cgroup code)."""
    bomb = ("import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n"
            "            os.setsid()\n            time.sleep(100)\n            os._exit(0)\n"
            "    except OSError:\n        time.sleep(0.001)\n")
    ex = executors("universal")
    ex.launch(ExecCommand(argv=[PY, "-c", bomb], task_dir=str(task_dir), resources=Resources(pids=24)))
    path = ex._cgroup.path
    wait_for(lambda: (ex.stats().pids.current or 0) >= 20, timeout=60, what="the fork bomb to fill its limit")
    caplog.set_level(logging.DEBUG, logger="pyexec.cgroups")
    started = time.monotonic()
    result = ex.shutdown(grace=0)
    assert result.signal == signal.SIGKILL and time.monotonic() - started < 30
    written = {name for name, _ in cgroup_writes(caplog)}
    assert written == {"cgroup.kill"}, written  # not cgroup.freeze: no fallback round
    assert not os.path.exists(path)


def test_the_device_program_grants_only_the_permissions_asked(executors, task_dir):
    """The eBPF device program (v2's devices controller): a node allowed "r"
    opens read-only and not read-write; a disk made with mknod never opens."""
    from pyexec import Device, Isolation
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    disk = os.stat("/dev/" + sorted(d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram")))[0])
    script = ("exec 3</dev/fuse && echo read-ok; (exec 4<>/dev/fuse) 2>/dev/null || echo rw-denied; "
              f"mknod /dev/d b {os.major(disk.st_rdev)} {os.minor(disk.st_rdev)} && echo made; "
              "(head -c1 /dev/d >/dev/null) 2>/dev/null || echo disk-denied")
    ex = executors()
    ex.launch(ExecCommand(argv=["/bin/sh", "-c", script], task_dir=str(task_dir),
                          isolation=Isolation(devices=[Device("/dev/fuse", "r")])))
    assert ex.wait(60).exit_code == 0
    assert _stdout(task_dir).split() == ["read-ok", "rw-denied", "made", "disk-denied"], _stdout(task_dir)


def test_v2_limit_files_of_the_new_fields(cg):
    """cpu.max exactly, cpu.max.burst, io.max, unified files; v1-only fields refused by name."""
    import subprocess

    from pyexec.cgroups import V2Manager
    from pyexec.cgroups.devices import DeviceRule
    from pyexec.errors import ConfigError
    disk = sorted(d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram", "zram")))
    res = Resources(cpu_period_us=500000, cpu_quota_us=50000, unified={"memory.high": "64M", "pids.max": "33"})
    m = V2Manager("new", res, parent=cg)
    m.device_rules = [DeviceRule("c", 1, 3, "rwm"), DeviceRule("c", 1, 5, "rwm"), DeviceRule("c", 1, 3, "w", False)]
    with m:
        assert read(f"{m.path}/cpu.max") == "50000 500000"
        assert read(f"{m.path}/memory.high") == str(64 * M) and read(f"{m.path}/pids.max") == "33"
        m.update(Resources(cpu_quota_us=-1))
        assert read(f"{m.path}/cpu.max") == "max 500000"
        if os.path.exists(f"{m.path}/cpu.max.burst"):
            m.update(Resources(cpu_quota_us=50000, cpu_burst_us=1000))
            assert read(f"{m.path}/cpu.max.burst") == "1000"
        if disk and os.path.exists(f"{m.path}/io.max"):
            dev = read(f"/sys/block/{disk[0]}/dev")
            major, minor = (int(x) for x in dev.split(":"))
            m.update(Resources(io_throttle_read_bps=[(major, minor, 1 << 20)],
                               io_throttle_write_iops=[(major, minor, 50)]))
            assert f"{dev} rbps={1 << 20} wbps=max riops=max wiops=50" in read(f"{m.path}/io.max")
        # The device program: the last matching rule wins (a deny of "w" after an allow of rwm).
        probe = subprocess.Popen([PY, "-c", "import os,sys; sys.stdin.read(1)\n"
                                  "for p, f in (('/dev/null', os.O_RDONLY), ('/dev/null', os.O_WRONLY),"
                                  " ('/dev/zero', os.O_RDONLY)):\n"
                                  "    try: os.close(os.open(p, f)); print('ok')\n"
                                  "    except OSError: print('denied')\n"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            m.add_pid(probe.pid)
            out, _ = probe.communicate("x", timeout=30)
        finally:
            probe.kill()
            probe.wait()
        assert out.split() == ["ok", "denied", "ok"], out
    for field, value in (("cpu_rt_runtime_us", 1000), ("memory_swappiness", 10), ("net_cls_classid", 1)):
        with pytest.raises(ConfigError) as err:
            V2Manager("bad", dataclasses.replace(Resources(), **{field: value}), parent=cg).create()
        assert err.value.field == field and "cgroup v2" in str(err.value)
    with pytest.raises(ConfigError, match="names no file"):
        V2Manager("bad", Resources(unified={"memory.nosuch": "1"}), parent=cg).create()
