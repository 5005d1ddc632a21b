"""The cgroup side of the container executor, end to end on the real kernel:
limits take effect on real tasks, stats describe them, OOM kills are reported
exactly, fork bombs are contained, limits change live, and crashed callers'
leftovers are cleaned. (The manager alone is tested in test_cgroups.py.)
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from conftest import FORK_LOOP, wait_for
from pyexec import ExecCommand, Resources
from pyexec.cgroups import new_manager
from pyexec.errors import ConfigError
from pyexec.executor.state import STATE_FILE

pytestmark = pytest.mark.needs_root  # container tasks, limited by cgroups

M = 1 << 20
PY = sys.executable if sys.executable.startswith("/usr/") else "/usr/bin/python3"

# Allocates MB megabytes (touching every page), says so, then waits for stdin/a file.
ALLOC = """
import os, sys, time
mb = int(sys.argv[1])
blocks = [bytearray(1 << 20) for _ in range(mb)]
for b in blocks:
    b[::4096] = b'x' * len(b[::4096])
print('allocated', flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)
"""

BUSY = "import time\nwhile True: pass\n"


def py(code: str, *args: str):
    return [PY, "-c", code, *args]


def launch(executors, task_dir, argv, **fields):
    ex = executors()
    ex.launch(ExecCommand(argv=argv, task_dir=str(task_dir), **fields))
    return ex


def stdout_of(task_dir) -> str:
    path = task_dir / "logs" / f"{task_dir.name}.stdout.0"
    return path.read_text() if path.exists() else ""


# -- OOM ---------------------------------------------------------------------------------

def test_an_allocation_over_the_memory_limit_is_reported_as_oom_killed(run):
    result, out, _ = run(py(ALLOC, "200", "0"), resources=Resources(memory="64M", memory_swap="64M"))
    assert result.oom_killed is True
    assert result.signal == signal.SIGKILL and "allocated" not in out
    assert result.usage is not None and result.usage.memory.oom_kills >= 1
    assert result.usage.memory.max_usage >= 60 * M


def test_a_normal_exit_is_not_oom_killed_even_near_the_limit(run):
    # 40 MB of 64 MB: usage gets close to the limit, no OOM kill happens.
    result, out, _ = run(py(ALLOC, "40", "0"), resources=Resources(memory="64M"))
    assert (result.exit_code, result.oom_killed) == (0, False), out
    assert result.usage.memory.oom_kills == 0


def test_a_killed_task_under_a_limit_is_not_oom_killed(executors, task_dir):
    ex = launch(executors, task_dir, ["sleep", "60"], resources=Resources(memory="64M"))
    result = ex.shutdown(grace=0)
    assert result.signal == signal.SIGKILL and result.oom_killed is False


# -- pids --------------------------------------------------------------------------------

def test_a_fork_bomb_is_held_at_the_pids_limit_and_shutdown_leaves_nothing(executors, task_dir):
    ex = launch(executors, task_dir, py(FORK_LOOP), resources=Resources(pids=32))
    wait_for(lambda: (ex.stats().pids.current or 0) >= 30, what="the fork bomb to fill its pids limit")
    time.sleep(0.3)
    s = ex.stats()
    assert s.pids.limit == 32 and s.pids.current <= 32
    paths = list(ex._cgroup.paths.values())
    result = ex.shutdown(grace=0)
    assert result.signal == signal.SIGKILL
    assert not any(os.path.exists(p) for p in paths)


# -- cpu ---------------------------------------------------------------------------------

def test_cpus_holds_a_busy_loop_near_its_quota(executors, task_dir):
    ex = launch(executors, task_dir, py(BUSY), resources=Resources(cpus=0.2))
    ex.stats()  # starts the percent interval
    before = ex.stats().cpu.usage_total_s
    time.sleep(2.0)
    s = ex.stats()
    used = s.cpu.usage_total_s - before
    assert 0.2 <= used <= 0.6, used            # 0.4 s of CPU in 2 s at 20 %
    assert 10 <= s.cpu.percent <= 30, s.cpu.percent
    assert s.cpu.throttled_periods > 0 and s.cpu.throttled_time_s > 0


def test_lowering_cpus_live_throttles_the_task(executors, task_dir):
    ex = launch(executors, task_dir, py(BUSY))
    time.sleep(0.5)
    ex.stats()
    time.sleep(0.5)
    assert ex.stats().cpu.percent > 60  # unthrottled: about a whole core
    ex.update_resources(Resources(cpus=0.1))
    ex.stats()
    time.sleep(1.0)
    s = ex.stats()
    assert s.cpu.percent < 25, s.cpu.percent
    assert s.cpu.throttled_periods > 0


# -- memory stats and live update ----------------------------------------------------------

def test_stats_of_a_task_that_allocates_50_mb(executors, task_dir):
    ex = launch(executors, task_dir, py(ALLOC, "50"), resources=Resources(memory="256M"))
    wait_for(lambda: "allocated" in stdout_of(task_dir), what="the allocation")
    s = ex.stats()
    assert s.source.startswith("cgroup")
    assert s.memory.rss >= 45 * M, s.memory
    assert s.memory.usage >= s.memory.rss
    assert s.memory.max_usage >= s.memory.usage
    assert s.memory.limit == 256 * M
    assert s.memory.cache is not None and s.memory.mapped_file is not None
    assert s.pids.current >= 1 and s.cpu.usage_total_s > 0
    assert abs(s.timestamp - time.time()) < 5


def test_raising_the_memory_limit_lets_a_task_near_it_continue(executors, task_dir, tmp_path):
    go = tmp_path / "go"
    code = ("import os, time\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n" + ALLOC)
    ex = launch(executors, task_dir, py(code, "100", "0"), resources=Resources(memory="64M", memory_swap="64M"),
                isolation=_with_bind(tmp_path))
    ex.update_resources(Resources(memory="256M", memory_swap="256M"))
    assert ex.stats().memory.limit == 256 * M
    go.touch()
    result = ex.wait(30)
    assert (result.exit_code, result.oom_killed) == (0, False), stdout_of(task_dir)


def _with_bind(path):
    from pyexec import Isolation, Mount
    return Isolation(mounts=[Mount(source=str(path), target=str(path), readonly=True)])


def test_an_invalid_update_raises_and_changes_nothing(executors, task_dir):
    """Each update is valid as a Resources of its own (a bad value would fail
    at Resources() before the update is reached) and wrong only against the
    task: the pids change that comes with it is not applied either."""
    ex = launch(executors, task_dir, ["sleep", "60"], resources=Resources(memory="64M", pids=20))
    with pytest.raises(ConfigError, match="memory_swap"):
        ex.update_resources(Resources(pids=30, memory_swap="32M"))  # below the memory limit in force
    with open("/sys/devices/system/cpu/possible") as f:  # "0-N": no CPU above N exists to be given
        missing_cpu = str(int(f.read().strip().replace(",", "-").split("-")[-1]) + 1)
    with pytest.raises(ConfigError, match="cpuset_cpus"):
        ex.update_resources(Resources(pids=30, cpuset_cpus=missing_cpu))
    s = ex.stats()
    assert (s.memory.limit, s.pids.limit) == (64 * M, 20)


# -- io ----------------------------------------------------------------------------------

def test_block_io_is_counted(run, task_dir):
    # /local is the task directory's local/ on the host's disk; O_DIRECT skips the page cache.
    result, _, err = run(["dd", "if=/dev/zero", "of=/local/out", "bs=1M", "count=8", "oflag=direct"])
    assert result.exit_code == 0, err
    assert result.usage.io.write_bytes >= 8 * M
    assert result.usage.io.read_bytes is not None


# -- the stream ------------------------------------------------------------------------------

def test_stats_stream_samples_until_the_exit_then_gives_the_final_sample(executors, task_dir):
    ex = launch(executors, task_dir, py("import time\nt = time.time()\nwhile time.time() - t < 0.6: pass\n"))
    samples = list(ex.stats_stream(0.1))
    assert len(samples) >= 4
    assert samples[-1] is ex.wait().usage
    assert all(a.timestamp <= b.timestamp for a, b in zip(samples, samples[1:]))
    busy = [s.cpu.percent for s in samples[1:-1]]
    assert max(busy) > 50, busy
    assert ex.stats() is samples[-1]  # after the exit: the final sample


def test_stats_stream_async(executors, task_dir):
    ex = launch(executors, task_dir, ["sleep", "0.4"])

    async def collect():
        return [s async for s in ex.stats_stream_async(0.1)]

    samples = asyncio.run(collect())
    assert len(samples) >= 3 and samples[-1] is ex.wait().usage


def test_stats_stream_rejects_a_bad_interval(executors, task_dir):
    ex = launch(executors, task_dir, ["sleep", "60"])
    with pytest.raises(ConfigError, match="interval"):
        next(ex.stats_stream(0))


# -- crashed callers ---------------------------------------------------------------------------

def test_cleanup_stale_kills_and_removes_a_leftover_cgroup(executors, procs_sleeping):
    leftover = new_manager("crashed-0123456789ab", Resources(pids=10), parent="pyexec")
    leftover.create()
    p = procs_sleeping()
    leftover.add_pid(p.pid)
    paths = list(leftover.paths.values())
    ex = executors()
    assert "crashed-0123456789ab" in ex.cleanup_stale()
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert not any(os.path.exists(path) for path in paths)


def test_cleanup_stale_leaves_live_tasks_alone(executors, task_dir):
    live = launch(executors, task_dir, ["sleep", "60"])
    state = os.path.join(live.state_root, live.task_id)
    assert os.path.exists(os.path.join(state, STATE_FILE))
    assert live.task_id not in executors().cleanup_stale(min_age=0)
    assert live.signal(0) is True and live._proc.result is None


def test_cleanup_stale_removes_an_old_state_dir_without_a_task(executors, tmp_path):
    ex = executors(state_root=str(tmp_path / "state"))
    orphan = tmp_path / "state" / "gone-0123456789ab"
    orphan.mkdir(parents=True)
    young = tmp_path / "state" / "young-0123456789ab"
    young.mkdir()
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    assert ex.cleanup_stale(min_age=60) == ["gone-0123456789ab"]
    assert not orphan.exists() and young.exists()
    with pytest.raises(ConfigError, match="min_age"):
        ex.cleanup_stale(min_age=-1)


@pytest.fixture
def procs_sleeping():
    import subprocess
    started = []

    def start():
        p = subprocess.Popen(["sleep", "300"])
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
