"""Black-box scenarios every executor kind must pass alike: container,
universal and portable (``new_executor(kind)``), on the real kernel.

Kind-specific behaviour lives in test_container*.py, test_universal.py and
test_portable.py; here only the shared contract of the Executor API.
"""
from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from pyexec import ExecCommand, new_executor
from pyexec.errors import ConfigError, LaunchError, PyexecError

# The container kind needs root; without it its cases are skipped (and say so).
KINDS = [pytest.param("container", marks=pytest.mark.needs_root), "universal", "portable"]
M = 1 << 20


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def make(kind, executors):
    return lambda: executors(kind)


def cmd(task_dir: Path, argv, **fields) -> ExecCommand:
    return ExecCommand(argv=list(argv), task_dir=str(task_dir), **fields)


def logs(task_dir: Path):
    base = task_dir / "logs" / task_dir.name
    read = lambda p: p.read_text() if p.exists() else ""  # noqa: E731
    return read(Path(f"{base}.stdout.0")), read(Path(f"{base}.stderr.0"))


def sh(script: str):
    return ["/bin/sh", "-c", script]


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 3", 3), ("false", 1)])
def test_exit_codes(make, task_dir, script, code):
    ex = make()
    ex.launch(cmd(task_dir, sh(script)))
    result = ex.wait(20)
    assert (result.exit_code, result.signal, result.success) == (code, None, code == 0)
    assert result.finished_at >= result.started_at


def test_stdout_and_stderr_land_in_the_task_logs(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, sh("echo out; echo err >&2"), env={"PATH": "/usr/bin:/bin"}))
    assert ex.wait(20).exit_code == 0
    assert logs(task_dir) == ("out\n", "err\n")


def test_env_reaches_the_task(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, sh('echo "$GREETING"'), env={"PATH": "/usr/bin:/bin", "GREETING": "hej"}))
    ex.wait(20)
    assert logs(task_dir)[0] == "hej\n"


def test_a_signal_death_is_128_plus_the_signal(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, ["sleep", "60"]))
    assert ex.signal(signal.SIGTERM) is True
    result = ex.wait(20)
    assert (result.exit_code, result.signal) == (143, signal.SIGTERM)
    assert ex.signal(signal.SIGTERM) is False  # after the exit


def test_shutdown_kills_a_task_that_ignores_sigterm(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, sh("trap '' TERM; echo ready; while :; do sleep 0.05; done")))
    wait_for(lambda: logs(task_dir)[0] == "ready\n", what="the trap")
    started = time.monotonic()
    result = ex.shutdown(grace=0.3)
    assert result.signal == signal.SIGKILL
    assert time.monotonic() - started < 5
    assert ex.shutdown() is result  # idempotent


def test_every_waiter_gets_the_same_result(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, ["sleep", "0.3"]))
    results = []
    threads = [threading.Thread(target=lambda: results.append(ex.wait(20))) for _ in range(4)]
    for t in threads:
        t.start()

    async def waiters():
        return await asyncio.gather(ex.wait_async(), ex.wait_async())

    results.extend(asyncio.run(waiters()))
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert asyncio.run(ex.wait_async()) is results[0]  # after the exit too


def test_wait_times_out_then_waits_again(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, ["sleep", "0.5"]))
    with pytest.raises(TimeoutError):
        ex.wait(0.05)
    assert ex.wait(20).exit_code == 0


def test_a_missing_program_fails_launch(make, tmp_path):
    ex = make()
    with pytest.raises(LaunchError) as err:
        ex.launch(cmd(tmp_path / "fresh", ["no-such-program-pyexec"]))
    assert "no-such-program-pyexec" in str(err.value) and "No such file" in str(err.value)
    assert not (tmp_path / "fresh").exists()
    # the executor may be used again after a failed launch
    ex.launch(cmd(tmp_path / "fresh", ["true"]))
    assert ex.wait(20).exit_code == 0


def test_one_launch_per_executor(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, ["sleep", "60"]))
    with pytest.raises(PyexecError, match="already launched"):
        ex.launch(cmd(task_dir, ["true"]))


def test_stats_and_the_stream(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, ["/usr/bin/python3", "-c",
                             "import time\nb = bytearray(30 << 20)\nb[::4096] = b'x' * len(b[::4096])\n"
                             "t = time.time()\nwhile time.time() - t < 0.5: pass\n"]))
    samples = list(ex.stats_stream(0.1))
    assert len(samples) >= 3
    running = samples[:-1]
    assert max(s.memory.rss or 0 for s in running) >= 25 * M
    assert max(s.cpu.percent or 0 for s in running) > 30
    final = ex.wait().usage
    assert samples[-1] is final and final.cpu.usage_total_s > 0.2
    assert ex.stats() is final


def test_the_context_manager_shuts_the_task_down(kind, task_dir):
    with new_executor(kind) as ex:
        ex.launch(cmd(task_dir, ["sleep", "60"]))
    assert ex.wait(0).signal == signal.SIGTERM


def test_a_bad_stats_interval_is_a_config_error(make, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, ["sleep", "60"]))
    with pytest.raises(ConfigError, match="interval: -1 is not a positive number"):
        next(ex.stats_stream(-1))


def test_an_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="kind: 'vm' is not an executor kind"):
        new_executor("vm")


def test_per_process_stats_next_to_the_totals(make, kind, task_dir):
    ex = make()
    ex.launch(cmd(task_dir, sh("/usr/bin/python3 -c \"import time; b = bytearray(30 << 20); "
                               "b[::4096] = b'x' * len(b[::4096]); time.sleep(60)\" & "
                               "echo started; sleep 60")))
    wait_for(lambda: logs(task_dir)[0] == "started\n", what="the children")
    wait_for(lambda: sum(p.rss or 0 for p in ex.stats(per_process=True).processes.values()) >= 25 * M,
             what="the allocation")
    s = ex.stats(per_process=True)
    assert len(s.processes) >= 3  # sh, python, sleep
    assert all(p.pid == pid for pid, p in s.processes.items())
    if kind != "portable":
        assert ex.pid not in s.processes  # the init is a copy of the caller, not the task
