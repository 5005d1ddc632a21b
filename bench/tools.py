"""The contenders: pyexec through its API, the others through ``subprocess``.

Every tool answers the same four questions, so the sections in
``bench.sections`` treat them alike:

* ``once()``: seconds from "start /bin/true" until it has exited and the
  tool has cleaned up (pyexec: ``launch`` + ``wait``; the others:
  ``subprocess.run``);
* ``burst(n)``: seconds from starting ``n`` tasks at once until all exited;
* ``start_sleepers(n)`` / ``helpers()`` / ``stop_sleepers()``: ``n`` running
  ``sleep`` tasks and, per task, the pids of the tool's own processes that
  stay alive next to the task (pyexec's monitor, a foreground runc, ...).

Nothing here touches pyexec's default state root or cgroup parent, and no
mount appears in the host's mount namespace: pyexec's and the runtimes' mounts
live in the tasks' own namespaces, and crun runs in a private mount namespace
of the bench where the hybrid host's cgroup2 mount is covered (see
``private_cgroup_view``); the peers' long-lived tasks run in a pid namespace
of the bench (``PidShelter``) so that a test suite's leak check next to us
does not take them for its own leaks.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Sequence

import psutil

from . import bundle as oci

__all__ = ["Workspace", "Tool", "PyexecTool", "SubprocessTool", "UnshareTool", "BwrapTool",
           "RuncTool", "CrunTool", "all_tools", "Namespaces", "PidShelter", "STATE_ROOT", "CGROUP_PARENT"]

STATE_ROOT = "/run/pxbench"          # pyexec's state root for every bench task
CGROUP_PARENT = "pxbench"            # pyexec's, runc's and crun's cgroup parent
PEER_ROOT = "/run/pxbench-peers"     # runc/crun state, bundles
TASK_ROOT = "/tmp/pxbench"           # pyexec task directories
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
SLEEP_SECONDS = "600"
UNIFIED = "/sys/fs/cgroup/unified"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        threads = len(os.listdir("/proc/self/task"))
        raise OSError(err, f"setns({nstype:#x}): {os.strerror(err)} ({threads} threads in this process)")


class Namespaces:
    """A mount namespace and/or a pid namespace (for children) to run commands
    in, entered with setns() around ``subprocess`` calls, outside every timing.

    setns() into a mount namespace needs a single-threaded process, which the
    bench is whenever a peer runs (matplotlib, which starts a thread, is only
    imported at the very end). Both fds keep their namespace alive.
    """

    def __init__(self, mnt_fd: int = -1, pid_fd: int = -1) -> None:
        self.mnt_fd, self.pid_fd = mnt_fd, pid_fd
        self._host_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self._host_pid = os.open("/proc/self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        cwd = os.getcwd()
        if self.pid_fd >= 0:
            _setns(self.pid_fd, CLONE_NEWPID)
        try:
            if self.mnt_fd >= 0:
                _setns(self.mnt_fd, CLONE_NEWNS)
            try:
                yield
            finally:
                if self.mnt_fd >= 0:
                    _setns(self._host_mnt, CLONE_NEWNS)
                    os.chdir(cwd)
        finally:
            if self.pid_fd >= 0:
                _setns(self._host_pid, CLONE_NEWPID)

    def close(self) -> None:
        for fd in (self.mnt_fd, self.pid_fd, self._host_mnt, self._host_pid):
            if fd >= 0:
                os.close(fd)
        self.mnt_fd = self.pid_fd = self._host_mnt = self._host_pid = -1


def _holder(script: str) -> subprocess.Popen:
    """``unshare --mount`` running ``script`` (mounts, then ``echo ready``) and
    staying alive in its private mount namespace (/proc/<pid>/ns/mnt)."""
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"{script} && echo ready && exec sleep infinity"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    ready = holder.stdout.readline().strip() == "ready"
    holder.stdout.close()
    if not ready:
        holder.kill()
        holder.wait()
        raise RuntimeError(f"could not prepare a private mount namespace ({script})")
    return holder


def _ns_fd(pid: int, kind: str) -> int:
    """An fd of /proc/<pid>/ns/<kind> (read in the host's /proc: call it outside ``entered``)."""
    return os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)


def cover_unified_script(path: str = UNIFIED) -> str:
    return f"mount -t tmpfs -o size=16m,mode=0755 pxbench-empty {path}"


def private_cgroup_view() -> Namespaces:
    """A private mount namespace where the hybrid host's cgroup2 mount is
    covered by an empty tmpfs, for crun.

    crun 1.8 refuses a hybrid host whose cgroup2 side holds a v1 controller
    (hugetlb here: "cgroups in hybrid mode not supported"); with the cgroup2
    mount hidden it sees a plain v1 host. The mount never reaches the host's
    namespace.
    """
    holder = _holder(cover_unified_script())
    try:
        return Namespaces(mnt_fd=_ns_fd(holder.pid, "mnt"))
    finally:
        holder.kill()  # the fd keeps the namespace
        holder.wait()


def crun_needs_cover(path: str = UNIFIED) -> bool:
    from pyexec.cgroups import detect_mode

    try:
        with open(os.path.join(path, "cgroup.controllers")) as f:
            return detect_mode() == "hybrid" and bool(f.read().split())
    except OSError:
        return False


class PidShelter:
    """A pid namespace below ours (with its own /proc, in a private mount
    namespace) for the peers' long-lived tasks.

    A test suite running next to the bench (pyexec's conftest) reports, and
    kills, any new process in a foreign pid namespace whose first ancestor in
    its own namespace is younger than the test: the container of a ``runc
    run`` started meanwhile, say. The peers' long-lived tasks (helper memory,
    shutdown, stats) start inside this namespace instead, so their first
    host-side ancestor is the bench process itself, older than any such test.
    Its pid 1 is a child of the bench, made by unshare(CLONE_NEWPID) here and
    kept until ``close``. pyexec's tasks need none of this: their monitors
    are the bench's own children.

    runc reads /proc/<pid> with the pids of its own namespace, so the shelter
    mounts a /proc of the new namespace (privately); crun gets a second mount
    namespace, a copy of it with the cgroup2 mount covered as well.
    """

    def __init__(self) -> None:
        self.holders: List[subprocess.Popen] = []
        self.plain: Optional[Namespaces] = None
        self.crun: Optional[Namespaces] = None

    def open(self) -> None:
        own = os.open("/proc/self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.unshare(CLONE_NEWPID) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWPID): {os.strerror(err)}")
            try:
                # The first child is the namespace's pid 1.
                self.holders.append(_holder("mount -t proc -o nosuid,nodev,noexec proc /proc"))
            finally:
                _setns(own, CLONE_NEWPID)
        finally:
            os.close(own)
        init = self.holders[0].pid
        self.plain = Namespaces(mnt_fd=_ns_fd(init, "mnt"), pid_fd=_ns_fd(init, "pid"))
        if crun_needs_cover():
            with self.plain.entered():
                self.holders.append(_holder(cover_unified_script()))
            self.crun = Namespaces(mnt_fd=_ns_fd(self.holders[-1].pid, "mnt"), pid_fd=_ns_fd(init, "pid"))

    def entered(self, crun: bool = False):
        if self.plain is None:
            self.open()
        assert self.plain is not None
        return (self.crun if crun and self.crun is not None else self.plain).entered()

    def close(self) -> None:
        # Kill all, then reap all: a dying pid 1 waits until every other
        # process of its namespace is reaped, and they are our children too.
        for holder in self.holders:
            holder.kill()
        for holder in reversed(self.holders):
            holder.wait()
        self.holders = []
        for ns in (self.plain, self.crun):
            if ns is not None:
                ns.close()
        self.plain = self.crun = None


def settle(min_age: float = 15.0, log=None) -> None:
    """Wait until this process is ``min_age`` seconds old before it starts
    long-lived tasks: a concurrent test's leak check counts a foreign-namespace
    process as someone else's only when its host-side ancestor (this process)
    is older than the test, and no test of the suite runs that long."""
    age = time.time() - psutil.Process().create_time()
    if age < min_age:
        if log is not None:
            log(f"bench: waiting {min_age - age:.0f} s before long-lived tasks (see tools.settle)")
        time.sleep(min_age - age)


class Workspace:
    """Directories the bench owns; ``cleanup`` removes them and the empty cgroup parents."""

    def __init__(self) -> None:
        for path in (STATE_ROOT, PEER_ROOT, TASK_ROOT):
            os.makedirs(path, exist_ok=True)
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._ids = itertools.count()
        self.shelter = PidShelter()

    def new_id(self, tool: str) -> str:
        return f"pxb-{tool}-{os.getpid()}-{next(self._ids)}"

    def task_dir(self, name: str) -> str:
        path = os.path.join(TASK_ROOT, name)
        os.makedirs(os.path.join(path, "local"), exist_ok=True)
        return path

    def cleanup(self) -> None:
        self.shelter.close()
        os.close(self.devnull)
        for path in (TASK_ROOT, PEER_ROOT):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(STATE_ROOT)  # only when empty: a leftover is worth seeing
        remove_cgroup_parent(CGROUP_PARENT)


def remove_cgroup_parent(parent: str) -> None:
    """rmdir the (empty) parent cgroup in every hierarchy; leaves non-empty ones."""
    from pyexec.cgroups.v1 import v1_mounts

    for mount in sorted(set(v1_mounts().values())):
        path = os.path.join(mount, parent)
        if os.path.isdir(path):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def helper_pids(root_pid: int, task_names: Sequence[str] = ("sleep",)) -> List[int]:
    """``root_pid`` and its descendants, minus the task's own processes."""
    try:
        root = psutil.Process(root_pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for proc in procs:
        try:
            if proc.name() not in task_names:
                out.append(proc.pid)
        except psutil.Error:
            pass
    return out


def _has_task(root_pid: int, name: str = "sleep") -> bool:
    try:
        return any(p.name() == name for p in psutil.Process(root_pid).children(recursive=True))
    except psutil.Error:
        return False


class Tool:
    """One contender. ``label`` names it in tables; ``isolation`` says what it sets up."""

    name = "tool"
    label = "tool"
    isolation = ""
    peer = True  # False for pyexec itself

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.sleepers: List[object] = []

    def unavailable(self) -> Optional[str]:
        """Why this tool cannot run here, or None."""
        return None

    def prepare(self, burst: int, sleepers: int) -> None:
        """One-time set-up outside every timing (bundles, task directories)."""

    def once(self) -> float:
        raise NotImplementedError

    def burst(self, n: int) -> float:
        raise NotImplementedError

    def start_sleepers(self, n: int) -> None:
        raise NotImplementedError

    def helpers(self) -> List[List[int]]:
        """Per running sleeper: pids of the tool's own processes next to it."""
        raise NotImplementedError

    def stop_sleepers(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Undo ``prepare``."""


# ----------------------------------------------------------------------------- pyexec

class PyexecTool(Tool):
    name = "pyexec"
    label = "pyexec"
    isolation = "pid/mnt/uts/ipc/net ns, cgroup limits, host-mirror ro root, pivot_root, seccomp, no_new_privs"
    peer = False

    def __init__(self, ws: Workspace, threads: Optional[int] = None, logs: bool = False) -> None:
        """``threads``: None launches a burst from this thread; 0 gives every
        task its own thread; k > 0 runs a burst on a pool of k threads.
        ``logs``: the task's stdout/stderr go to pyexec's default rotated log
        files through the monitor (else to /dev/null, like the peers')."""
        super().__init__(ws)
        from pyexec import ExecCommand, Resources, new_executor
        self._ExecCommand, self._new_executor = ExecCommand, new_executor
        self.resources = Resources(memory="64M", pids=64, cpu_shares=512)
        self.threads = threads
        self.logs = logs
        if logs:
            self.name, self.label = "pyexec-logs", "pyexec (default log files)"
        elif threads == 0:
            self.name, self.label = "pyexec-threads", "pyexec (a thread per task)"
        elif threads is not None:
            self.name, self.label = f"pyexec-pool{threads}", f"pyexec ({threads} threads)"

    def executor(self, kind: str = "container", **options):
        return self._new_executor(kind, state_root=STATE_ROOT, cgroup_parent=CGROUP_PARENT, **options)

    def command(self, argv: Sequence[str], task_dir: str, quiet: bool = True, **fields):
        stdio = (self.ws.devnull,) * 3 if quiet else None
        return self._ExecCommand(argv=list(argv), task_dir=task_dir, name=os.path.basename(task_dir),
                                 resources=fields.pop("resources", self.resources), stdio_fds=stdio, **fields)

    def prepare(self, burst: int, sleepers: int) -> None:
        self._once_dir = self.ws.task_dir("pxb-true")
        self._burst_dirs = [self.ws.task_dir(f"pxb-burst{i}") for i in range(burst)]
        self._sleep_dirs = [self.ws.task_dir(f"pxb-sleep{i}") for i in range(sleepers)]

    def _run_true(self, task_dir: str) -> None:
        ex = self.executor()
        ex.launch(self.command(["/bin/true"], task_dir, quiet=not self.logs))
        result = ex.wait()
        if result.exit_code != 0:
            raise RuntimeError(f"pyexec: /bin/true exited {result.exit_code}")

    def once(self) -> float:
        start = time.perf_counter()
        self._run_true(self._once_dir)
        return time.perf_counter() - start

    def burst(self, n: int) -> float:
        dirs = self._burst_dirs[:n]
        if self.threads is not None:
            # Each task: its own executor, launched and waited in a worker thread.
            workers = n if self.threads == 0 else self.threads
            gate = threading.Barrier(workers + 1)

            def warm() -> None:
                gate.wait()

            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in range(workers):  # start every worker before the clock
                    pool.submit(warm)
                gate.wait()
                start = time.perf_counter()
                for future in [pool.submit(self._run_true, d) for d in dirs]:
                    future.result()
                elapsed = time.perf_counter() - start
            return elapsed
        # Launch all from this thread (each launch returns once its task has
        # exec'd, so the tasks run side by side), then wait for every one.
        start = time.perf_counter()
        executors = []
        for task_dir in dirs:
            ex = self.executor()
            ex.launch(self.command(["/bin/true"], task_dir))
            executors.append(ex)
        for ex in executors:
            if ex.wait().exit_code != 0:
                raise RuntimeError("pyexec: /bin/true failed")
        return time.perf_counter() - start

    def start_sleepers(self, n: int) -> None:
        for task_dir in self._sleep_dirs[:n]:
            ex = self.executor()
            # Default logs: the monitor pumps stdout/stderr (what a real task has).
            ex.launch(self.command(["sleep", SLEEP_SECONDS], task_dir, quiet=False))
            self.sleepers.append(ex)

    def helpers(self) -> List[List[int]]:
        return [helper_pids(ex.pid) for ex in self.sleepers]

    def stop_sleepers(self) -> None:
        for ex in self.sleepers:
            ex.shutdown(grace=0)
        self.sleepers = []


# ----------------------------------------------------------------------------- peers

class SubprocessTool(Tool):
    """A peer started with ``subprocess``; subclasses give the argv."""

    name = "subprocess"
    label = "subprocess.run (bare)"
    isolation = "none (floor)"
    program = "/bin/true"

    def unavailable(self) -> Optional[str]:
        return None if shutil.which(self.program) else f"{self.program} is not installed"

    def argv(self, slot: str, command: Sequence[str]) -> List[str]:
        return list(command)

    def context(self, long_lived: bool = False):
        """Where the tool's commands run: long-lived tasks in the bench's pid
        shelter (see ``PidShelter``); crun where the cgroup2 mount is covered."""
        if long_lived:
            return self.ws.shelter.entered(crun=self.name == "crun")
        view = self.mount_view()
        return view.entered() if view is not None else contextlib.nullcontext()

    def mount_view(self) -> Optional[Namespaces]:
        return None

    def _popen(self, argv: List[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdin=self.ws.devnull, stdout=self.ws.devnull, stderr=self.ws.devnull)

    def once(self) -> float:
        argv = self.argv("once", ["/bin/true"])
        with self.context():
            start = time.perf_counter()
            rc = subprocess.run(argv, stdin=self.ws.devnull, stdout=self.ws.devnull,
                                stderr=self.ws.devnull).returncode
            elapsed = time.perf_counter() - start
        if rc != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {rc}")
        return elapsed

    def burst(self, n: int) -> float:
        argvs = [self.argv(f"burst{i}", ["/bin/true"]) for i in range(n)]
        with self.context():
            start = time.perf_counter()
            procs = [self._popen(argv) for argv in argvs]
            codes = [p.wait() for p in procs]
            elapsed = time.perf_counter() - start
        if any(codes):
            raise RuntimeError(f"{self.name}: burst exit codes {sorted(set(codes))}")
        return elapsed

    def start_sleepers(self, n: int) -> None:
        with self.context(long_lived=True):
            for i in range(n):
                self.sleepers.append(self._popen(self.argv(f"sleep{i}", ["sleep", SLEEP_SECONDS])))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(_has_task(p.pid) for p in self.sleepers):
            if any(p.poll() is not None for p in self.sleepers):
                raise RuntimeError(f"{self.name}: a sleeper exited at start")
            time.sleep(0.05)

    def helpers(self) -> List[List[int]]:
        return [helper_pids(p.pid) for p in self.sleepers]

    def stop_sleepers(self) -> None:
        # SIGKILL each task's sleep from the host (as pid 1 of its namespace it
        # ignores SIGTERM); the tool's own process then sees it die and cleans up.
        for p in self.sleepers:
            try:
                for child in psutil.Process(p.pid).children(recursive=True):
                    if child.name() == "sleep":
                        child.kill()
            except psutil.Error:
                pass
        for p in self.sleepers:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.sleepers = []


class UnshareTool(SubprocessTool):
    name = "unshare"
    label = "unshare (5 ns, floor)"
    isolation = "pid/mnt/uts/ipc/net ns only (util-linux unshare --fork)"
    program = "unshare"

    def argv(self, slot: str, command: Sequence[str]) -> List[str]:
        return ["unshare", "--pid", "--mount", "--uts", "--ipc", "--net", "--fork"] + list(command)


class BwrapTool(SubprocessTool):
    name = "bwrap"
    label = "bubblewrap"
    isolation = "pid/mnt/uts/ipc/net ns, host-mirror ro root; no cgroup limits (bwrap has none), no seccomp"
    program = "bwrap"

    def argv(self, slot: str, command: Sequence[str]) -> List[str]:
        args = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                "--new-session", "--die-with-parent", "--hostname", "pxbench"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc"):
            host = f"/{name}"
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind", host, host]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                 "--remount-ro", "/", "--cap-drop", "ALL"]
        for cap in oci.DOCKER_CAPS:
            args += ["--cap-add", cap]
        return args + ["--"] + list(command)


class _OciTool(SubprocessTool):
    """runc and crun: ``<runtime> --root R run --bundle B <id>`` in the foreground
    (it returns once the container has exited and been deleted)."""

    def __init__(self, ws: Workspace) -> None:
        super().__init__(ws)
        self.root = os.path.join(PEER_ROOT, self.name)
        self.bundles = os.path.join(PEER_ROOT, f"{self.name}-bundles")
        self.rootfs = os.path.join(PEER_ROOT, "rootfs")

    def unavailable(self) -> Optional[str]:
        from .env import busybox_static

        if shutil.which(self.program) is None:
            return f"{self.program} is not installed"
        if busybox_static() is None:
            return "busybox-static is not installed (the bundle's rootfs)"
        return None

    def _bundle(self, slot: str, args: Sequence[str], **limits) -> str:
        path = os.path.join(self.bundles, slot)
        config = oci.oci_config(args, self.rootfs, f"/{CGROUP_PARENT}/{self.name}-{slot}", **limits)
        return oci.write_bundle(path, config)

    def prepare(self, burst: int, sleepers: int) -> None:
        from .env import busybox_static

        os.makedirs(self.root, exist_ok=True)
        oci.make_rootfs(self.rootfs, busybox_static())
        self._bundle("once", ["/bin/true"])
        for i in range(burst):
            self._bundle(f"burst{i}", ["/bin/true"])
        for i in range(sleepers):
            self._bundle(f"sleep{i}", ["sleep", SLEEP_SECONDS])

    def argv(self, slot: str, command: Sequence[str]) -> List[str]:
        return [self.program, "--root", self.root, "run", "--bundle", os.path.join(self.bundles, slot),
                self.ws.new_id(self.name)]

    def close(self) -> None:
        # Containers left by an interrupted run.
        if os.path.isdir(self.root) and os.listdir(self.root):
            with self.context(long_lived=self.ws.shelter.plain is not None):
                for cid in os.listdir(self.root):
                    subprocess.run([self.program, "--root", self.root, "delete", "--force", cid],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class RuncTool(_OciTool):
    name = "runc"
    label = "runc"
    isolation = "OCI bundle: pid/mnt/uts/ipc/net ns, cgroup limits, busybox ro root, pivot_root, seccomp, no_new_privs"
    program = "runc"


class CrunTool(_OciTool):
    name = "crun"
    label = "crun"
    isolation = RuncTool.isolation
    program = "crun"

    def __init__(self, ws: Workspace) -> None:
        super().__init__(ws)
        self._cover = crun_needs_cover()
        self.view: Optional[Namespaces] = None

    def mount_view(self) -> Optional[Namespaces]:
        if self._cover and self.view is None:
            self.view = private_cgroup_view()
        return self.view

    def close(self) -> None:
        super().close()
        if self.view is not None:
            self.view.close()


def all_tools(ws: Workspace) -> List[Tool]:
    """The latency/throughput line-up, pyexec first."""
    return [PyexecTool(ws), SubprocessTool(ws), UnshareTool(ws), BwrapTool(ws), CrunTool(ws), RuncTool(ws)]
