"""Shared fixtures: a leak check around every test, a task directory, ``run``.

``no_leaks`` (autouse) snapshots the host before each test and fails the test
if anything launched by it outlives it:

(a) descendant processes of the test process (zombies included: an unreaped
    child is a leak too);
(b) processes in a pid namespace other than ours that were not there before
    (a container whose init escaped us); one whose first ancestor in our
    namespace is outside our own tree and older than the test belongs to
    some other program on the host (say, a second test run): not counted;
(c) new lines in our /proc/self/mountinfo;
(d) new entries under the default state root /run/pyexec;
(e) new directories under /sys/fs/cgroup/*/ (depth <= 4) whose name contains
    "pyexec", and the task cgroups below them (the executors' kept parent,
    /sys/fs/cgroup/<hierarchy>/pyexec itself, is not a leak).

Dying processes get a short grace (about 1s of polling). When nothing leaked
a check costs one snapshot, so the fixture is cheap enough for every test.
Leaked processes are SIGKILLed after being reported, so one failure does not
cascade into the following tests.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

import psutil
import pytest

STATE_ROOT = "/run/pyexec"
CGROUP_ROOT = "/sys/fs/cgroup"
LEAK_GRACE = float(os.environ.get("PYEXEC_TEST_LEAK_GRACE", "1.0"))  # seconds

IS_ROOT = os.geteuid() == 0
ROOT_REASON = "the container executor needs root (namespaces, mounts, pivot_root)"


def pytest_collection_modifyitems(config, items):
    """Skip the container suite as a whole when we are not root."""
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason=ROOT_REASON)
    for item in items:
        if Path(str(item.fspath)).name.startswith(("test_container", "test_cli")):
            item.add_marker(skip)


# -- snapshots ------------------------------------------------------------------

ProcKey = Tuple[int, int]  # (pid, start time in clock ticks): immune to pid reuse


def _stat_fields(pid: int) -> Optional[List[str]]:
    """Fields of /proc/<pid>/stat from the state on (comm may hold spaces and ')')."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _pid_ns(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _all_pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _proc_key(pid: int) -> Optional[ProcKey]:
    fields = _stat_fields(pid)
    return (pid, int(fields[19])) if fields else None


def _describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline()) or proc.name()
        return f"pid {pid} [{proc.status()}] {cmdline!r}"
    except psutil.Error:
        return f"pid {pid} (gone)"


def _processes() -> Dict[ProcKey, str]:
    """Every process on the host: (pid, start time) -> its pid namespace."""
    out: Dict[ProcKey, str] = {}
    for pid in _all_pids():
        ns = _pid_ns(pid)
        key = _proc_key(pid)
        if ns is not None and key is not None:
            out[key] = ns
    return out


def _owned_by_someone_else(pid: int, our_ns: str, mine: Set[int], old: Set[ProcKey]) -> bool:
    """True when the first ancestor of ``pid`` in our pid ns is an older stranger.

    A container's processes hang below its init, whose parent is the program
    that launched it. When that launcher is neither this test process nor one
    of its descendants, existed before the test and is not pid 1 (the adopter
    of orphans), the container is another program's (a second test run, say).
    A young launcher that is not ours (the host-side monitor of another run's
    exec into its task) is looked through: its own ancestors decide.
    """
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        fields = _stat_fields(pid)
        if fields is None:
            return False
        parent = int(fields[1])
        if parent <= 1:
            return False  # an orphan: nobody owns it, so it is ours to report
        if _pid_ns(parent) == our_ns:
            if parent in mine or _proc_key(parent) in old:
                return parent not in mine
            # A young stranger: an exec's monitor, started by another run
            # during this test (its parent decides).
        pid = parent
    return False


def _cgroup_dirs() -> FrozenSet[str]:
    found: Set[str] = set()

    def walk(path: str, depth: int, below_pyexec: bool) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            inside = below_pyexec or "pyexec" in entry.name
            # The executors keep their parent cgroup (<hierarchy>/pyexec) on
            # purpose; the task cgroups below it are what must not remain.
            if inside and not (depth == 1 and entry.name == "pyexec"):
                found.add(entry.path)
            if depth < 4:
                walk(entry.path, depth + 1, inside)

    try:
        hierarchies = [e.path for e in os.scandir(CGROUP_ROOT) if e.is_dir(follow_symlinks=False)]
    except OSError:
        hierarchies = []
    for hierarchy in hierarchies:
        # On cgroup v2 the tops are cgroups: /sys/fs/cgroup/pyexec is the kept
        # parent itself, and the task cgroups right below it count.
        walk(hierarchy, 1, os.path.basename(hierarchy) == "pyexec")
    return frozenset(found)


def _state_entries() -> FrozenSet[str]:
    try:
        return frozenset(os.listdir(STATE_ROOT))
    except FileNotFoundError:
        return frozenset()


def _mount_lines() -> FrozenSet[str]:
    with open("/proc/self/mountinfo") as f:
        return frozenset(f.read().splitlines())


@dataclass
class Snapshot:
    processes: Dict[ProcKey, str]
    mounts: FrozenSet[str]
    state: FrozenSet[str]
    cgroups: FrozenSet[str]


def _snapshot(our_ns: str) -> Snapshot:
    return Snapshot(_processes(), _mount_lines(), _state_entries(), _cgroup_dirs())


def _find_leaks(before: Snapshot, our_ns: str) -> Tuple[List[str], List[int]]:
    """Human-readable leaks and the pids among them to kill."""
    leaks: List[str] = []
    pids: List[int] = []
    me = psutil.Process()
    try:
        descendants = me.children(recursive=True)
    except psutil.Error:
        descendants = []
    mine = {os.getpid()} | {p.pid for p in descendants}
    for proc in descendants:
        leaks.append(f"descendant process {_describe(proc.pid)}")
        pids.append(proc.pid)
    old = set(before.processes)
    for key, ns in _processes().items():
        pid = key[0]
        if ns == our_ns or key in old or pid in mine or _owned_by_someone_else(pid, our_ns, mine, old):
            continue
        leaks.append(f"process in another pid namespace ({ns}): {_describe(pid)}")
        pids.append(pid)
    for line in sorted(_mount_lines() - before.mounts):
        leaks.append(f"mount: {line}")
    for name in sorted(_state_entries() - before.state):
        leaks.append(f"state directory: {os.path.join(STATE_ROOT, name)}")
    for path in sorted(_cgroup_dirs() - before.cgroups):
        leaks.append(f"cgroup: {path}")
    return leaks, pids


def _kill(pids: List[int]) -> None:
    """SIGKILL leaked processes and reap the ones that are our own children."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 1.0
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # not our child (or already reaped)
            if done:
                break
            time.sleep(0.01)


def _kept_parents() -> FrozenSet[str]:
    """The executors' kept parent cgroups (<hierarchy>/pyexec) that exist now."""
    try:
        from pyexec.cgroups import parent_dirs
        return frozenset(d for d in parent_dirs() if os.path.isdir(d))
    except (ImportError, OSError):
        return frozenset()


@pytest.fixture(autouse=True, scope="session")
def no_kept_parents_left():
    """The executors keep their parent cgroup between tasks on purpose (the
    per-test check allows it), and their state root; the run as a whole must
    not leave either behind when it made it. Still occupied means a task leaked: the per-test check
    has reported that, so it is left for the operator to see."""
    before = _kept_parents()
    had_state_root = os.path.isdir(STATE_ROOT)
    yield
    made = sorted(_kept_parents() - before) + ([] if had_state_root else [STATE_ROOT])
    for directory in made:
        try:
            os.rmdir(directory)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail the test if it left processes, mounts, state dirs or cgroups behind."""
    our_ns = _pid_ns(os.getpid()) or ""
    before = _snapshot(our_ns)
    yield
    deadline = time.monotonic() + LEAK_GRACE
    while True:
        leaks, pids = _find_leaks(before, our_ns)
        if not leaks or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not leaks:
        return
    _kill(pids)
    pytest.fail("the test leaked:\n  " + "\n  ".join(leaks)
                + "\n(another pyexec run on this host at the same time shows up here too)", pytrace=False)


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


def _force_remove(path: str) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        try:
            for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except FileNotFoundError:
            pass
    for freezer in (os.path.join(d, "freezer.state") for d, _s, _f in os.walk(path)):
        if os.path.exists(freezer):
            open(freezer, "w").write("THAWED")
    time.sleep(0.2)
    for dirpath in sorted((d for d, _s, _f in os.walk(path)), key=len, reverse=True):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


@pytest.fixture
def cg() -> Iterator[str]:
    """A unique parent cgroup name; asserts that nothing of it remains afterwards."""
    parent = f"pyexec-test-{uuid.uuid4().hex[:10]}"
    yield parent
    own = open("/proc/self/cgroup").read()
    left = cgroup_leftovers(parent)
    for path in left:
        _force_remove(path)
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

