"""pyexec inside a systemd Delegate=yes unit on a cgroup v2 host.

The VM suite runs this file a second time with systemd as pid 1 and pytest
as the Delegate=yes service ``vm-command.service`` (``vagrant/vm.py --init
systemd``), with a second process of the service beside it. Everywhere else
(the caller's cgroup is not delegated) it skips.

There the service's cgroup S is all pyexec may use: S holds processes, so
enabling controllers in S/cgroup.subtree_control fails with EBUSY until
every process of S is moved into a leaf; then task cgroups are made beside
that leaf, as S/pyexec/<task>, and nothing is created outside S.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from pyexec import ExecCommand, Resources
from pyexec.cgroups import detect_mode, new_manager
from pyexec.cgroups.v2 import LEAF, is_delegated, own_cgroup, placement_base, unified_root

M = 1 << 20
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _delegated_service() -> str:
    """S, when we run in a delegated cgroup (or in its leaf), else ''."""
    try:
        if detect_mode() != "v2":
            return ""
        root = unified_root()
        own = own_cgroup(root)
    except FileNotFoundError:
        return ""
    if os.path.basename(own) == LEAF:
        own = os.path.dirname(own)
    return own if own != root and is_delegated(own) else ""


SERVICE = _delegated_service()
pytestmark = [pytest.mark.needs_root(reason="the delegation tests make cgroups as root in a service"),
              pytest.mark.skipif(not SERVICE, reason="the caller's cgroup is not a systemd-delegated one "
                                "(the VM suite runs this under systemd: libexec/dev vm-test)")]


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def procs(path: str):
    return [int(p) for p in read(os.path.join(path, "cgroup.procs")).split()]


@pytest.fixture(autouse=True)
def kept_parent():
    """Executors keep their parent cgroup (S/pyexec) for the next launch; the
    leak check exempts only <hierarchy>/pyexec, so it goes after each test
    (after the executors fixture shut its tasks down)."""
    yield
    try:
        os.rmdir(os.path.join(SERVICE, "pyexec"))
    except FileNotFoundError:
        pass


def test_first_launches_move_the_service_into_a_leaf_and_put_tasks_beside_it(executors, tmp_path):
    root = unified_root()
    assert placement_base(root) == SERVICE
    first = os.getpid() in procs(SERVICE)
    if first:  # the state systemd hands over: processes in S, no controller enabled for children
        assert len(procs(SERVICE)) >= 2, "the VM suite starts a second process in the service"
        assert "memory" not in read(f"{SERVICE}/cgroup.subtree_control").split()
        others = [p for p in procs(SERVICE) if p != os.getpid()]
    # Three launches at once: whichever meets EBUSY first moves everyone; none may fail.
    launched, errors = [], []

    def launch(n: int):
        try:
            task_dir = tmp_path / f"t{n}"
            task_dir.mkdir()
            ex = executors()
            ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir),
                                  resources=Resources(memory="64M", pids=20, cpus=0.5)))
            launched.append(ex)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=launch, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    leaf = os.path.join(SERVICE, LEAF)
    assert procs(SERVICE) == [], "S must hold no process once controllers are enabled for its children"
    assert os.getpid() in procs(leaf)
    if first:
        assert set(others) <= set(procs(leaf)), "every process of the service moved into the leaf"
    assert {"memory", "pids", "cpu"} <= set(read(f"{SERVICE}/cgroup.subtree_control").split())
    for ex in launched:
        path = ex._cgroup.path
        assert path == os.path.join(SERVICE, "pyexec", ex.task_id)
        assert read(f"{path}/memory.max") == str(64 * M) and read(f"{path}/pids.max") == "20"
        assert read(f"{path}/cpu.max") == "50000 100000"
        assert not os.path.exists(os.path.join(root, "pyexec", ex.task_id))
        ex.shutdown(grace=0)
        assert not os.path.exists(path)
    assert os.path.isdir(leaf)  # we still live there


def test_later_managers_do_not_nest_below_the_leaf(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir), resources=Resources(pids=10)))
    assert own_cgroup(unified_root()) == os.path.join(SERVICE, LEAF)
    assert ex._cgroup.path == os.path.join(SERVICE, "pyexec", ex.task_id)


def test_stats_oom_and_kill_in_the_delegated_subtree(executors, task_dir):
    ex = executors("universal")
    ex.launch(ExecCommand(argv=["/usr/bin/python3", "-c", "import time\ntime.sleep(0.5)\nb = bytearray(200 << 20)\n"],
                          task_dir=str(task_dir), resources=Resources(memory="48M", memory_swap="48M", pids=20)))
    assert ex._cgroup.path.startswith(SERVICE + "/pyexec/")
    s = ex.stats()
    assert s.source == "cgroup v2" and s.memory.limit == 48 * M and s.pids.limit == 20
    result = ex.wait(60)
    assert result.oom_killed is True and result.usage.memory.oom_kills >= 1


def test_cleanup_stale_finds_leftovers_in_the_delegated_subtree(executors):
    leftover = new_manager("crashed-0123456789ab", Resources(pids=10))
    leftover.create()
    p = subprocess.Popen(["sleep", "300"])
    try:
        leftover.add_pid(p.pid)
        assert leftover.paths["unified"] == os.path.join(SERVICE, "pyexec", "crashed-0123456789ab")
        assert "crashed-0123456789ab" in executors().cleanup_stale()
        assert p.wait(timeout=10) == -9
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.path.exists(leftover.paths["unified"])


NOT_ROOT = textwrap.dedent("""
    import json, os, sys
    from pyexec import ExecCommand, Resources, new_executor
    from pyexec.cgroups import may_create_cgroups
    from pyexec.cgroups.v2 import own_cgroup, unified_root
    work = sys.argv[1]
    out = {"uid": os.getuid(), "own": own_cgroup(unified_root()), "may": may_create_cgroups()}
    ex = new_executor("universal", state_root=os.path.join(work, "state"))
    ex.launch(ExecCommand(argv=["sleep", "0.3"], task_dir=os.path.join(work, "task"),
                          resources=Resources(memory="32M", pids=5)))
    out["task_cgroup"] = ex._cgroup.path
    out["memory.max"] = open(os.path.join(ex._cgroup.path, "memory.max")).read().strip()
    out["exit"] = ex.wait(30).exit_code
    out["own_after"] = own_cgroup(unified_root())
    with open(os.path.join(work, "out.json"), "w") as f:
        json.dump(out, f)
""")


def test_a_non_root_delegated_unit_runs_limited_tasks(tmp_path):
    """A second Delegate=yes service with User=nobody: systemd hands its
    cgroup to nobody, and the universal executor limits tasks there."""
    work = tmp_path / "nobody"
    work.mkdir()
    (work / "script.py").write_text(NOT_ROOT)
    os.chown(work, 65534, 65534)
    for parent in [tmp_path, *tmp_path.parents]:  # nobody must reach it
        if parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    unit = "v2-nobody-test.service"
    unit_file = f"/run/systemd/system/{unit}"
    with open(unit_file, "w") as f:
        f.write("[Unit]\nDefaultDependencies=no\n[Service]\nType=oneshot\nDelegate=yes\nUser=nobody\n"
                f"WorkingDirectory={os.getcwd()}\nEnvironment=PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={REPO}\n"
                f"ExecStart={sys.executable} {work}/script.py {work}\n"
                f"StandardOutput=file:{work}/log\nStandardError=inherit\n")
    try:
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=120)
        proc = subprocess.run(["systemctl", "start", unit], capture_output=True, text=True, timeout=300)
        log = (work / "log").read_text() if (work / "log").exists() else ""
        assert proc.returncode == 0, proc.stderr + log
    finally:
        os.unlink(unit_file)
        subprocess.run(["systemctl", "daemon-reload"], timeout=120)
    out = json.loads((work / "out.json").read_text())
    service = os.path.join(unified_root(), "system.slice", unit)
    assert out["uid"] == 65534 and out["may"] is True
    assert out["own"] == service and out["own_after"] == os.path.join(service, LEAF)
    assert out["task_cgroup"].startswith(service + "/pyexec/")
    assert out["memory.max"] == str(32 * M) and out["exit"] == 0
