"""The container executor against the real kernel: launch, stdio, waiting, signals, shutdown.

Every test launches real tasks (root only: the module is marked needs_root)
and the autouse ``no_leaks`` fixture proves each one left no process, mount,
state directory or cgroup behind (its own test is at the end). Isolation
(namespaces, root file system, capabilities, users, masks) is in
test_container_security.py.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import wait_for
from pyexec import ExecCommand, Isolation, new_executor
from pyexec.errors import LaunchError, PyexecError

pytestmark = pytest.mark.needs_root  # every test launches container tasks

SH = "/bin/sh"


def sh(script: str):
    return [SH, "-c", script]


# -- launch and exit codes ---------------------------------------------------------

@pytest.mark.parametrize("argv, code", [
    (["true"], 0),
    (["false"], 1),
    (sh("exit 3"), 3),
])
def test_exit_codes(run, argv, code):
    result, _, _ = run(argv)
    assert result.exit_code == code
    assert result.signal is None
    assert result.success is (code == 0)
    assert result.finished_at >= result.started_at


def test_launch_returns_pid_and_start_time(executors, task_dir):
    ex = executors()
    before = time.time()
    state = ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir)))
    assert state.pid == ex.pid and state.pid > 0
    assert before <= state.started_at <= time.time()
    assert ex.wait(10).exit_code == 0


@pytest.mark.parametrize("argv, message", [
    (["/nope"], "exec /nope: No such file or directory"),
    (["no-such-program-pyexec"], "exec no-such-program-pyexec: No such file or directory"),
])
def test_missing_program_is_a_launch_error(tmp_path, argv, message):
    task_dir = tmp_path / "fresh"          # launch creates it, and must remove it again
    ex = new_executor("container")
    with pytest.raises(LaunchError) as info:
        ex.launch(ExecCommand(argv=argv, task_dir=str(task_dir)))
    assert message in str(info.value)
    assert info.value.step == "exec"
    assert ex.pid is None
    with pytest.raises(PyexecError):
        ex.wait(0)
    assert not task_dir.exists()
    assert ex.shutdown() is None


def test_non_executable_file_is_permission_denied(task_dir):
    local = task_dir / "local"
    local.mkdir()
    (local / "x").write_text("#!/bin/sh\necho hi\n")
    os.chmod(local / "x", 0o644)
    ex = new_executor("container")
    with pytest.raises(LaunchError) as info:
        ex.launch(ExecCommand(argv=["/local/x"], task_dir=str(task_dir)))
    assert "exec /local/x: Permission denied" in str(info.value)
    assert ex.pid is None
    assert task_dir.is_dir()  # the caller's directory is not ours to remove


def test_failed_launch_can_be_retried_on_the_same_executor(tmp_path):
    ex = new_executor("container")
    with pytest.raises(LaunchError):
        ex.launch(ExecCommand(argv=["/nope"], task_dir=str(tmp_path / "t")))
    ex.launch(ExecCommand(argv=["true"], task_dir=str(tmp_path / "t")))
    assert ex.wait(10).exit_code == 0


def test_second_launch_is_refused(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir)))
    with pytest.raises(PyexecError, match="already launched"):
        ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir)))
    assert ex.wait(10).exit_code == 0


# -- stdio -------------------------------------------------------------------------

def test_stdout_and_stderr_reach_their_files(run):
    result, out, err = run(sh("echo to-out; echo to-err >&2"))
    assert result.exit_code == 0
    assert out == "to-out\n"
    assert err == "to-err\n"


def test_default_logs_land_in_task_dir(task_dir):
    ex = new_executor("container")
    ex.launch(ExecCommand(argv=sh("echo hello; echo oops >&2"), task_dir=str(task_dir), name="web"))
    assert ex.wait(10).exit_code == 0
    assert (task_dir / "logs" / "web.stdout.0").read_text() == "hello\n"
    assert (task_dir / "logs" / "web.stderr.0").read_text() == "oops\n"


def test_stdin_path(run, tmp_path):
    (tmp_path / "in.txt").write_text("from stdin\n")
    result, out, _ = run(["cat"], stdin_path=str(tmp_path / "in.txt"))
    assert (result.exit_code, out) == (0, "from stdin\n")


# -- what the task gets -----------------------------------------------------------------

def test_env_is_honoured(run):
    result, out, _ = run(sh("echo $FOO; echo $PATH"), env={"PATH": "/usr/bin:/bin", "FOO": "bar"})
    assert out.splitlines() == ["bar", "/usr/bin:/bin"]


def test_default_env_is_minimal(run):
    result, out, _ = run(["env"])
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env.pop("PATH") == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env == {"USER": "root", "LOGNAME": "root", "HOME": "/root"}


def test_cwd_is_honoured(run):
    result, out, _ = run(["pwd"], cwd="/tmp")
    assert out.strip() == "/tmp"


def test_missing_cwd_is_a_launch_error(tmp_path):
    ex = new_executor("container")
    with pytest.raises(LaunchError, match="chdir /no/such/dir: No such file or directory"):
        ex.launch(ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"), cwd="/no/such/dir"))


def test_rlimits_are_applied(run):
    result, out, _ = run(sh("ulimit -n; ulimit -H -n"), isolation=Isolation(rlimits={"nofile": (1024, 4096)}))
    assert out.split() == ["1024", "4096"]


def test_custom_state_root_is_used_and_cleaned(executors, task_dir, tmp_path):
    state_root = tmp_path / "state"
    ex = executors(state_root=str(state_root))
    ready = task_dir / "local" / "ready"
    ex.launch(ExecCommand(argv=sh("touch /local/ready; sleep 1000"), task_dir=str(task_dir)))
    wait_for(ready.exists, what="the task to start")
    assert [p.name for p in state_root.iterdir()] == [ex.task_id]
    ex.shutdown(grace=1)
    assert list(state_root.iterdir()) == []


def test_path_search_finds_programs_and_prefers_permission_denied(run, task_dir):
    local = task_dir / "local"
    local.mkdir()
    (local / "hello").write_text("#!/bin/sh\necho hello from $0\n")
    os.chmod(local / "hello", 0o755)
    result, out, _ = run(["hello"], env={"PATH": "/nowhere:/local"})
    assert (result.exit_code, out) == (0, "hello from /local/hello\n")
    os.chmod(local / "hello", 0o644)          # found, but not executable: EACCES beats ENOENT
    with pytest.raises(LaunchError, match="exec hello: Permission denied"):
        run(["hello"], env={"PATH": "/local:/usr/bin"})


def test_an_rlimit_above_the_hard_limit_is_a_launch_error(tmp_path):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap_eff = int(dict(line.split(":\t") for line in open("/proc/self/status").read().splitlines()
                       if ":\t" in line)["CapEff"], 16)
    if hard == resource.RLIM_INFINITY or cap_eff >> 24 & 1:
        pytest.skip("we may raise RLIMIT_NOFILE (CAP_SYS_RESOURCE or no hard limit): nothing to refuse")
    ex = new_executor("container")
    with pytest.raises(LaunchError, match="setrlimit nofile: Operation not permitted"):
        ex.launch(ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"),
                              isolation=Isolation(rlimits={"nofile": (1024, hard + 1)})))
    assert ex.pid is None and not (tmp_path / "t").exists()


def test_the_task_gets_no_file_descriptors_but_stdio(run):
    leaky = os.open("/etc/hostname", os.O_RDONLY)        # inheritable: not O_CLOEXEC
    os.set_inheritable(leaky, True)
    try:
        result, out, _ = run(["ls", "/proc/self/fd"])
    finally:
        os.close(leaky)
    assert out.split() == ["0", "1", "2", "3"]        # 3 is ls's own directory handle


def test_stdio_fds_are_given_to_the_task(run):
    read_end, write_end = os.pipe()
    try:
        result, _, _ = run(sh("echo through-the-pipe; echo err >&2"), stdio_fds=(None, write_end, write_end))
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end) as pipe:
            read_end = -1
            assert pipe.read() == "through-the-pipe\nerr\n"   # EOF: nothing else kept the pipe
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    assert result.exit_code == 0


def test_without_any_namespace_the_task_runs_on_the_host(run):
    result, out, _ = run(sh("hostname; echo $$; test -d /boot -o -d /home && echo host-root"),
                         isolation=Isolation(namespaces=frozenset()))
    hostname, pid, root = out.split()
    assert hostname == os.uname().nodename
    assert int(pid) > 2
    assert root == "host-root"


def test_a_signal_death_of_the_task_is_reported(run):
    for namespaces in (None, {"mnt", "uts"}):     # through the init's status record, and without init
        isolation = Isolation() if namespaces is None else Isolation(namespaces=namespaces)
        result, _, _ = run(sh("kill -TERM $$"), isolation=isolation)
        assert (result.exit_code, result.signal) == (143, signal.SIGTERM)


def test_usage_is_accounted(run):
    result, _, _ = run(sh("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"))
    assert result.exit_code == 0 and result.oom_killed is False
    assert result.usage is not None
    assert result.usage.source.startswith("cgroup")
    assert result.usage.cpu.usage_total_s > 0.01
    assert abs(result.usage.cpu.user_s + result.usage.cpu.system_s - result.usage.cpu.usage_total_s) < 0.05


def test_concurrent_launches_from_many_threads(tmp_path):
    outputs = {}

    def one(i):
        ex = new_executor("container")
        try:
            ex.launch(ExecCommand(argv=sh(f"echo {i} $$"), task_dir=str(tmp_path / f"t{i}"),
                                  stdout_path=str(tmp_path / f"{i}.out")))
            outputs[i] = (ex.wait(30).exit_code, (tmp_path / f"{i}.out").read_text())
        except Exception as exc:  # surfaced by the assertion below
            outputs[i] = exc
        finally:
            ex.shutdown(grace=0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outputs == {i: (0, f"{i} 2\n") for i in range(12)}


# -- waiting, signals, shutdown ----------------------------------------------------------

def launch(executors, task_dir, script, **fields):
    ex = executors()
    ex.launch(ExecCommand(argv=sh(script), task_dir=str(task_dir), **fields))
    return ex


def test_shutdown_stops_a_sleeping_task_with_sigterm(executors, task_dir):
    ex = launch(executors, task_dir, "touch /local/ready; exec sleep 1000")
    wait_for((task_dir / "local" / "ready").exists, what="the task to start")
    start = time.monotonic()
    result = ex.shutdown(signal.SIGTERM, grace=5)
    assert time.monotonic() - start < 1.0
    assert result.signal == signal.SIGTERM
    assert result.exit_code == 128 + signal.SIGTERM
    assert not result.success


def test_shutdown_kills_a_task_that_ignores_sigterm_after_the_grace(executors, task_dir):
    ex = launch(executors, task_dir, 'trap "" TERM; touch /local/ready; while :; do sleep 0.1; done')
    wait_for((task_dir / "local" / "ready").exists, what="the trap to be set")
    start = time.monotonic()
    result = ex.shutdown(signal.SIGTERM, grace=0.5)
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 3
    assert result.signal == signal.SIGKILL
    assert result.exit_code == 128 + signal.SIGKILL


def _sleepers():
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", "1000"]:
            found.append(proc)
    return found


def test_shutdown_leaves_none_of_the_tasks_children(executors, task_dir):
    before = {p.pid for p in _sleepers()}
    ex = launch(executors, task_dir,
                "for i in $(seq 50); do sleep 1000 & done; ls /proc | grep -cE '^[0-9]+$' > /local/n; "
                "mv /local/n /local/ready; wait")
    count = int(wait_for(lambda: (task_dir / "local" / "ready").exists()
                         and (task_dir / "local" / "ready").read_text(), what="50 children").strip())
    assert count >= 52                                   # init, sh, 50 sleeps
    # A forked child shows sh's command line until its exec of sleep: poll.
    wait_for(lambda: len([p for p in _sleepers() if p.pid not in before]) == 50, what="50 sleeps")
    result = ex.shutdown(grace=2)
    assert result.signal == signal.SIGTERM
    left = [p for p in _sleepers() if p.pid not in before]
    assert left == []


def test_without_a_pid_namespace_the_monitor_is_a_subreaper_and_shutdown_kills_all(executors, task_dir):
    before = {p.pid for p in _sleepers()}
    ex = launch(executors, task_dir, "sleep 1000 & sleep 1000 & echo $$ > /local/pids; ls /proc > /local/procs; "
                "mv /local/pids /local/ready; wait",
                isolation=Isolation(namespaces={"mnt", "uts"}))
    ready = task_dir / "local" / "ready"
    wait_for(lambda: ready.exists() and ready.read_text(), what="the task to start")
    shell = int(ready.read_text())                         # a host pid: no pid namespace
    assert psutil.Process(shell).ppid() == ex.pid          # the monitor is the task's parent
    assert psutil.Process(ex.pid).name() == "pyexec-monitor"
    host_pids = {int(p) for p in (task_dir / "local" / "procs").read_text().split() if p.isdigit()}
    assert os.getpid() in host_pids                        # the host's processes are visible
    children = [p for p in _sleepers() if p.pid not in before]
    assert len(children) == 2
    assert all(p.ppid() == shell for p in children)
    result = ex.shutdown(grace=2)
    assert result.signal == signal.SIGTERM
    for child in children:                                 # orphans of the dead shell: gone too
        wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
                 timeout=2, what=f"pid {child.pid} to die")


def test_wait_timeout_then_wait_again(executors, task_dir):
    ex = launch(executors, task_dir, "sleep 0.6")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        ex.wait(timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 0.5
    result = ex.wait(timeout=10)
    assert result.exit_code == 0
    assert ex.wait() is result


def test_every_thread_and_coroutine_gets_the_same_result(executors, task_dir):
    ex = launch(executors, task_dir, "sleep 0.3; exit 5")
    results = []
    lock = threading.Lock()

    def waiter():
        r = ex.wait(timeout=10)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for t in threads:
        t.start()

    async def gather():
        return await asyncio.gather(*(ex.wait_async() for _ in range(20)))

    async_results = asyncio.run(asyncio.wait_for(gather(), 10))
    for t in threads:
        t.join(10)
    everything = results + list(async_results)
    assert len(everything) == 40
    assert all(r is everything[0] for r in everything)
    assert everything[0].exit_code == 5


def test_waiters_do_not_leak_the_pidfd(executors, task_dir):
    fds_before = set(os.listdir("/proc/self/fd"))
    ex = launch(executors, task_dir, "sleep 0.2")

    async def both():
        thread = asyncio.get_running_loop().run_in_executor(None, ex.wait, 10)
        return await asyncio.gather(ex.wait_async(), thread)

    first, second = asyncio.run(both())
    assert first is second
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()


def test_cancelled_async_waits_do_not_pin_the_pidfd(executors, task_dir):
    fds_before = set(os.listdir("/proc/self/fd"))
    ex = launch(executors, task_dir, "sleep 0.3")

    async def give_up():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ex.wait_async(), 0.05)

    asyncio.run(give_up())                      # that loop is closed now
    loop_in_thread = []
    thread = threading.Thread(target=lambda: loop_in_thread.append(asyncio.run(ex.wait_async())))
    thread.start()
    result = ex.wait(timeout=5)
    thread.join(5)
    assert loop_in_thread == [result]
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()


def test_signal_reaches_the_task(executors, task_dir):
    ex = launch(executors, task_dir, "trap 'echo got > /local/sig; exit 7' USR1; touch /local/ready; "
                "while :; do sleep 0.05; done")
    wait_for((task_dir / "local" / "ready").exists, what="the trap to be set")
    assert ex.signal(signal.SIGUSR1) is True
    result = ex.wait(timeout=5)
    assert result.exit_code == 7 and result.signal is None
    assert (task_dir / "local" / "sig").read_text() == "got\n"


def test_signal_after_exit_returns_false(executors, task_dir):
    ex = launch(executors, task_dir, "exit 0")
    ex.wait(10)
    assert ex.signal(signal.SIGTERM) is False


def test_signal_to_an_exited_but_unreaped_task_returns_false(executors, task_dir):
    ex = launch(executors, task_dir, "exit 0")
    wait_for(lambda: psutil.Process(ex.pid).status() == psutil.STATUS_ZOMBIE, what="the task to exit")
    assert ex.signal(signal.SIGTERM) is False
    assert ex.wait(10).exit_code == 0


def test_shutdown_is_idempotent_and_fine_after_exit(executors, task_dir):
    ex = launch(executors, task_dir, "exit 4")
    result = ex.wait(10)
    assert ex.shutdown() is result
    assert ex.shutdown(grace=0) is result

    ex2 = launch(executors, task_dir, "exec sleep 1000")
    first = ex2.shutdown(grace=2)
    assert first.signal == signal.SIGTERM
    assert ex2.shutdown() is first


def test_shutdown_without_grace_kills_at_once(executors, task_dir):
    ex = launch(executors, task_dir, "exec sleep 1000")
    start = time.monotonic()
    result = ex.shutdown(grace=0)
    assert time.monotonic() - start < 1.0
    assert (result.signal, result.exit_code) == (signal.SIGKILL, 137)


def test_context_manager_shuts_down(task_dir):
    with new_executor("container") as ex:
        ex.launch(ExecCommand(argv=["sleep", "1000"], task_dir=str(task_dir)))
        pid = ex.pid
        assert psutil.pid_exists(pid)
    assert ex.wait(0).signal == signal.SIGTERM


def test_shutdown_before_launch_returns_none():
    assert new_executor("container").shutdown() is None


# -- the leak check itself ------------------------------------------------------------------

LEAKY_TESTS = '''
import os, subprocess, sys
KEEP = []
def test_clean():
    pass
def test_leaks_a_child():
    KEEP.append(subprocess.Popen(["sleep", "101"]))
def test_leaks_a_foreign_pid_namespace():
    subprocess.run(["sh", "-c", "unshare --pid --fork sleep 102 >/dev/null 2>&1 &"], check=True)
    import time; time.sleep(0.2)
def test_leaks_a_mount():
    subprocess.run(["mount", "-t", "tmpfs", "leaktest", os.environ["LEAK_MNT"]], check=True)
def test_leaks_a_state_dir():
    os.makedirs(os.path.join("/run/pyexec", os.environ["LEAK_NAME"]))
def test_leaks_a_cgroup():
    os.mkdir(os.path.join("/sys/fs/cgroup/pids", os.environ["LEAK_NAME"]))
'''


def test_the_leak_check_catches_every_kind_of_leak(tmp_path):
    import shutil
    import subprocess
    import sys
    import uuid
    if not os.path.isdir("/sys/fs/cgroup/pids"):
        pytest.skip("no cgroup v1 pids hierarchy to create a cgroup in")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) from util-linux")
    inner = tmp_path / "inner"
    inner.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), inner / "conftest.py")
    # conftest's machinery, found next to it as in tests/.
    shutil.copytree(Path(__file__).with_name("support"), inner / "support",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (inner / "test_leaky.py").write_text(LEAKY_TESTS)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    name = f"pyexec-leaktest-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, LEAK_MNT=str(mnt), LEAK_NAME=name, PYEXEC_TEST_LEAK_GRACE="0.1",
               PYTHONPATH=str(Path(__file__).parents[1]))
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
                              cwd=inner, env=env, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(os.path.join("/run/pyexec", name), ignore_errors=True)
        if os.path.isdir(os.path.join("/sys/fs/cgroup/pids", name)):
            os.rmdir(os.path.join("/sys/fs/cgroup/pids", name))
    out = proc.stdout
    assert "5 errors" in out and "6 passed" in out, out
    assert "descendant process pid" in out and "sleep 101" in out
    assert "process in another pid namespace" in out and "sleep 102" in out
    assert "mount: " in out and str(mnt) in out
    assert f"state directory: /run/pyexec/{name}" in out
    assert f"cgroup: /sys/fs/cgroup/pids/{name}" in out
    assert "test_clean" not in out.split("short test summary")[-1]
    wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                          if p.info["cmdline"] in (["sleep", "101"], ["sleep", "102"])],
             timeout=2, what="the leak check to kill what leaked")
