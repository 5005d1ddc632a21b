"""The thin layer over the C shim: a ``SpawnPlan`` in, a started child out.

It owns the translation of Python values into ``struct px_config`` (keeping
every C string alive until the child has exec'd: by default it runs in the
caller's own memory), the launch itself (``px_spawn``: clone, cgroup
placement, release, the wait for the exec), finishing a child parked for the
caller's own work (``finish``), and turning the child's error record into a
``LaunchError``. Failures of the parent's own calls are ``OSError``s naming
the call, like benchexec's libc layer.

``struct px_config`` is declared once, in csrc/pyexec.h. ``_fill`` copies
every field that has a ``SpawnPlan`` field of the same name generically
(found at import in cffi's view of the struct); only the fields that need a
conversion are filled by hand, and ``_CONVERTED`` lists them.
tests/test_shim_config.py fails when a C field has neither, or when a field of
the plan is never read.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import os
import signal
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .caps import last_cap
from .errors import LaunchError
from .native import ffi, lib
from .rootfs import MountOp

__all__ = ["SpawnPlan", "Credentials", "CapabilitySets", "Child", "spawn", "finish", "abort", "abort_setup"]

# Children run in the caller's memory (CLONE_VM on a stack of their own) where
# csrc/spawn.c supports it; False makes every child a copy (fork-style), which
# tests use to cover that path too.
SHARE_MEMORY = True


@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: Tuple[int, ...]


@dataclass(frozen=True)
class CapabilitySets:
    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int
    last_cap: int


@dataclass
class MonitorPlan:
    """What the init's successor, pyexec-monitor, gets (fds are the caller's;
    -1 = not used). See the PX_MON_FD_* numbers in csrc/pyexec.h."""

    exe_fd: int                      # O_PATH fd of the pyexec-monitor executable
    state_dir_fd: int = -1
    log_dir_fd: int = -1
    stdout_fd: int = -1              # read end of the task's stdout pipe
    stderr_fd: int = -1
    lifeline_fd: int = -1            # read end of the caller's lifeline pipe
    log_name: str = "task"
    log_max_size: int = 10 << 20
    log_max_files: int = 10


@dataclass
class SpawnPlan:
    """Everything the child does, decided in advance; see csrc/pyexec.h for
    meanings. A field named like a struct px_config field (an integer, a bool
    or a string) is copied into it as it is; the others are in _CONVERTED."""

    program: str
    argv: Sequence[str]
    env: Sequence[str]                       # "KEY=value" strings
    search_path: str
    clone_flags: int = 0
    use_init: bool = False
    subreaper: bool = False
    monitor: Optional["MonitorPlan"] = None  # required with use_init
    wait_for_parent: bool = False           # park at the start until finish(): the caller's work (id maps, veth)
    hold_task: bool = False                 # wait only before the task starts, while the shim places it
    cgroup_fd: int = -1
    place_paths: Sequence[str] = ()         # cgroup.procs files the shim writes the child's pid into
    hostname: Optional[str] = None
    loopback_up: bool = False
    make_private: bool = False
    mounts: Sequence[MountOp] = ()
    rlimits: Sequence[Tuple[int, int, int, str]] = ()   # (RLIMIT_*, soft, hard, name)
    credentials: Optional[Credentials] = None
    capabilities: Optional[CapabilitySets] = None
    no_new_privs: bool = True
    seccomp_filter: Optional[bytes] = None   # packed struct px_bpf_insn array (pyexec.seccomp)
    seccomp_flags: int = 0                   # SECCOMP_FILTER_FLAG_* of its seccomp(2) call
    seccomp_listener_fd: int = -1            # socket the SCMP_ACT_NOTIFY listener is sent over
    join_pidfd: int = -1                     # exec into the task of this pidfd (setns)
    set_ctty: bool = False                   # stdin is a tty: make it the controlling terminal
    # (fd, CLONE_NEW* type) pairs: namespaces to join by setns(), first thing after the go (user first,
    # mount last); a pid namespace is joined by px_spawn itself for the clone (Isolation.network netns:,
    # OCI linux.namespaces[].path). The fds are the caller's; the child needs them only until it joined.
    join_namespaces: Sequence[Tuple[int, int]] = ()
    domainname: Optional[str] = None         # setdomainname next to hostname; like it, only with a uts ns of its own
    # (key, value): /proc/sys/<key, dots as slashes> written in the child's own namespaces, before the mounts
    sysctls: Sequence[Tuple[str, str]] = ()
    oom_score_adj: Optional[int] = None
    stdio: Tuple[int, int, int] = (-1, -1, -1)
    # A connected AF_UNIX stream socket: the task sends its pty master over it and the slave becomes its
    # stdio and controlling terminal instead of ``stdio``; the size unless both are 0 (csrc/console.c).
    console_socket_fd: int = -1
    console_rows: int = 0
    console_cols: int = 0
    personality: Optional[int] = None        # personality(2) before the exec (PER_LINUX, PER_LINUX32)
    umask: Optional[int] = None              # None: the caller's
    # use_init=False only: once set up, the task reads one byte from this fd before its exec (EOF: it
    # exits 127), and spawn() returns as soon as it waits; see csrc/pyexec.h
    start_fd: int = -1
    # fds 3..3+preserve_fds-1 of the caller stay open in the task (OCI --preserve-fds); the fds the caller
    # opens for the child must be above them (the task fails otherwise): see csrc/pyexec.h
    preserve_fds: int = 0
    cwd: Optional[str] = None


class Child:
    """The parent's view of a cloned child. It holds the C config (and every
    string it points to) until the launch is over: the child may be running in
    this process's memory until then. fds are the caller's to close."""

    def __init__(self, state: Any, keep: "_Keep", cfg: Any, place_paths: Sequence[str] = ()) -> None:
        self._state = state          # struct px_child *
        self._keep: Optional[_Keep] = keep
        self._cfg = cfg              # struct px_config *, None once the launch is over
        self.place_paths = tuple(place_paths)

    @property
    def pid(self) -> int:
        return int(self._state.pid)

    @property
    def task_pid(self) -> int:
        """Host pid of the process that execs the program: ``pid`` without an init, the fork of an
        init-less join of a pid namespace (a child of this process: the caller reaps ``pid``, the
        intermediate, and this one), 0 with an init, -1 when not known."""
        return int(self._state.task_pid)

    @property
    def pidfd(self) -> int:
        return int(self._state.pidfd)

    @property
    def status_fd(self) -> int:
        return int(self._state.status_fd)

    @property
    def parked(self) -> bool:
        return bool(self._state.parked)

    def _release_memory(self) -> None:
        if self._state.done:
            self._keep = self._cfg = None


# C copies of the strings plans repeat (host paths, mount types and options,
# masked paths): a plan has ~250, most the same at every launch. The child
# only reads them; each launch's _Keep holds its own, so clearing is safe.
_C_STRINGS: Dict[str, object] = {}
_C_STRINGS_MAX = 4096


class _Keep:
    """Holds cdata for as long as the child may read it."""

    def __init__(self) -> None:
        self.items: List[Any] = []

    def cstr(self, value: Optional[str]) -> Any:
        if value is None:
            return ffi.NULL
        data = _C_STRINGS.get(value)
        if data is None:
            if len(_C_STRINGS) >= _C_STRINGS_MAX:
                _C_STRINGS.clear()
            data = _C_STRINGS[value] = ffi.new("char[]", os.fsencode(value))
        self.items.append(data)
        return data

    def strv(self, values: Sequence[str]) -> Any:
        pointers = [self.cstr(v) for v in values] + [ffi.NULL]
        array = ffi.new("char *[]", pointers)
        self.items.append(array)
        return array


@functools.lru_cache(maxsize=None)
def caller_areas() -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(arg_start, arg_end), (env_start, env_end) of this process, from /proc/self/stat."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # Fields 48-51 of proc(5); the split starts at field 3 (state).
        values = [int(fields[i - 3]) for i in (48, 49, 50, 51)]
    except (OSError, IndexError, ValueError):
        return (0, 0), (0, 0)
    return (values[0], values[1]), (values[2], values[3])


def _is_integer(ctype: Any) -> bool:
    return ctype.kind == "primitive" and ctype.cname not in ("char", "float", "double", "long double", "_Bool")


def _generic_fields(converted: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(integer fields, string fields) of struct px_config that ``_fill`` copies
    from the ``SpawnPlan`` field of the same name: integers (Python bools are
    ints to cffi) and arrays of them as they are, ``char *`` through ``_Keep``."""
    plan_fields = {f.name for f in dataclasses.fields(SpawnPlan)}
    integers, strings = [], []
    for name, field in ffi.typeof("struct px_config").fields:
        ctype = field.type
        if name in converted or name not in plan_fields:
            continue
        if _is_integer(ctype) or ctype.kind == "array" and _is_integer(ctype.item):
            integers.append(name)
        elif ctype.kind == "pointer" and ctype.item.cname == "char":
            strings.append(name)
    return tuple(integers), tuple(strings)


# The fields of struct px_config that _fill sets by hand, and from what: the
# ones with no plan field of their name, or whose value needs converting.
_CONVERTED: Dict[str, str] = {
    "monitor_exe_fd": "plan.monitor.exe_fd; -1 without a monitor",
    "monitor_fds": "the MonitorPlan's fds, [0] left to px_spawn (the status pipe)",
    "log_name": "plan.monitor.log_name",
    "log_max_size": "plan.monitor.log_max_size",
    "log_max_files": "plan.monitor.log_max_files",
    "place_paths": "plan.place_paths as a NULL-terminated char *[]",
    "n_place_paths": "len(plan.place_paths)",
    "share_memory": "SHARE_MEMORY of this module, not the plan",
    "mounts": "plan.mounts as struct px_mount_op[]",
    "n_mounts": "len(plan.mounts)",
    "rlimits": "plan.rlimits as struct px_rlimit[]",
    "n_rlimits": "len(plan.rlimits)",
    "set_user": "plan.credentials is not None",
    "uid": "plan.credentials.uid",
    "gid": "plan.credentials.gid",
    "groups": "plan.credentials.groups as uint32_t[]",
    "n_groups": "len(plan.credentials.groups)",
    "set_caps": "plan.capabilities is not None",
    "last_cap": "plan.capabilities.last_cap, else this kernel's (caps.last_cap)",
    "cap_bounding": "plan.capabilities.bounding",
    "cap_effective": "plan.capabilities.effective",
    "cap_permitted": "plan.capabilities.permitted",
    "cap_inheritable": "plan.capabilities.inheritable",
    "cap_ambient": "plan.capabilities.ambient",
    "caller_args": "this process's argv area (caller_areas), with an init",
    "caller_env": "this process's environ area (caller_areas), with an init",
    "seccomp_filter": "plan.seccomp_filter (packed instructions) as struct px_bpf_insn[]",
    "seccomp_len": "the number of instructions in plan.seccomp_filter",
    "join_namespaces": "plan.join_namespaces as struct px_ns_join[]",
    "n_join_namespaces": "len(plan.join_namespaces)",
    "sysctls": "plan.sysctls as struct px_sysctl[]",
    "n_sysctls": "len(plan.sysctls)",
    "personality": "plan.personality; None: 0, not set",
    "set_personality": "plan.personality is not None",
    "umask": "plan.umask; None: 0, not set",
    "set_umask": "plan.umask is not None",
    "oom_score_adj": "plan.oom_score_adj; None: 0, not set",
    "set_oom_score": "plan.oom_score_adj is not None",
    "argv": "plan.argv as a NULL-terminated char *[]",
    "envp": "plan.env as a NULL-terminated char *[]",
}
# Found once, at import: _fill runs at every launch.
_COPIED, _STRINGS = _generic_fields(tuple(_CONVERTED))


def _fill(plan: SpawnPlan, keep: _Keep) -> Any:
    """A struct px_config * for ``plan``; ``keep`` holds it and all it points to."""
    cfg = ffi.new("struct px_config *")
    keep.items.append(cfg)
    _fill_config(cfg, plan, keep)
    return cfg


def _fill_config(cfg: Any, plan: SpawnPlan, keep: _Keep) -> None:
    """Set every field of ``cfg``: the generic ones, then those of _CONVERTED
    (tests/test_shim_config.py records which, so assign whole fields only)."""
    for name in _COPIED:
        setattr(cfg, name, getattr(plan, name))
    for name in _STRINGS:
        setattr(cfg, name, keep.cstr(getattr(plan, name)))

    cfg.place_paths = keep.strv(plan.place_paths)
    cfg.n_place_paths = len(plan.place_paths)
    cfg.share_memory = SHARE_MEMORY

    ops = ffi.new("struct px_mount_op[]", max(1, len(plan.mounts)))
    keep.items.append(ops)
    for i, op in enumerate(plan.mounts):
        ops[i].kind = op.kind
        ops[i].bind_flags = op.bind_flags
        ops[i].flags = op.flags
        ops[i].source = keep.cstr(op.source)
        ops[i].target = keep.cstr(op.target)
        ops[i].fstype = keep.cstr(op.fstype)
        ops[i].data = keep.cstr(op.data)
    cfg.mounts = ops
    cfg.n_mounts = len(plan.mounts)

    limits = ffi.new("struct px_rlimit[]", max(1, len(plan.rlimits)))
    keep.items.append(limits)
    for i, (resource, soft, hard, name) in enumerate(plan.rlimits):
        limits[i].resource = resource
        limits[i].soft = soft
        limits[i].hard = hard
        limits[i].name = keep.cstr(name)
    cfg.rlimits = limits
    cfg.n_rlimits = len(plan.rlimits)

    if plan.credentials is not None:
        creds = plan.credentials
        groups = ffi.new("uint32_t[]", list(creds.groups) or [creds.gid])
        keep.items.append(groups)
        cfg.set_user = 1
        cfg.uid, cfg.gid = creds.uid, creds.gid
        cfg.groups, cfg.n_groups = groups, len(creds.groups)
    if plan.capabilities is not None:
        caps = plan.capabilities
        cfg.set_caps = 1
        cfg.last_cap = caps.last_cap
        cfg.cap_bounding = caps.bounding
        cfg.cap_effective = caps.effective
        cfg.cap_permitted = caps.permitted
        cfg.cap_inheritable = caps.inheritable
        cfg.cap_ambient = caps.ambient
    else:
        cfg.last_cap = last_cap()
    cfg.seccomp_filter = ffi.NULL
    cfg.seccomp_len = 0
    if plan.seccomp_filter:
        size = ffi.sizeof("struct px_bpf_insn")
        if len(plan.seccomp_filter) % size:
            raise ValueError("seccomp_filter is not a whole number of BPF instructions")
        insns = ffi.new("struct px_bpf_insn[]", len(plan.seccomp_filter) // size)
        ffi.memmove(insns, plan.seccomp_filter, len(plan.seccomp_filter))
        keep.items.append(insns)
        cfg.seccomp_filter = insns
        cfg.seccomp_len = len(plan.seccomp_filter) // size
    cfg.monitor_exe_fd = -1
    cfg.monitor_fds = [-1] * 6
    if plan.use_init:
        mon = plan.monitor
        if mon is None:
            raise ValueError("use_init needs a MonitorPlan")
        args, env = caller_areas()
        cfg.caller_args = args
        cfg.caller_env = env
        cfg.monitor_exe_fd = mon.exe_fd
        # [0] is the status pipe, which px_spawn makes itself.
        cfg.monitor_fds = [-1, mon.state_dir_fd, mon.log_dir_fd, mon.stdout_fd, mon.stderr_fd, mon.lifeline_fd]
        cfg.log_name = keep.cstr(mon.log_name)
        cfg.log_max_size = mon.log_max_size
        cfg.log_max_files = mon.log_max_files
    if plan.oom_score_adj is not None:
        cfg.set_oom_score = 1
        cfg.oom_score_adj = plan.oom_score_adj
    # The rest is off in the executors' plans: a test each, nothing allocated.
    if plan.join_namespaces:
        joins = ffi.new("struct px_ns_join[]", list(plan.join_namespaces))
        keep.items.append(joins)
        cfg.join_namespaces = joins
        cfg.n_join_namespaces = len(plan.join_namespaces)
    if plan.sysctls:
        sysctls = ffi.new("struct px_sysctl[]", [(keep.cstr(k), keep.cstr(v)) for k, v in plan.sysctls])
        keep.items.append(sysctls)
        cfg.sysctls = sysctls
        cfg.n_sysctls = len(plan.sysctls)
    if plan.personality is not None:
        cfg.set_personality = 1
        cfg.personality = plan.personality
    if plan.umask is not None:
        cfg.set_umask = 1
        cfg.umask = plan.umask
    cfg.argv = keep.strv(plan.argv)
    cfg.envp = keep.strv(plan.env)


def spawn(plan: SpawnPlan) -> Child:
    """Launch the child: clone, place it (``plan.place_paths``), release it and
    wait until its task has exec'd; check the outcome with ``finish``. With
    ``plan.wait_for_parent`` it comes back parked instead: do the work it
    waits for, then ``finish`` it (or ``abort``). Raises OSError when the
    clone itself fails (then nothing is left)."""
    keep = _Keep()
    cfg = _fill(plan, keep)
    out = ffi.new("struct px_child *")
    rc = lib.px_spawn(cfg, out)
    if rc < 0:
        if out.err.step:  # the launching thread's setns() into a pid namespace to join
            raise LaunchError(ffi.string(lib.px_step_name(out.err.step)).decode(),
                              ffi.string(out.err.detail).decode(errors="replace"), -rc)
        raise OSError(-rc, f"clone3: {os.strerror(-rc)}")
    child = Child(out, keep, cfg, plan.place_paths)
    child._release_memory()
    return child


def finish(child: Child) -> None:
    """Release a parked child and wait for its exec; then (for any child)
    raise what went wrong: ``LaunchError`` for a failed step of the child,
    ``OSError`` for a failed placement write. A failed child is killed; reap
    it with ``abort``."""
    state = child._state
    if not state.done:
        lib.px_finish(child._cfg, state)
        child._release_memory()
    if state.result == 0:
        return
    if state.result == 1:
        err = state.err
        step = ffi.string(lib.px_step_name(err.step)).decode()
        detail = ffi.string(err.detail).decode(errors="replace")
        raise LaunchError(step, detail, err.err)
    code = -state.result
    if state.failed_place >= 0:
        index = state.failed_place
        path = child.place_paths[index] if index < len(child.place_paths) else f"place_paths[{index}]"
        raise OSError(code, f"writing the pid into {path}: {os.strerror(code)}")
    if code == errno.EIO:
        raise LaunchError("setup", "", code, "the child broke off its error report")
    raise OSError(code, f"releasing the child: {os.strerror(code)}")


def abort_setup(child: Child) -> None:
    """Kill a child whose launch is not over (parked, or never finished) and
    wait until nothing of it runs in our memory; no-op after ``finish``."""
    lib.px_abort(child._state)
    child._release_memory()


def abort(child: Child) -> None:
    """``abort_setup``, then kill it even if it exec'd, reap it and close its fds."""
    abort_setup(child)
    state = child._state
    if state.pidfd >= 0:
        try:
            signal.pidfd_send_signal(state.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if state.pid > 0:  # -1: never cloned
        try:
            os.waitpid(state.pid, 0)
        except ChildProcessError:
            pass
    for name in ("pidfd", "status_fd"):
        fd = getattr(state, name)
        if fd >= 0:
            os.close(fd)
            setattr(state, name, -1)
