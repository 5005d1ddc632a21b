"""exec into a running task, on the real kernel: the command is one more
process of the task (namespaces, root, cgroup, user, capabilities,
no_new_privs, seccomp), its output is capped, a timeout kills it and all it
started but not the task, a reattached executor execs too."""
from __future__ import annotations

import gc
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from pyexec import ExecCommand, ExecResult, Isolation, new_executor, reattach
from pyexec.errors import ConfigError, LaunchError, PyexecError, TaskExitedError
from pyexec.executor.execmon import abandoned_count

pytestmark = pytest.mark.needs_root(reason="container tasks and cgroups need root")

NAMESPACES = ("mnt", "pid", "net", "uts", "ipc")


def sh(script: str):
    return ["/bin/sh", "-c", script]


def task_process(monitor_pid: int) -> int:
    """The host pid of the task's main process: the monitor's one child."""
    def child():
        with open(f"/proc/{monitor_pid}/task/{monitor_pid}/children") as f:
            pids = f.read().split()
        return int(pids[0]) if pids else None
    return wait_for(child, what="the task's process")


def status_fields(text: str, names) -> dict:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: fields.get(name, "").strip() for name in names}


def proc_status(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return f.read()


@pytest.fixture
def sleeper(executors, task_dir):
    """A running container task (``sleep 60`` as nobody), and its host pid."""
    def start(**fields):
        ex = executors()
        fields.setdefault("user", "nobody")
        fields.setdefault("isolation", Isolation(hostname="exec-test"))
        state = ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir), **fields))
        return ex, task_process(state.pid)
    return start


def still_running(ex) -> bool:
    try:
        ex.wait(timeout=0)
    except TimeoutError:
        return True
    return False


# -- the command is one more process of the task ------------------------------

def test_exec_joins_the_tasks_namespaces_and_root(sleeper):
    ex, pid = sleeper()
    assert ex.exec(["hostname"]) == ExecResult(0, None, b"exec-test\n", False)
    assert b"pyexec-monitor" in ex.exec(["head", "-1", "/proc/1/status"]).output  # Name: of pid 1
    links = ex.exec(["readlink"] + [f"/proc/self/ns/{ns}" for ns in NAMESPACES]).output.decode().split()
    assert links == [os.readlink(f"/proc/{pid}/ns/{ns}") for ns in NAMESPACES]
    assert links != [os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES]
    root = set(ex.exec(["ls", "/"]).output.decode().split())
    assert "local" in root                       # task_dir/local, the task's own mount
    assert not root & {"run", "var", "home"}      # host-only paths are not there
    # Same pid namespace: the task's sleep is visible (and the exec's ps).
    processes = ex.exec(["ps", "-e", "-o", "args="]).output.decode()
    assert "sleep 60" in processes


def test_exec_has_the_tasks_cgroup_user_caps_and_seccomp(sleeper):
    ex, pid = sleeper()
    result = ex.exec(sh("cat /proc/self/cgroup; echo --; id -u; echo --; cat /proc/self/status"))
    assert result.exit_code == 0, result
    cgroup, uid, status = result.output.decode().split("--\n")
    with open(f"/proc/{pid}/cgroup") as f:
        assert cgroup == f.read()
    assert "pyexec" in cgroup
    assert uid.strip() == "65534"
    names = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
             "Seccomp_filters")
    mine, task = status_fields(status, names), status_fields(proc_status(pid), names)
    assert mine == task
    assert mine["NoNewPrivs"] == "1"
    assert mine["CapEff"] == "0000000000000000"   # nobody gets no capabilities by default


def test_seccomp_filter_of_the_task_applies(sleeper):
    ex, pid = sleeper(isolation=Isolation(seccomp="default"))
    task = status_fields(proc_status(pid), ["Seccomp"])["Seccomp"]
    result = ex.exec(sh("grep '^Seccomp:' /proc/self/status"))
    assert result.output.decode().split() == ["Seccomp:", task]


def test_root_task_gets_its_capabilities(sleeper):
    ex, pid = sleeper(user=None, isolation=Isolation(capabilities=["NET_BIND_SERVICE", "KILL"]))
    out = ex.exec(["cat", "/proc/self/status"]).output.decode()
    names = ("Uid", "CapEff", "CapPrm", "CapBnd")
    assert status_fields(out, names) == status_fields(proc_status(pid), names)


# -- overrides, results, output ----------------------------------------------------

def test_env_cwd_and_user_default_to_the_tasks_and_can_be_overridden(sleeper):
    ex, _ = sleeper(env={"PATH": "/usr/bin:/bin", "TASKVAR": "task"}, cwd="/tmp")
    script = sh('echo "$TASKVAR|$OTHER|$USER|$HOME"; pwd; id -u')
    assert ex.exec(script).output.decode().splitlines() == ["task||nobody|/nonexistent", "/tmp", "65534"]
    out = ex.exec(script, env={"PATH": "/usr/bin:/bin", "OTHER": "x"}, cwd="/local", user="root")
    assert out.output.decode().splitlines() == ["|x|root|/root", "/local", "0"]
    assert ex.exec(["id", "-u"], user="1234:1234").output == b"1234\n"
    with pytest.raises(ConfigError):
        ex.exec(["true"], user="no-such-user")
    with pytest.raises(ConfigError):
        ex.exec(["true"], cwd="relative")


def test_user_override_gets_that_users_capabilities(sleeper):
    ex, _ = sleeper()
    status = status_fields(ex.exec(["cat", "/proc/self/status"], user="root").output.decode(), ["CapEff"])
    assert int(status["CapEff"], 16) != 0    # root in a container: Docker's default set
    with pytest.raises(LaunchError) as info:
        ex.exec(["true"], cwd="/does/not/exist")
    assert info.value.step == "chdir"


def test_exit_codes_and_signals(sleeper):
    ex, _ = sleeper()
    assert ex.exec(sh("echo out; echo err >&2; exit 7")) == ExecResult(7, None, b"out\nerr\n", False)
    killed = ex.exec(sh("kill -TERM $$"))
    assert (killed.exit_code, killed.signal) == (143, 15)
    assert not killed.success and ex.exec(["true"]).success


def test_output_is_capped_and_the_rest_dropped(sleeper):
    ex, _ = sleeper()
    started = time.monotonic()
    result = ex.exec(["head", "-c", str(200 * 1024), "/dev/zero"], output_limit=64 * 1024)
    assert result.exit_code == 0 and result.truncated
    marker = b"\n[pyexec: output truncated, %d bytes dropped]\n" % (136 * 1024)
    assert result.output == b"\0" * (64 * 1024) + marker
    assert time.monotonic() - started < 3
    small = ex.exec(["echo", "hi"], output_limit=64 * 1024)
    assert (small.output, small.truncated) == (b"hi\n", False)


def test_timeout_kills_the_command_and_its_children_not_the_task(sleeper):
    ex, pid = sleeper()
    for script in ("sleep 100 & sleep 100",                   # a child in the command's group
                   "setsid sleep 101 & sleep 100",            # one in a session of its own
                   "(setsid sh -c 'sleep 102 &' &); sleep 100"):   # a double-forked daemon
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ex.exec(sh(script), timeout=0.5)
        assert time.monotonic() - started < 1.5
        left = ex.exec(["ps", "-e", "-o", "args="]).output.decode()
        assert not re.search(r"sleep 10[0-2]", left), left
        assert still_running(ex)
        assert os.path.exists(f"/proc/{pid}")


def test_task_without_a_pid_namespace(sleeper):
    ex, pid = sleeper(isolation=Isolation(namespaces=frozenset({"mnt", "uts"}), hostname="no-pidns"))
    out = ex.exec(sh("hostname; readlink /proc/self/ns/mnt /proc/self/ns/pid")).output.decode().split()
    assert out == ["no-pidns", os.readlink(f"/proc/{pid}/ns/mnt"), os.readlink("/proc/self/ns/pid")]
    with pytest.raises(TimeoutError):
        ex.exec(sh("(setsid sh -c 'sleep 103 &' &); sleep 100"), timeout=0.5)
    assert "sleep 103" not in ex.exec(["ps", "-e", "-o", "args="]).output.decode()
    assert still_running(ex)


def test_missing_program_is_a_launch_error(sleeper):
    ex, _ = sleeper()
    with pytest.raises(LaunchError) as info:
        ex.exec(["/no/such/program"])
    assert info.value.step == "exec"
    with pytest.raises(LaunchError):
        ex.exec(["no-such-program-anywhere"])
    assert still_running(ex)
    assert ex.exec(["true"]).success


def test_exec_after_the_task_exited(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir)))
    ex.wait(10)
    with pytest.raises(TaskExitedError, match="cannot exec into it"):
        ex.exec(["true"])
    with pytest.raises(TaskExitedError):
        ex.exec_streaming(["true"])


def test_exec_before_launch_and_unsupported_kind(task_dir):
    with pytest.raises(PyexecError):
        new_executor("container").exec(["true"])
    portable = new_executor("portable")
    portable.launch(ExecCommand(argv=["sleep", "30"], task_dir=str(task_dir)))
    try:
        with pytest.raises(PyexecError, match="cannot exec"):
            portable.exec(["true"])
    finally:
        portable.shutdown(grace=0)


def test_shutdown_kills_a_running_exec(sleeper):
    ex, _ = sleeper()
    proc = ex.exec_streaming(["sleep", "100"], stdin=False)
    ex.shutdown(grace=0)
    result = proc.wait(5)
    assert result.signal is not None or result.exit_code != 0
    proc.close()


def test_concurrent_execs(sleeper):
    ex, _ = sleeper()
    results = {}

    def one(n):
        results[n] = ex.exec(sh(f"sleep 0.2; echo {n}"), timeout=10)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(5)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: r.output for n, r in results.items()} == {n: f"{n}\n".encode() for n in range(5)}
    assert time.monotonic() - started < 2    # in parallel, not one after the other


# -- streaming -------------------------------------------------------------------

def test_streaming_pipes(sleeper):
    ex, _ = sleeper()
    with ex.exec_streaming(["cat"]) as proc:
        assert proc.pid > 0
        for line in (b"one\n", b"two\n"):
            proc.stdin.write(line)
            assert proc.stdout.readline() == line
        proc.stdin.close()
        assert proc.stdout.read() == b""
        assert proc.wait(5) == ExecResult(0, None, b"", False)


def test_streaming_kill_and_context_manager(sleeper):
    ex, _ = sleeper()
    proc = ex.exec_streaming(sh("echo started; exec sleep 100"), stdin=False)
    assert proc.stdin is None
    assert proc.stdout.readline() == b"started\n"
    with pytest.raises(TimeoutError):
        proc.wait(0.1)
    proc.kill()
    assert proc.wait(5).signal == 9
    proc.close()
    with ex.exec_streaming(["sleep", "100"]) as running:
        pass
    assert running.result is not None and running.result.signal == 9
    assert ex.exec(["ps", "-e", "-o", "args="]).output.decode().count("sleep 100") == 0


def test_streaming_tty(sleeper):
    ex, _ = sleeper()
    with ex.exec_streaming(sh("tty; test -t 0 && test -t 1 && echo is-a-tty; ps -o tty= -p $$"),
                           tty=True) as proc:
        out = proc.stdout.read()
        assert proc.wait(5).exit_code == 0, out
    lines = out.decode().replace("\r", "").split()
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), out   # a pty of the task's own devpts
    assert lines[1] == "is-a-tty"
    assert lines[2].startswith("pts/")                      # its controlling terminal


def test_streaming_tty_interactive_shell(sleeper):
    ex, _ = sleeper()
    with ex.exec_streaming(["sh"], tty=True) as proc:
        proc.stdin.write(b"echo $((6*7)); exit 3\n")
        out = proc.stdout.read()
        assert proc.wait(5).exit_code == 3
    assert b"42" in out


# -- other executors and reattach ------------------------------------------------------

@pytest.fixture
def open_task_dir():
    """A task directory whose parents an unprivileged task user can search."""
    top = Path(tempfile.mkdtemp(prefix="pyexec-exec-", dir="/var/tmp"))
    top.chmod(0o755)
    try:
        yield top / "task"
    finally:
        shutil.rmtree(top)


def test_universal_executor_exec(open_task_dir):
    task_dir = open_task_dir
    task_dir.mkdir()
    task_dir.chmod(0o755)
    ex = new_executor("universal")
    state = ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir), user="nobody"))
    try:
        pid = task_process(state.pid)
        result = ex.exec(sh("cat /proc/self/cgroup; echo --; id -u; pwd; readlink /proc/self/ns/mnt"))
        cgroup, rest = result.output.decode().split("--\n")
        with open(f"/proc/{pid}/cgroup") as f:
            assert cgroup == f.read()
        uid, cwd, mnt = rest.split()
        assert (uid, cwd, mnt) == ("65534", str(task_dir), os.readlink("/proc/self/ns/mnt"))
        with pytest.raises(TimeoutError):
            ex.exec(sh("sleep 100 & sleep 100"), timeout=0.3)
        assert still_running(ex)
        with pytest.raises(LaunchError):
            ex.exec(["no-such-program-anywhere"])
    finally:
        ex.shutdown(grace=0)


def test_universal_executor_without_a_cgroup(task_dir):
    ex = new_executor("universal", cgroups=False)
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir)))
    try:
        result = ex.exec(sh("pwd; cat /proc/self/cgroup"))
        with open("/proc/self/cgroup") as f:
            assert result.output.decode() == f"{task_dir}\n" + f.read()   # ours: there is no task cgroup
    finally:
        ex.shutdown(grace=0)


def test_a_dropped_streaming_exec_is_killed_and_reaped(sleeper):
    ex, _ = sleeper()
    proc = ex.exec_streaming(["sleep", "100"])
    with pytest.warns(ResourceWarning):
        del proc
        gc.collect()
    wait_for(lambda: "sleep 100" not in ex.exec(["ps", "-e", "-o", "args="]).output.decode(),
             what="the dropped exec to be killed")
    # Each exec reaps the monitors of dropped ones that have exited.
    wait_for(lambda: ex.exec(["true"]) and abandoned_count() == 0, what="the dropped exec's reap")


def test_reattached_executor_execs(executors, task_dir):
    ex = executors()
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir), user="nobody",
                          isolation=Isolation(hostname="again")))
    other = reattach(ex.handle())
    assert other._exec_record is None   # rebuilt from task.json, not inherited
    assert other.exec(["true"]).success
    assert other.exec(sh("hostname; id -u")).output == b"again\n65534\n"
    assert other.exec(["id", "-u"], user="root").output == b"0\n"
    other.shutdown(grace=0)
    with pytest.raises(TaskExitedError):
        other.exec(["true"])


USERNS = frozenset({"pid", "mnt", "uts", "ipc", "net", "user"})


def test_exec_into_a_user_namespace(executors, open_task_dir):
    ex = executors()
    state = ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(open_task_dir),
                                  isolation=Isolation(namespaces=USERNS)))
    pid = task_process(state.pid)
    out = ex.exec(sh("id -u; readlink /proc/self/ns/user; touch /local/by-exec")).output.decode().split()
    assert out == ["0", os.readlink(f"/proc/{pid}/ns/user")]
    made = os.stat(open_task_dir / "local" / "by-exec")
    assert made.st_uid == os.stat(f"/proc/{pid}").st_uid != 0   # the mapped host uid, not root
    assert ex.exec(["id", "-u"], user="nobody").output == b"65534\n"
