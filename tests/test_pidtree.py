"""PidCollector on real process trees: pids, cache, memory, CPU, I/O, kill_tree.

Every tree is started in a session of its own and SIGKILLed as a whole
(``os.killpg``) in ``finally``; the test reaps its direct child, orphaned
grandchildren go to init.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator, List

import psutil
import pytest

from conftest import wait_for
from pyexec.errors import ConfigError
from pyexec.stats import PidCollector, ResourceUsage

MB = 1 << 20

# Reads one JSON argv per line from stdin, starts it (stdout inherited), prints
# "child <pid>". Exits on EOF. Every script here writes a line with one
# os.write: print() makes two writes under PYTHONUNBUFFERED, and lines of
# processes sharing the pipe would interleave.
SPAWNER = """
import json, os, subprocess, sys
kids = []
os.write(1, b"ready\\n")
for line in sys.stdin:
    kids.append(subprocess.Popen(json.loads(line)))
    os.write(1, b"child %d\\n" % kids[-1].pid)
"""


class Tree:
    """A spawner process (the root) whose children the test starts on demand."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.pid = proc.pid

    def line(self) -> List[str]:
        text = self.proc.stdout.readline()
        assert text, "the spawner exited"
        return text.split()

    def spawn(self, *argv: str) -> int:
        """Start argv as a child of the root; return its pid."""
        self.proc.stdin.write(json.dumps(list(argv)) + "\n")
        self.proc.stdin.flush()
        words = self.line()
        assert words[0] == "child", words
        return int(words[1])

    def python(self, code: str) -> int:
        return self.spawn(sys.executable, "-c", code)


@contextmanager
def _session(argv: List[str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        proc.wait(timeout=5)


@contextmanager
def tree() -> Iterator[Tree]:
    with _session([sys.executable, "-c", SPAWNER]) as proc:
        t = Tree(proc)
        assert t.line() == ["ready"]
        yield t


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- validation -------------------------------------------------------------------

@pytest.mark.parametrize("pid", [0, -1, "1", True, 1.0, None])
def test_bad_root_pid(pid):
    with pytest.raises(ConfigError) as err:
        PidCollector(pid)
    assert err.value.field == "root_pid"


@pytest.mark.parametrize("seconds", [-1, -0.5, float("nan"), "5", True])
def test_bad_cache_seconds(seconds):
    with pytest.raises(ConfigError) as err:
        PidCollector(os.getpid(), cache_seconds=seconds)
    assert err.value.field == "cache_seconds"


def test_bad_extra_pids():
    with pytest.raises(ConfigError) as err:
        PidCollector(os.getpid(), extra_pids=[1, 2])
    assert err.value.field == "extra_pids"


# -- pids and memory ------------------------------------------------------------

ALLOCATED = "import os, time\nb = b'x' * (20 << 20)\nos.write(1, b'allocated\\n')\ntime.sleep(60)\n"
ALLOCATOR = """
import subprocess, sys
kids = [subprocess.Popen([sys.executable, "-c", sys.argv[1]]) for _ in range(3)]
for k in kids:
    k.wait()
"""


def test_tree_memory_and_pids():
    with _session([sys.executable, "-c", ALLOCATOR, ALLOCATED]) as parent:
        for _ in range(3):
            assert parent.stdout.readline().strip() == "allocated"
        kids = [p.pid for p in psutil.Process(parent.pid).children()]
        assert len(kids) == 3
        col = PidCollector(parent.pid)
        assert col.pids() == sorted([parent.pid] + kids)
        usage = col.sample()
        assert isinstance(usage, ResourceUsage)
        assert usage.source == "process tree"
        assert abs(usage.timestamp - time.time()) < 5
        assert set(usage.processes) == {parent.pid, *kids}
        assert usage.pids.current == 4 and usage.pids.limit is None
        assert usage.memory.rss >= 60 * MB
        assert usage.memory.usage == usage.memory.rss == sum(p.rss for p in usage.processes.values())
        assert usage.memory.max_usage == usage.memory.usage
        assert usage.memory.swap is not None and usage.memory.swap >= 0  # Linux: VmSwap
        assert usage.memory.cache is None and usage.memory.limit is None
        for pid in kids:
            assert usage.processes[pid].rss >= 20 * MB
        cpu = usage.cpu
        assert cpu.usage_total_s == pytest.approx(cpu.user_s + cpu.system_s)
        assert cpu.throttled_periods is None and cpu.throttled_time_s is None
        assert usage.io.read_bytes is not None and usage.io.write_bytes is not None


def test_sample_is_cheap():
    with tree() as t:
        for _ in range(9):
            t.spawn("sleep", "60")
        col = PidCollector(t.pid, cache_seconds=60)
        assert len(col.pids()) == 10
        col.sample()
        start = time.perf_counter()
        for _ in range(20):
            usage = col.sample()
        per_sample = (time.perf_counter() - start) / 20
        assert usage.pids.current == 10
        assert per_sample < 0.02, f"{per_sample * 1000:.1f} ms per sample"


# -- CPU ----------------------------------------------------------------------------

def test_cpu_busy_child():
    with tree() as t:
        busy = t.python("while True: pass")
        col = PidCollector(busy, cache_seconds=60)
        col.sample()
        time.sleep(0.5)
        usage = col.sample()
        assert usage.cpu.user_s > 0.3
        assert usage.cpu.percent > 50
        assert usage.processes[busy].percent > 50
        assert usage.processes[busy].user_s == usage.cpu.user_s
        # the root's view: the busy child is summed in, the idle root adds ~nothing
        whole = PidCollector(t.pid, cache_seconds=60)
        assert whole.sample().cpu.user_s >= usage.cpu.user_s


def test_reaped_children_count_once():
    with tree() as t:
        code = ("import os, subprocess, sys, time\n"
                "subprocess.run([sys.executable, '-c', 'import time\\n"
                "end = time.monotonic() + 0.4\\nwhile time.monotonic() < end: pass'])\n"
                "os.write(1, b'reaped\\n'); time.sleep(60)")
        pid = t.python(code)
        assert t.line() == ["reaped"]
        usage = PidCollector(pid).sample()
        assert usage.pids.current == 1
        assert usage.cpu.user_s + usage.cpu.system_s > 0.3  # the reaped child's time, once
        assert usage.cpu.usage_total_s < 2


# -- the cache ----------------------------------------------------------------------

def test_cache_hides_new_child_until_refresh():
    with tree() as t:
        col = PidCollector(t.pid, cache_seconds=60)
        assert col.pids() == [t.pid]
        child = t.spawn("sleep", "60")
        assert col.pids() == [t.pid]
        assert col.sample().pids.current == 1
        assert col.refresh() == sorted([t.pid, child])
        assert col.pids() == sorted([t.pid, child])


def test_no_cache_sees_new_child():
    with tree() as t:
        col = PidCollector(t.pid, cache_seconds=0)
        assert col.pids() == [t.pid]
        child = t.spawn("sleep", "60")
        assert col.pids() == sorted([t.pid, child])
        assert set(col.sample().processes) == {t.pid, child}


def test_dead_pid_dropped_from_cache():
    with tree() as t:
        first = t.spawn("sleep", "60")
        second = t.spawn("sleep", "60")
        col = PidCollector(t.pid, cache_seconds=60)
        assert col.pids() == sorted([t.pid, first, second])
        os.kill(first, signal.SIGKILL)  # a zombie until its parent reaps it: skipped too
        wait_for(lambda: _gone(first), what="the child to die")
        assert col.pids() == sorted([t.pid, second])
        assert set(col.sample().processes) == {t.pid, second}


def test_dead_root_keeps_known_descendants():
    with tree() as t:
        child = t.spawn("sleep", "60")
        col = PidCollector(t.pid, cache_seconds=60)
        assert col.pids() == sorted([t.pid, child])
        os.kill(t.pid, signal.SIGKILL)
        t.proc.wait(timeout=5)
        assert col.pids() == [child]  # root re-checked, cached child still alive
        assert col.refresh() == [child]  # reparented away, still tracked
        usage = col.sample()
        assert set(usage.processes) == {child} and usage.pids.current == 1


def test_extra_pids_are_merged():
    with tree() as t, tree() as other:
        stray = other.spawn("sleep", "60")
        ancestors = [os.getpid(), os.getppid()]  # never walked: they hold the other trees
        col = PidCollector(t.pid, cache_seconds=60, extra_pids=lambda: [other.pid, 0, *ancestors])
        assert col.pids() == sorted([t.pid, other.pid, stray])


def test_failing_extra_pids_is_logged_not_raised(caplog):
    def broken():
        raise RuntimeError("boom")
    with tree() as t:
        col = PidCollector(t.pid, extra_pids=broken)
        assert col.pids() == [t.pid]
        assert "extra_pids" in caplog.text


def test_missing_root_is_an_empty_tree():
    with tree() as t:
        pid = t.pid
        os.kill(pid, signal.SIGKILL)
        t.proc.wait(timeout=5)
        col = PidCollector(pid)
        assert col.pids() == []
        usage = col.sample()
        assert usage.pids.current == 0 and usage.processes == {}
        assert usage.memory.usage == 0 and usage.cpu.user_s is None and usage.cpu.percent == 0.0
        assert col.kill_tree(signal.SIGKILL) == []


# -- kill_tree ----------------------------------------------------------------------

GRANDPARENT = ("import os, subprocess\n"
               "p = subprocess.Popen(['sleep', '60'])\n"
               "os.write(1, b'grandchild %d\\n' % p.pid)\n"
               "p.wait()\n")


def test_kill_tree_reaches_a_late_grandchild():
    with tree() as t:
        col = PidCollector(t.pid, cache_seconds=60)
        assert col.pids() == [t.pid]
        child = t.python(GRANDPARENT)
        words = t.line()
        assert words[0] == "grandchild"
        grandchild = int(words[1])
        signalled = col.kill_tree(signal.SIGKILL)
        assert sorted(signalled) == sorted([t.pid, child, grandchild])
        t.proc.wait(timeout=5)
        for pid in (child, grandchild):
            wait_for(lambda: _gone(pid), what=f"pid {pid} to die")
        assert col.pids() == []


def test_a_root_left_out_is_walked_but_neither_sampled_nor_signalled():
    with tree() as t:
        child = t.spawn("sleep", "60")
        col = PidCollector(t.pid, cache_seconds=0, include_root=False)
        assert col.pids() == [child]
        assert set(col.sample().processes) == {child}
        assert col.kill_tree(signal.SIGKILL) == [child]
        wait_for(lambda: _gone(child), what="the child to die")
        assert t.proc.poll() is None  # the root lives on


# -- I/O ----------------------------------------------------------------------------

WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
block = b"x" * (1 << 20)
for _ in range(8):
    os.write(fd, block)
os.fsync(fd)
os.close(fd)
os.write(1, b"written\\n")
time.sleep(60)
"""


def test_io_write_bytes():
    fd, path = tempfile.mkstemp(dir="/var/tmp", prefix="pyexec-pidtree-")
    os.close(fd)
    try:
        with _session([sys.executable, "-c", WRITER, path]) as writer:
            assert writer.stdout.readline().strip() == "written"
            usage = PidCollector(writer.pid).sample()
            assert usage.io.write_bytes >= 8 * MB
            assert usage.io.read_bytes is not None
    finally:
        os.unlink(path)
