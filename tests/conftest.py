"""Shared fixtures: a leak check around every test, root-only tests, a task directory, ``run``.

``no_leaks`` (autouse) snapshots the host before each test and fails the test
if anything launched by it outlives it: processes (descendants, and new ones
in other pid namespaces), mounts, state directories under /run/pyexec, pyexec
cgroups -- support/leaks.py says exactly what counts. Dying processes get a
short grace (``PYEXEC_TEST_LEAK_GRACE``, 1s by default). Leaked processes are
SIGKILLed after being reported, so one failure does not cascade into the
following tests.

Tests that need root carry the ``needs_root`` marker (a module's
``pytestmark = pytest.mark.needs_root``); when we are not root they are
skipped with ``ROOT_REASON``, or with the reason the marker gives.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import psutil
import pytest

from support import leaks

LEAK_GRACE = float(os.environ.get("PYEXEC_TEST_LEAK_GRACE", "1.0"))  # seconds

IS_ROOT = os.geteuid() == 0
ROOT_REASON = "the container executor needs root (namespaces, mounts, pivot_root)"


def pytest_configure(config: pytest.Config) -> None:
    """Register ``needs_root``, so that ``--strict-markers`` takes it and ``-m`` can select by it."""
    config.addinivalue_line(
        "markers", "needs_root(reason=ROOT_REASON): the test needs root (namespaces, mounts, cgroups); "
                   "skipped, with the reason, when we are not root")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Skip the tests marked ``needs_root`` when we are not root."""
    if IS_ROOT:
        return
    for item in items:
        marker = item.get_closest_marker("needs_root")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else ROOT_REASON)
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def no_kept_parents_left():
    """The executors keep their parent cgroup between tasks on purpose (the
    per-test check allows it), and their state root; the run as a whole must
    not leave either behind when it made it. Still occupied means a task leaked: the per-test check
    has reported that, so it is left for the operator to see."""
    before = leaks.kept_parents()
    had_state_root = os.path.isdir(leaks.STATE_ROOT)
    yield
    made = sorted(leaks.kept_parents() - before) + ([] if had_state_root else [leaks.STATE_ROOT])
    for directory in made:
        try:
            os.rmdir(directory)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail the test if it left processes, mounts, state dirs or cgroups behind."""
    before = leaks.snapshot()
    yield
    found = leaks.settle(before, LEAK_GRACE)
    if not found:
        return
    leaks.kill(found.pids)
    pytest.fail(found.report(), pytrace=False)


# -- helpers for container tests -------------------------------------------------

@pytest.fixture(params=["shared", "copied"])
def spawn_mode(request, monkeypatch):
    """Run the test both ways the shim clones: in the caller's memory (the
    default) and as a copy of the caller (``pyexec.shim.SHARE_MEMORY``)."""
    from pyexec import shim
    monkeypatch.setattr(shim, "SHARE_MEMORY", request.param == "shared")
    return request.param


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """A fresh, existing task directory."""
    path = tmp_path / "task"
    path.mkdir()
    return path


@pytest.fixture
def run(tmp_path: Path, task_dir: Path):
    """``run(argv, **ExecCommand fields)`` -> (ExitResult, stdout text, stderr text).

    Launches a container task with stdout/stderr in tmp_path, waits up to 30s
    and always shuts the task down. ``state_root=`` goes to the executor.
    """
    from pyexec import ExecCommand, new_executor

    counter = itertools.count()

    def _run(argv, state_root: Optional[str] = None, timeout: float = 30.0, **fields):
        n = next(counter)
        out = tmp_path / f"run{n}.stdout"
        err = tmp_path / f"run{n}.stderr"
        fields.setdefault("task_dir", str(task_dir))
        fields.setdefault("stdout_path", str(out))
        fields.setdefault("stderr_path", str(err))
        cmd = ExecCommand(argv=list(argv), **fields)
        ex = new_executor("container", **({"state_root": state_root} if state_root else {}))
        try:
            ex.launch(cmd)
            result = ex.wait(timeout=timeout)
        finally:
            ex.shutdown(grace=0)

        def text(path: Path) -> str:
            return path.read_text() if path.exists() else ""
        return result, text(Path(cmd.stdout_path)), text(Path(cmd.stderr_path))

    return _run


@pytest.fixture
def executors():
    """A factory of executors (container by default) that are all shut down after the test."""
    from pyexec import new_executor

    made = []

    def make(kind: str = "container", **options):
        ex = new_executor(kind, **options)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(grace=0)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- shared task scripts and callers -------------------------------------------------

# Forks children that sleep, forever, and keeps trying when fork fails (EAGAIN
# at the pids limit) -- dash would exit on the first failed fork instead.
FORK_LOOP = """
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(100)
            os._exit(0)
    except OSError:
        time.sleep(0.001)
"""

REPO = Path(__file__).resolve().parent.parent

# A caller process: launches the task of its JSON argument, prints the
# handle, then waits until the test kills it. "bridge" becomes the network.
CALLER = """
import json, sys
from pyexec import Bridge, ExecCommand, Isolation, Resources, new_executor
spec = json.loads(sys.argv[1])
ex = new_executor(spec.pop("kind"))
resources = Resources(**spec.pop("resources", {}))
bridge = spec.pop("bridge", None)
if bridge is not None:
    spec["isolation"] = Isolation(network=Bridge(**bridge))
ex.launch(ExecCommand(resources=resources, **spec))
print(json.dumps(ex.handle()), flush=True)
sys.stdin.read()          # until the test kills us
"""


def caller_launches(kind: str, task_dir: Path, argv, **fields):
    """Start a caller that launches ``argv``; return (caller process, handle)."""
    spec = dict(kind=kind, argv=list(argv), task_dir=str(task_dir), **fields)
    caller = subprocess.Popen([sys.executable, "-c", CALLER, json.dumps(spec)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = caller.stdout.readline()
    assert line, f"the caller failed (exit {caller.wait()})"
    return caller, json.loads(line)


def kill_caller(caller: subprocess.Popen) -> None:
    """SIGKILL a caller (its tasks live on) and reap it."""
    caller.kill()
    caller.wait()
    caller.stdin.close()
    caller.stdout.close()


@pytest.fixture
def subreaper():
    """While a test kills callers, their orphaned monitors come to us (as they
    would to systemd); those still there at the end are killed and reaped."""
    import prctl

    prctl.set_child_subreaper(1)
    try:
        yield
    finally:
        prctl.set_child_subreaper(0)
        for child in psutil.Process().children():
            try:
                if child.name() == "pyexec-monitor":
                    child.kill()
                    os.waitpid(child.pid, 0)
            except (psutil.Error, ChildProcessError):
                pass


# -- cgroup tests: a unique parent cgroup, child processes ---------------------------

def cgroup_leftovers(parent: str) -> List[str]:
    """Directories named ``parent`` in any cgroup hierarchy."""
    found = []
    from pyexec.cgroups.base import cgroup_mounts
    for mount in {m.mountpoint for m in cgroup_mounts()}:
        path = os.path.join(mount, parent)
        if os.path.exists(path):
            found.append(path)
    return found


@pytest.fixture
def cg() -> Iterator[str]:
    """A unique parent cgroup name; asserts that nothing of it remains afterwards."""
    parent = f"pyexec-test-{uuid.uuid4().hex[:10]}"
    yield parent
    own = open("/proc/self/cgroup").read()
    left = cgroup_leftovers(parent)
    for path in left:
        leaks.force_remove_cgroup(path)
    assert parent not in own, f"the test process joined a task cgroup: {own}"
    assert not left, f"cgroup directories left behind: {left}"


@pytest.fixture
def procs() -> Iterator[List[subprocess.Popen]]:
    """Child processes a test starts; killed and reaped afterwards whatever happens."""
    started: List[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def sleeper(procs: List[subprocess.Popen]) -> subprocess.Popen:
    p = subprocess.Popen(["sleep", "300"])
    procs.append(p)
    return p

