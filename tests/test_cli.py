"""The ``pyexec run`` command, run as a real subprocess against the real kernel."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for

pytestmark = pytest.mark.needs_root  # ``pyexec run`` launches a container task

PYEXEC = [sys.executable, "-m", "pyexec"]


def pyexec_run(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(PYEXEC + ["run", *args], capture_output=True, text=True, timeout=timeout, **kw)


def test_passes_stdio_through_and_exits_with_the_tasks_status():
    done = pyexec_run("--hostname", "clihost", "--", "/bin/sh", "-c",
                      "read x; echo out:$x:$(hostname); echo err >&2; exit 4",
                      input="fed\n")
    assert done.returncode == 4, done.stderr
    assert done.stdout == "out:fed:clihost\n"
    assert done.stderr == "err\n"


def test_a_signal_death_exits_128_plus_the_signal():
    done = pyexec_run("--", "/bin/sh", "-c", "kill -USR1 $$")
    assert done.returncode == 128 + signal.SIGUSR1


def test_stats_prints_one_summary_line_on_stderr():
    done = pyexec_run("--stats", "--memory", "64M", "--pids", "32", "--", "/bin/sh", "-c", "echo hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyexec: stats: wall "), done.stderr
    assert "peak-memory" in lines[0] and "oom no" in lines[0] and "exit 0" in lines[0]
    assert "n/a" not in lines[0], "peak memory comes from the task's cgroup"


def test_stats_reports_an_oom_kill():
    done = pyexec_run("--stats", "--memory", "32M", "--", "/usr/bin/python3", "-c", "b = bytearray(200 << 20)")
    assert done.returncode == 128 + signal.SIGKILL
    assert "oom yes" in done.stderr, done.stderr


@pytest.mark.parametrize("args, message", [
    (["--memory", "12XB", "--", "true"], "pyexec: error: --memory: '12XB' is not a size\n"),
    (["--", "/nope"], "pyexec: error: exec /nope: No such file or directory\n"),
    (["--mount", "/does/not/exist:/x", "--", "true"], "pyexec: error: --mount: '/does/not/exist' does not exist\n"),
    (["--user", "no-such-user", "--", "true"], "pyexec: error: --user: 'no-such-user' is not a user in /etc/passwd\n"),
    (["--env", "NOEQUALS", "--", "true"], "pyexec: error: --env: 'NOEQUALS' is not K=V\n"),
    (["--workdir", "relative", "--", "true"], "pyexec: error: --workdir: 'relative' must be an absolute path\n"),
    (["--pids", "x", "--", "true"], "pyexec: error: argument --pids: 'x' is not an integer\n"),
    (["--net", "wifi", "--", "true"], "pyexec: error: --net: 'wifi' must be 'none', 'host', a Bridge, "
                                      "'netns:PATH' or 'ns:PATH'\n"),
    (["--net", "bridge:br0:10.231.0.0/33", "--", "true"],
     "pyexec: error: --net: '10.231.0.0/33' is not an IPv4 subnet like 10.88.0.0/16 (host bits zero)\n"),
    (["--net", "netns:/does/not/exist", "--", "true"],
     "pyexec: error: --net: 'netns:/does/not/exist' does not exist\n"),
])
def test_errors_are_one_line_with_exit_code_125(args, message):
    done = pyexec_run(*args)
    assert done.returncode == 125
    assert done.stderr == message
    assert "Traceback" not in done.stderr


def test_options_reach_the_task(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("data\n")
    done = pyexec_run("--env", "FOO=bar", "--workdir", "/tmp", "--user", "nobody", "--mount", f"{shared}:/data:ro",
                      "--", "/bin/sh", "-c", "echo $FOO $(pwd) $(id -u) $(cat /data/in.txt); touch /data/x")
    assert done.stdout == "bar /tmp 65534 data\n", done.stderr
    assert done.returncode != 0  # /data is read-only
    assert not (shared / "x").exists()


def test_net_host_shares_the_hosts_network_and_none_has_only_lo():
    host_ifaces = sorted(os.listdir("/sys/class/net"))
    done = pyexec_run("--net", "host", "--", "/bin/ls", "/sys/class/net")
    assert sorted(done.stdout.split()) == host_ifaces
    done = pyexec_run("--", "/bin/ls", "/sys/class/net")
    assert done.stdout.split() == ["lo"]


def test_sigterm_to_pyexec_is_forwarded_to_the_task(tmp_path: Path):
    task_dir = tmp_path / "task"
    proc = subprocess.Popen(PYEXEC + ["run", "--task-dir", str(task_dir), "--", "/bin/sh", "-c",
                                      "trap 'echo got-term; exit 9' TERM; touch /local/ready; "
                                      "while :; do sleep 0.05; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (task_dir / "local" / "ready").exists(), timeout=10, what="task ready")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 9, err
    assert out == "got-term\n"
    assert time.monotonic() - started < 5


def test_a_temporary_task_dir_is_removed_afterwards():
    before = {p for p in os.listdir("/tmp") if p.startswith("pyexec-run-")}
    done = pyexec_run("--", "/bin/true")
    assert done.returncode == 0
    assert {p for p in os.listdir("/tmp") if p.startswith("pyexec-run-")} == before


@pytest.mark.parametrize("executor", ["universal", "portable"])
def test_other_executors_run_on_the_host(executor, tmp_path: Path):
    done = pyexec_run("--executor", executor, "--task-dir", str(tmp_path / "t"), "--stats", "--",
                      "/bin/sh", "-c", "pwd; readlink /proc/self/ns/pid; exit 2")
    assert done.returncode == 2, done.stderr
    cwd, pid_ns = done.stdout.split()
    assert cwd == str(tmp_path / "t") and pid_ns == os.readlink("/proc/self/ns/pid")
    assert "pyexec: stats: wall" in done.stderr and "exit 2" in done.stderr
