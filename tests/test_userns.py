"""User namespaces on the real kernel: root in the task is an unprivileged
host uid; the parent writes the id maps before the child goes on."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from conftest import wait_for
from pyexec import ExecCommand, Isolation, Mount

pytestmark = pytest.mark.needs_root  # container tasks in user namespaces (the parent writes their id maps)

USERNS = frozenset({"pid", "mnt", "uts", "ipc", "net", "user"})


@pytest.fixture
def tmp_path():
    """pytest's own tmp directories are root's and 0700: the task's root, an
    unprivileged host uid, could not reach a bind source in them (a real
    constraint: the parents of task_dir and of mounts must be searchable)."""
    top = Path(tempfile.mkdtemp(prefix="pyexec-userns-", dir="/var/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


@pytest.fixture
def task_dir(tmp_path):
    path = tmp_path / "task"
    path.mkdir()
    return path


def sh(script: str):
    return ["/bin/sh", "-c", script]


def test_root_in_the_task_is_the_mapped_host_uid(run, task_dir, spawn_mode):
    result, out, err = run(sh("id -u; id -g; cat /proc/self/uid_map; touch /local/made"),
                           isolation=Isolation(namespaces=USERNS))
    assert result.exit_code == 0, err
    uid, gid, mapping = out.splitlines()[:3]
    assert (uid, gid) == ("0", "0")
    assert mapping.split() == ["0", "100000", "65536"]
    made = os.stat(task_dir / "local" / "made")
    assert (made.st_uid, made.st_gid) == (100000, 100000)  # owned by the mapped host uid


def test_given_maps_are_used(run, task_dir, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 200000, 300000)
    iso = Isolation(namespaces=USERNS, uid_map=[(0, 200000, 2000)], gid_map=[(0, 300000, 2000)],
                    mounts=[Mount(source=str(shared), target="/shared", readonly=False)])
    result, out, err = run(sh("touch /shared/a && ls -n /shared/a"), isolation=iso)
    assert result.exit_code == 0, err
    st = os.stat(shared / "a")
    assert (st.st_uid, st.st_gid) == (200000, 300000)
    assert out.split()[2:4] == ["0", "0"]  # root inside


def test_a_non_root_user_inside_maps_into_the_range(run, task_dir):
    result, out, _ = run(sh("id -u; touch /tmp/x; cat /proc/self/status | grep ^Uid"), user="nobody",
                         isolation=Isolation(namespaces=USERNS))
    assert out.splitlines()[0] == "65534"


def test_root_of_a_user_namespace_cannot_read_what_host_root_keeps(run, task_dir, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host only\n")
    secret.chmod(0o600)
    iso = Isolation(namespaces=USERNS, mounts=[Mount(source=str(secret), target="/secret")])
    result, out, err = run(sh("cat /secret; echo rc=$?; kill -0 1 && echo sees-own-init"), isolation=iso)
    assert "host only" not in out and "rc=1" in out
    assert "sees-own-init" in out


def test_the_monitor_still_forwards_signals_in_a_user_namespace(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=sh("trap 'exit 42' TERM; touch /local/ready; while :; do sleep 0.05; done"),
                          task_dir=str(task_dir), isolation=Isolation(namespaces=USERNS)))
    wait_for(lambda: (task_dir / "local" / "ready").exists(), what="the trap")
    result = ex.shutdown(signal.SIGTERM, grace=5)
    assert (result.exit_code, result.signal) == (42, None)


def test_logs_and_exit_record_are_written_by_the_mapped_monitor(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=sh("echo out; echo err >&2; exit 3"), task_dir=str(task_dir),
                          isolation=Isolation(namespaces=USERNS)))
    assert ex.wait(10).exit_code == 3
    logs = task_dir / "logs"
    assert (logs / f"{task_dir.name}.stdout.0").read_text() == "out\n"
    assert (logs / f"{task_dir.name}.stderr.0").read_text() == "err\n"


def test_the_callers_dumpable_flag_stays_as_it_was(executors, task_dir):
    # The child changes uid in the user namespace (so does the task, to
    # nobody) while it runs in our memory, whose dumpable flag the kernel then
    # clears: the init puts our value back, whichever it was.
    import prctl
    for dumpable in (False, True):
        prctl.set_dumpable(dumpable)
        try:
            for user in (None, "nobody"):
                ex = executors("container")
                ex.launch(ExecCommand(argv=["/bin/true"], task_dir=str(task_dir), user=user,
                                      isolation=Isolation(namespaces=USERNS)))
                assert ex.wait(timeout=10).exit_code == 0
                assert prctl.get_dumpable() == dumpable, (dumpable, user)
        finally:
            prctl.set_dumpable(True)
