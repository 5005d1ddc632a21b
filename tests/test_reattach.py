"""Tasks outlive their caller and a later caller takes them over: handles,
``pyexec.reattach``, exit records, logs written while nobody listens, pid
reuse, kill_on_caller_exit, and no per-task leaks in the caller.

A "caller" here is a real Python process that launches a task, prints the
handle and is then SIGKILLed. The test process is made a child subreaper
while a caller runs, so that the caller's orphaned monitors come to it (as
they would to systemd) and are reaped, not left to the host's pid 1.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import caller_launches, kill_caller, wait_for
from pyexec import ExecCommand, new_executor, reattach
from pyexec.errors import ConfigError, TaskExitedError

pytestmark = pytest.mark.needs_root(reason="container tasks and cgroups need root")

KINDS = ["container", "universal"]


def sh(script: str):
    return ["/bin/sh", "-c", script]


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def monitors() -> list:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "pyexec-monitor"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_caller_takes_over_a_running_task(kind, task_dir, subreaper):
    caller, handle = caller_launches(kind, task_dir, sh("trap 'echo term; exit 5' TERM; echo ready; "
                                                        "while :; do sleep 0.05; done"))
    log = task_dir / "logs" / f"{task_dir.name}.stdout.0"
    # The trap is set before SIGTERM comes (a slow machine may not be there yet at launch).
    wait_for(lambda: "ready" in (log.read_text() if log.exists() else ""), timeout=30, what="the trap")
    kill_caller(caller)
    assert psutil.pid_exists(handle["pid"])  # the monitor and its task outlive the caller
    ex = reattach(json.dumps(handle))        # a handle survives a JSON round trip
    assert ex.pid == handle["pid"] and ex.kind == kind
    s = ex.stats()
    assert s.pids.current >= 1 and s.cpu.usage_total_s is not None
    result = ex.shutdown(grace=5)
    assert (result.exit_code, result.signal) == (5, None)
    assert "term" in (task_dir / "logs" / f"{task_dir.name}.stdout.0").read_text()
    assert not os.path.exists(os.path.join(handle["state_root"], handle["task_id"]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("script, resources, expected", [
    ("sleep 0.3; exit 7", {}, (7, None, False)),
    ("sleep 0.3; kill -TERM $$", {}, (143, signal.SIGTERM, False)),
    ("sleep 0.3; exec python3 -c 'b = bytearray(200 << 20)'", {"memory": "64M", "memory_swap": "64M"},
     (137, signal.SIGKILL, True)),
], ids=["exit", "signal", "oom"])
def test_an_exit_while_no_caller_lives_is_not_lost(kind, task_dir, subreaper, script, resources, expected):
    caller, handle = caller_launches(kind, task_dir, sh(script), resources=resources)
    kill_caller(caller)
    wait_for(lambda: os.path.exists(os.path.join(handle["state_root"], handle["task_id"], "exit.json")),
             what="the monitor's exit record")
    ex = reattach(handle)
    result = ex.wait(5)
    assert (result.exit_code, result.signal, result.oom_killed) == expected
    assert result.finished_at - result.started_at >= 0.25
    assert ex.signal(signal.SIGTERM) is False  # the task is gone


@pytest.mark.parametrize("kind", KINDS)
def test_output_written_while_the_caller_is_dead_is_kept(kind, task_dir, subreaper):
    caller, handle = caller_launches(kind, task_dir, sh("for i in 1 2 3 4 5 6 7 8; do echo line$i; "
                                                        "echo err$i >&2; sleep 0.05; done"))
    kill_caller(caller)
    result = reattach(handle).wait(10)
    assert result.exit_code == 0
    logs = task_dir / "logs"
    assert (logs / f"{task_dir.name}.stdout.0").read_text() == "".join(f"line{i}\n" for i in range(1, 9))
    assert (logs / f"{task_dir.name}.stderr.0").read_text() == "".join(f"err{i}\n" for i in range(1, 9))


def test_a_stale_handle_never_signals_a_process_that_reused_the_pid(task_dir, subreaper):
    caller, handle = caller_launches("container", task_dir, ["true"])
    kill_caller(caller)
    wait_for(lambda: os.path.exists(os.path.join(handle["state_root"], handle["task_id"], "exit.json")),
             what="the task to end")
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        stale = dict(handle, pid=stranger.pid)  # as if the monitor's pid now named this process
        ex = reattach(stale)
        assert ex.signal(signal.SIGKILL) is False
        assert ex.shutdown(grace=0).exit_code == 0  # the recorded exit of the real task
        assert stranger.poll() is None, "a stale handle signalled a stranger"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_handle_whose_state_is_gone_raises(task_dir):
    live = new_executor("container")
    live.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir)))
    handle = live.handle()
    live.shutdown(grace=0)  # its state is removed with it
    with pytest.raises(TaskExitedError, match="is gone"):
        reattach(handle)


@pytest.mark.parametrize("bad, field", [
    ("not json", "handle"), ({"pyexec_handle": 99}, "handle"), ({"pyexec_handle": 1}, "handle.kind"),
])
def test_bad_handles_are_config_errors(bad, field):
    with pytest.raises(ConfigError) as err:
        reattach(bad)
    assert err.value.field == field


def test_the_portable_executor_has_no_handle(task_dir):
    ex = new_executor("portable")
    ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir)))
    try:
        with pytest.raises(Exception, match="cannot hand its task over"):
            ex.handle()
    finally:
        ex.shutdown(grace=0)


@pytest.mark.parametrize("kind", KINDS)
def test_kill_on_caller_exit_ties_the_task_to_the_caller(kind, task_dir, subreaper):
    marker = f"{time.time_ns() % 10**9}"
    caller, handle = caller_launches(kind, task_dir, ["sleep", f"1{marker}"], kill_on_caller_exit=True)
    task = [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "sleep" and f"1{marker}" in (p.info["cmdline"] or [])]
    assert len(task) == 1
    kill_caller(caller)
    wait_for(lambda: gone(task[0]), what="the task to die with its caller")
    result = reattach(handle).wait(5)  # collects the record and removes the leftovers
    assert result.signal == signal.SIGKILL


def test_the_default_is_that_the_task_outlives_its_caller(task_dir, subreaper):
    caller, handle = caller_launches("container", task_dir, ["sleep", "60"])
    kill_caller(caller)
    time.sleep(0.2)
    ex = reattach(handle)
    with pytest.raises(TimeoutError):
        ex.wait(0.1)
    assert ex.shutdown(grace=0).signal == signal.SIGKILL


def test_two_hundred_launches_leak_no_fd_thread_or_monitor(task_dir):
    me = psutil.Process()
    for _ in range(3):  # warm-up: imports, caches, the first cgroup parents
        ex = new_executor("container")
        ex.launch(ExecCommand(argv=["true"], task_dir=str(task_dir)))
        ex.wait(10)
    fds, threads = me.num_fds(), me.num_threads()
    for i in range(200):
        ex = new_executor("container")
        ex.launch(ExecCommand(argv=["sleep", "60"], task_dir=str(task_dir), kill_on_caller_exit=i % 2 == 0))
        if i % 3 == 0:
            ex.stats()
        ex.shutdown(grace=0 if i % 2 else 0.5)
    assert me.num_fds() == fds
    assert me.num_threads() == threads
    wait_for(lambda: not monitors(), what="every monitor to be gone")


@pytest.mark.parametrize("kind", KINDS)
def test_task_logs_rotate_and_a_restart_appends(kind, task_dir):
    from pyexec import LogConfig

    line = "x" * 99 + "\n"  # 100 bytes
    config = LogConfig(max_files=3, max_file_size="256K")
    ex = new_executor(kind)
    ex.launch(ExecCommand(argv=["python3", "-c", f"import sys\nfor _ in range(10240): sys.stdout.write({line!r})"],
                          task_dir=str(task_dir), log_config=config))
    assert ex.wait(30).exit_code == 0
    logs = task_dir / "logs"
    names = sorted(p.name for p in logs.iterdir() if ".stdout." in p.name)
    # 1,024,000 bytes in 100-byte lines fill .0 to .3, each cut at a newline
    # near 256K (within the slack of 1/16); with max_files=3, .0 is purged.
    assert names == [f"{task_dir.name}.stdout.{i}" for i in (1, 2, 3)], names
    texts = [(logs / n).read_text() for n in names]
    assert all(262144 - 100 < len(t) <= 262144 + 16384 and t.endswith("\n") for t in texts[:2])
    assert set("".join(texts)) == set(line) and len("".join(texts)) % 100 == 0
    again = new_executor(kind)
    again.launch(ExecCommand(argv=["echo", "restarted"], task_dir=str(task_dir), log_config=config))
    again.wait(10)
    assert (logs / names[-1]).read_text().endswith(line + "restarted\n")  # appended to the highest index
