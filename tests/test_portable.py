"""The portable executor forced on Linux, against real processes.

Launch, stdio, exit codes and signals, shutdown of tasks that ignore SIGTERM
or leave daemons in their session, process-tree stats, refused configuration,
the user switch and oom_score_adj. The autouse ``no_leaks`` fixture checks our
own descendants; daemons reparented to init are not our descendants, so the
tests that make them check by pid that they died.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import List

import psutil
import pytest

from conftest import wait_for
from pyexec import ExecCommand, Isolation, Mount, Resources, new_executor
from pyexec.errors import ConfigError, LaunchError, PyexecError, TaskExitedError
from pyexec.executor.portable import PortableExecutor
from pyexec.users import resolve_user

MB = 1 << 20


def sh(script: str) -> List[str]:
    return ["/bin/sh", "-c", script]


@pytest.fixture
def portable():
    """A factory of portable executors, all shut down after the test."""
    made: List[PortableExecutor] = []

    def make() -> PortableExecutor:
        ex = new_executor("portable")
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(grace=0)


@pytest.fixture
def run(portable, task_dir):
    """``run(argv, **fields)`` -> (ExitResult, stdout, stderr) from the default log files."""
    def _run(argv, timeout: float = 5.0, **fields):
        fields.setdefault("task_dir", str(task_dir))
        cmd = ExecCommand(argv=list(argv), **fields)
        ex = portable()
        ex.launch(cmd)
        result = ex.wait(timeout)
        logs = Path(cmd.task_dir) / "logs"
        return (result, (logs / f"{cmd.name}.stdout.0").read_text(),
                (logs / f"{cmd.name}.stderr.0").read_text())
    return _run


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def session_of(sid: int) -> List[int]:
    out = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid:
                out.append(pid)
        except OSError:
            pass
    return out


# -- launch, stdio, exit codes ------------------------------------------------------

def test_echo_output_in_the_default_log(run, task_dir):
    result, out, err = run(["echo", "hello"], name="greet")
    assert (result.exit_code, result.signal, result.success) == (0, None, True)
    assert out == "hello\n" and err == ""
    assert (task_dir / "logs" / "greet.stdout.0").exists()
    assert result.usage is not None and result.usage.source == "rusage"


def test_exit_code_and_cwd(run, task_dir):
    result, out, _ = run(sh("pwd; exit 3"))
    assert (result.exit_code, result.signal) == (3, None)
    assert out == f"{task_dir}\n"  # cwd defaults to the task directory
    assert (task_dir / "local").is_dir()


def test_cancelled_wait_async_leaves_the_task_alone(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=["sleep", "30"], task_dir=str(task_dir)))

    async def give_up():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ex.wait_async(), 0.05)

    asyncio.run(give_up())
    assert ex.shutdown(grace=1).signal == signal.SIGTERM


# -- shutdown ------------------------------------------------------------------------

def test_shutdown_kills_a_task_ignoring_sigterm(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=sh("trap '' TERM; echo ready; sleep 30; true"), task_dir=str(task_dir)))
    wait_for(lambda: "ready" in (task_dir / "logs" / "task.stdout.0").read_text(), what="the trap")
    start = time.monotonic()
    result = ex.shutdown(grace=0.3)
    assert 0.3 <= time.monotonic() - start < 2.0
    assert (result.exit_code, result.signal) == (137, signal.SIGKILL)
    assert not any(alive(p) for p in session_of(ex.pid))  # zombies wait for init to reap them


def orphans(sid: int) -> List[int]:
    """Live members of session ``sid`` whose parent is outside it: double-forked daemons."""
    members = set(session_of(sid))
    out = []
    for pid in members:
        try:
            if pid != sid and psutil.Process(pid).ppid() not in members and alive(pid):
                out.append(pid)
        except psutil.Error:
            pass
    return out


def test_daemon_left_in_the_session_dies_at_shutdown(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=sh("( sleep 30 & ) ; sleep 30"), task_dir=str(task_dir)))
    daemons = wait_for(lambda: orphans(ex.pid), what="the daemon to be reparented out of the tree")
    members = session_of(ex.pid)
    ex.shutdown(grace=0.5)
    assert not any(alive(p) for p in members + daemons)


def test_daemon_dies_when_the_main_process_exits(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=sh("( sleep 30 & ) ; sleep 0.3"), task_dir=str(task_dir)))
    daemons = wait_for(lambda: orphans(ex.pid), what="the daemon to be reparented out of the tree")
    assert ex.wait(5).exit_code == 0
    assert not any(alive(p) for p in daemons)


# The task waits until its child has really left the session (field 6 of
# /proc/<pid>/stat is the session id) before it exits.
ESCAPE = """setsid sleep 30 & pid=$!; echo $pid
while read -r _ _ _ _ _ sid _ < /proc/$pid/stat; [ "$sid" != "$pid" ]; do sleep 0.01; done"""


def test_setsid_escapes_the_portable_executor(portable, task_dir):
    """The documented limit: a process that leaves the session before anyone
    saw it in the tree survives (only a cgroup would catch it)."""
    ex = portable()
    ex.launch(ExecCommand(argv=sh(ESCAPE), task_dir=str(task_dir)))
    result = ex.wait(5)
    escaped = int((task_dir / "logs" / "task.stdout.0").read_text())
    try:
        assert result.exit_code == 0
        assert alive(escaped) and os.getsid(escaped) == escaped
    finally:
        os.kill(escaped, signal.SIGKILL)
        wait_for(lambda: not alive(escaped), what="the escaped sleep to die")


# -- stats ------------------------------------------------------------------------------

ALLOCATE = "import time; b = b'x' * (50 << 20); print('ready', flush=True); time.sleep(30)"


def test_stats_of_a_task_holding_50_mb(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=[sys.executable, "-c", ALLOCATE], task_dir=str(task_dir)))
    wait_for(lambda: "ready" in (task_dir / "logs" / "task.stdout.0").read_text(), what="the allocation")
    usage = ex.stats()
    assert usage.source == "process tree"
    assert usage.memory.rss >= 45 * MB
    assert usage.pids.current >= 1 and ex.pid in usage.processes


def test_stats_stream_stops_after_the_exit(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=sh("sleep 0.5"), task_dir=str(task_dir)))
    samples = list(ex.stats_stream(0.1))
    assert len(samples) >= 2
    assert samples[0].source == "process tree"
    assert samples[-1] is ex.wait(0).usage  # the final one: the reap's rusage
    assert ex.stats() is samples[-1]


# -- refused configuration and failed launches --------------------------------------------

def test_missing_program_is_a_launch_error_leaving_nothing(tmp_path):
    task_dir = tmp_path / "fresh"
    ex = new_executor("portable")
    with pytest.raises(LaunchError) as info:
        ex.launch(ExecCommand(argv=["no-such-program-pyexec"], task_dir=str(task_dir)))
    assert str(info.value) == "exec no-such-program-pyexec: No such file or directory"
    assert ex.pid is None and not task_dir.exists()
    with pytest.raises(PyexecError):
        ex.wait(0)


def test_exec_failure_in_the_child_is_a_launch_error(tmp_path):
    task_dir = tmp_path / "fresh"
    host_file = tmp_path / "plain"
    host_file.write_text("#!/bin/sh\n")
    os.chmod(host_file, 0o644)  # outside the task dir: not repaired, so exec fails
    ex = new_executor("portable")
    with pytest.raises(LaunchError) as info:
        ex.launch(ExecCommand(argv=[str(host_file)], task_dir=str(task_dir)))
    assert info.value.step == "exec" and "Permission denied" in str(info.value)
    assert ex.pid is None and not task_dir.exists()


def test_missing_cwd_is_a_launch_error(tmp_path):
    task_dir = tmp_path / "fresh"
    ex = new_executor("portable")
    with pytest.raises(LaunchError) as info:
        ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir), cwd="/no/such/dir"))
    assert info.value.step == "chdir" and info.value.path == "/no/such/dir"
    assert ex.pid is None and not task_dir.exists()


@pytest.mark.parametrize("field, value", [
    ("memory", "64M"), ("cpus", 0.5), ("pids", 10), ("cpuset_cpus", "0"), ("io_weight", 100),
])
def test_resources_are_refused_before_anything_exists(tmp_path, field, value):
    task_dir = tmp_path / "fresh"
    with pytest.raises(ConfigError) as info:
        new_executor("portable").launch(ExecCommand(argv=["true"], task_dir=str(task_dir),
                                                    resources=Resources(**{field: value})))
    assert info.value.field == field and "cgroups" in info.value.reason
    assert not task_dir.exists()


@pytest.mark.parametrize("isolation, field", [
    (lambda p: Isolation(rootfs=str(p)), "isolation.rootfs"),
    (lambda p: Isolation(mounts=(Mount(str(p), "/data"),)), "isolation.mounts"),
    (lambda p: Isolation(hostname="box"), "isolation.hostname"),
])
def test_container_isolation_is_refused(tmp_path, isolation, field):
    task_dir = tmp_path / "fresh"
    with pytest.raises(ConfigError) as info:
        new_executor("portable").launch(ExecCommand(argv=["true"], task_dir=str(task_dir),
                                                    isolation=isolation(tmp_path)))
    assert info.value.field == field and info.value.reason.startswith("needs the container executor")
    assert not task_dir.exists()


def test_update_resources(portable, task_dir):
    ex = portable()
    ex.launch(ExecCommand(argv=["sleep", "30"], task_dir=str(task_dir)))
    with pytest.raises(ConfigError):
        ex.update_resources(Resources(memory="64M"))
    ex.update_resources(Resources())  # nothing to change
    ex.shutdown(grace=0)
    with pytest.raises(TaskExitedError):
        ex.update_resources(Resources())


def test_new_executor_kinds():
    assert new_executor().kind == "container"  # the default on Linux
    assert isinstance(new_executor("portable"), PortableExecutor)
    with pytest.raises(ConfigError, match=r"\(container, universal, portable\)"):
        new_executor("bogus")


# -- credentials and oom_score_adj -----------------------------------------------------------

@pytest.mark.needs_root(reason="switching users needs root")
def test_user_nobody(run):
    result, out, err = run(sh('id -u; id -G; echo "$USER $HOME"'), user="nobody")
    nobody = resolve_user("nobody")
    assert result.exit_code == 0, err
    uid, groups, env = out.splitlines()
    assert int(uid) == 65534
    assert sorted(map(int, groups.split())) == sorted(nobody.groups) and "0" not in groups.split()
    assert env == f"nobody {nobody.home}"


def test_oom_score_adj(run):
    result, out, _ = run(sh("sleep 0.2; cat /proc/self/oom_score_adj"), oom_score_adj=500)
    assert result.exit_code == 0 and out == "500\n"


# -- the Windows module on Linux ------------------------------------------------------------

def test_windows_module_imports_here_and_refuses_politely():
    from pyexec.executor import winjob
    assert winjob.AVAILABLE is False
    with pytest.raises(NotImplementedError):
        winjob.JobObject()
    with pytest.raises(ConfigError, match="cannot be sent on Windows"):
        winjob.send_signal(None, signal.SIGUSR1)  # refused before the Popen is touched
