"""The universal executor on the real kernel: tasks on the host, with and
without a cgroup, daemons that must not escape, users, oom_score_adj, the
binary lookup, and a caller that is not root. Behaviour every executor
shares is in test_executors.py.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import wait_for
from pyexec import ExecCommand, Isolation, Mount, Resources
from pyexec.errors import ConfigError, LaunchError
from pyexec.executor.universal import UniversalExecutor

pytestmark = pytest.mark.needs_root(reason="these tests switch users and compare with root runs")

M = 1 << 20
PY = "/usr/bin/python3"
REPO = Path(__file__).resolve().parent.parent


def sh(script: str):
    return ["/bin/sh", "-c", script]


@pytest.fixture
def universal():
    made = []

    def make(**options):
        ex = UniversalExecutor(**options)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(grace=0)


def run(universal, task_dir: Path, argv, timeout: float = 30, options=None, **fields):
    ex = universal(**(options or {}))
    ex.launch(ExecCommand(argv=argv, task_dir=str(task_dir), **fields))
    result = ex.wait(timeout)
    logs = task_dir / "logs"
    out = (logs / f"{task_dir.name}.stdout.0").read_text()
    err = (logs / f"{task_dir.name}.stderr.0").read_text()
    return result, out, err


def sleepers(marker: str):
    """Live processes whose command line holds ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


# -- the host, the task directory -------------------------------------------------------

def test_the_task_runs_on_the_host_in_its_task_directory(universal, task_dir):
    result, out, _ = run(universal, task_dir, sh("pwd; readlink /proc/self/ns/pid /proc/self/ns/mnt; "
                                                 "ps -o sid= -o pgid= -p $$"))
    lines = out.split()
    assert result.exit_code == 0
    assert lines[0] == str(task_dir)
    assert lines[1] == os.readlink("/proc/self/ns/pid") and lines[2] == os.readlink("/proc/self/ns/mnt")
    assert lines[3] == lines[4]  # its own session, leading its own process group


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
def test_a_double_forked_daemon_dies_at_shutdown(universal, task_dir, cgroups):
    marker = f"{time.time_ns() % 10**9}"
    ex = universal(cgroups=cgroups)
    # One daemon stays in the session; one leaves it with setsid. Both double-fork.
    ex.launch(ExecCommand(argv=sh(f"(sleep 1{marker} &); (setsid sleep 2{marker} &); exec sleep 3{marker}"),
                          task_dir=str(task_dir)))
    wait_for(lambda: len(sleepers(marker)) == 3, what="the three sleeps")
    result = ex.shutdown(grace=0.2)
    assert result.signal == signal.SIGTERM
    wait_for(lambda: not sleepers(marker), what="the daemons to die")


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
def test_daemons_die_when_the_task_exits_by_itself(universal, task_dir, cgroups):
    marker = f"{time.time_ns() % 10**9}"
    result, _, _ = run(universal, task_dir, sh(f"(setsid sleep 4{marker} &); sleep 0.2; exit 7"),
                       options={"cgroups": cgroups})
    assert result.exit_code == 7
    wait_for(lambda: not sleepers(marker), what="the daemon to die with its task")


def test_a_signal_reaches_the_task_through_its_init(universal, task_dir):
    ex = universal()
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir)))
    assert ex.signal(signal.SIGTERM) is True
    result = ex.wait(10)
    assert (result.exit_code, result.signal) == (143, signal.SIGTERM)


# -- cgroups or not ----------------------------------------------------------------------

ALLOC = ("import os, time\nb = bytearray(50 << 20)\nb[::4096] = b'x' * len(b[::4096])\n"
         "os.write(1, b'allocated\\n')\ntime.sleep(60)\n")


@pytest.mark.parametrize("cgroups, source", [(True, "cgroup"), (False, "process tree")])
def test_stats_of_a_task_that_allocates_50_mb(universal, task_dir, cgroups, source):
    ex = universal(cgroups=cgroups)
    ex.launch(ExecCommand(argv=[PY, "-c", ALLOC], task_dir=str(task_dir)))
    log = task_dir / "logs" / f"{task_dir.name}.stdout.0"
    wait_for(lambda: "allocated" in log.read_text(), what="the allocation")
    s = ex.stats()
    assert s.source.startswith(source)
    assert s.memory.rss >= 45 * M
    assert s.pids.current >= 1
    if not cgroups:
        # The monitor (the task's parent) is not counted: only the task itself.
        assert ex.pid not in s.processes and len(s.processes) == 1
        assert s.memory.usage < 100 * M


def test_limits_need_a_cgroup(universal, task_dir):
    ex = universal(cgroups=False)
    with pytest.raises(ConfigError, match="memory: 67108864 needs a cgroup"):
        ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir), resources=Resources(memory="64M")))
    assert not os.listdir(ex.state_root) if os.path.isdir(ex.state_root) else True


def test_limits_apply_through_the_cgroup(universal, task_dir):
    result, _, _ = run(universal, task_dir, [PY, "-c", "b = bytearray(200 << 20)"],
                       resources=Resources(memory="64M", memory_swap="64M"))
    assert result.oom_killed is True and result.signal == signal.SIGKILL


def test_live_update_without_a_cgroup_refuses_limits(universal, task_dir):
    ex = universal(cgroups=False)
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir)))
    with pytest.raises(ConfigError, match="needs a cgroup"):
        ex.update_resources(Resources(pids=10))
    ex.update_resources(Resources())  # nothing to change is fine


def test_isolation_the_host_cannot_give_is_refused(universal, task_dir):
    for isolation, field in ((Isolation(rootfs=str(task_dir)), "isolation.rootfs"),
                             (Isolation(hostname="h"), "isolation.hostname"),
                             (Isolation(mounts=[Mount(source="/tmp", target="/x")]), "isolation.mounts")):
        with pytest.raises(ConfigError) as err:
            universal().launch(ExecCommand(argv=["true"], task_dir=str(task_dir), isolation=isolation))
        assert err.value.field == field


def test_rlimits_are_applied(universal, task_dir):
    result, out, _ = run(universal, task_dir, sh("ulimit -n"), isolation=Isolation(rlimits={"nofile": (123, 456)}))
    assert out.strip() == "123"


# -- oom_score_adj ------------------------------------------------------------------------

def test_oom_score_adj_is_the_requested_value_never_the_callers(universal, task_dir):
    with open("/proc/self/oom_score_adj") as f:
        original = f.read().strip()
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("300")
        _, default, _ = run(universal, task_dir, ["cat", "/proc/self/oom_score_adj"])
        _, chosen, _ = run(universal, task_dir / "b", ["cat", "/proc/self/oom_score_adj"], oom_score_adj=500)
    finally:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(original)
    assert default.strip() == "0" and chosen.strip() == "500"


# -- users ----------------------------------------------------------------------------------

@pytest.fixture
def user_with_groups():
    """A throw-away host user with two supplementary groups (removed afterwards)."""
    name = f"pyx{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "-G", "adm,users", name],
                   check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)  # takes the user's private group along


def test_a_user_switch_sets_exactly_the_users_groups(universal, task_dir, user_with_groups):
    entry = pwd.getpwnam(user_with_groups)
    result, out, _ = run(universal, task_dir, sh('id -u; id -g; id -G; echo "$USER $LOGNAME $HOME"'),
                         user=user_with_groups, cwd="/")  # pytest's tmp is 0700
    uid, gid, groups, names = out.splitlines()
    assert result.exit_code == 0
    assert (int(uid), int(gid)) == (entry.pw_uid, entry.pw_gid)
    import grp
    expected = {entry.pw_gid, grp.getgrnam("adm").gr_gid, grp.getgrnam("users").gr_gid}
    assert {int(g) for g in groups.split()} == expected  # no 0 sneaks in
    assert names == f"{user_with_groups} {user_with_groups} /nonexistent"


def test_nobody_gets_no_root_group(universal, task_dir):
    _, out, _ = run(universal, task_dir, sh("id -u; id -G"), user="nobody", cwd="/")
    uid, groups = out.splitlines()
    assert uid == "65534" and "0" not in groups.split()


# -- the program ------------------------------------------------------------------------------

def test_the_program_is_found_in_local_then_task_dir_then_path(universal, task_dir):
    (task_dir / "local").mkdir()
    for where, text in ((task_dir / "local" / "true", "local"), (task_dir / "true", "task_dir")):
        where.write_text(f"#!/bin/sh\necho {text}\n")
    _, out, _ = run(universal, task_dir, ["true"])
    assert out == "local\n"
    (task_dir / "local" / "true").unlink()
    (task_dir / "logs" / f"{task_dir.name}.stdout.0").unlink()
    _, out, _ = run(universal, task_dir, ["true"])
    assert out == "task_dir\n"


def test_a_script_without_its_execute_bit_gets_one_and_runs(universal, task_dir):
    (task_dir / "local").mkdir()
    script = task_dir / "local" / "job.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    result, out, _ = run(universal, task_dir, ["job.sh"])
    assert (result.exit_code, out) == (0, "ran\n")
    assert os.stat(script).st_mode & 0o111


def test_a_missing_program_fails_launch_and_leaves_nothing(universal, tmp_path):
    ex = universal()
    task_dir = tmp_path / "new"
    with pytest.raises(LaunchError, match="exec no-such-program-pyexec: No such file"):
        ex.launch(ExecCommand(argv=["no-such-program-pyexec"], task_dir=str(task_dir)))
    assert not task_dir.exists()


# -- a caller that is not root ---------------------------------------------------------------

NON_ROOT_SCRIPT = """
import json, os, signal, sys, time
from pyexec import ExecCommand, Resources
from pyexec.errors import ConfigError
from pyexec.executor.universal import UniversalExecutor
task_dir = sys.argv[1]
out = {"uid": os.getuid()}
ex = UniversalExecutor()
ex.launch(ExecCommand(argv=["sh", "-c", "(setsid sleep 1000 &); exec sleep 1000"], task_dir=task_dir))
time.sleep(0.3)
s = ex.stats()
out["source"], out["pids"] = s.source, s.pids.current
out["state_root"] = ex.state_root
r = ex.shutdown(grace=0.2)
out["signal"] = r.signal
try:
    UniversalExecutor().launch(ExecCommand(argv=["true"], task_dir=task_dir, resources=Resources(pids=5)))
except ConfigError as e:
    out["limit_error"] = str(e)
out["state_left"] = os.listdir(ex.state_root) if os.path.isdir(ex.state_root) else []
from pyexec import new_executor
try:
    new_executor("container").launch(ExecCommand(argv=["true"], task_dir=task_dir))
except ConfigError as e:
    out["container_error"] = str(e)
print(json.dumps(out))
"""


def test_a_caller_that_is_not_root_can_launch_wait_and_stop():
    # pytest's tmp directories are root's and 0700: nobody needs its own.
    top = Path(tempfile.mkdtemp(prefix="pyexec-nonroot-", dir="/var/tmp"))
    try:
        top.chmod(0o755)
        task_dir = top / "task"
        task_dir.mkdir()
        os.chown(task_dir, 65534, 65534)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": "/nonexistent",
               "TMPDIR": str(task_dir)}
        proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               sys.executable, "-c", NON_ROOT_SCRIPT, str(task_dir)],
                              env=env, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(top)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["uid"] == 65534
    assert out["source"] == "process tree" and out["pids"] >= 2
    assert out["signal"] == signal.SIGTERM
    assert "pids: 5 needs a cgroup" in out["limit_error"]
    assert out["state_root"].startswith(str(task_dir)) and out["state_left"] == []
    assert out["container_error"].startswith("executor: 'container' needs CAP_SYS_ADMIN")
