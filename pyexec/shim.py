"""The thin layer over the C shim: a ``SpawnPlan`` in, a started child out.

It owns the translation of Python values into ``struct px_config`` (keeping
every C string alive for the call), the clone itself (``px_spawn``), releasing
the child, and turning the child's error record into a ``LaunchError``.
Failures of the parent's own calls are ``OSError``s naming the call, like
benchexec's libc layer.
"""
from __future__ import annotations

import functools
import os
import select
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from . import _shim
from .errors import LaunchError
from .rootfs import MountOp

ffi = _shim.ffi
lib = _shim.lib

__all__ = ["SpawnPlan", "Credentials", "CapabilitySets", "Child", "spawn", "release", "wait_exec"]


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
    """Everything the child does, decided in advance; see csrc/pyexec.h for meanings."""

    program: str
    argv: Sequence[str]
    env: Sequence[str]                       # "KEY=value" strings
    search_path: str
    clone_flags: int = 0
    use_init: bool = False
    subreaper: bool = False
    monitor: Optional["MonitorPlan"] = None  # required with use_init
    wait_for_parent: bool = False           # wait for release() before anything (user-namespace id maps)
    hold_task: bool = False                 # wait for release() only before the task starts
    cgroup_fd: int = -1
    hostname: Optional[str] = None
    loopback_up: bool = False
    make_private: bool = False
    mounts: Sequence[MountOp] = ()
    rlimits: Sequence[Tuple[int, int, int, str]] = ()   # (RLIMIT_*, soft, hard, name)
    credentials: Optional[Credentials] = None
    capabilities: Optional[CapabilitySets] = None
    no_new_privs: bool = True
    seccomp_filter: Optional[bytes] = None   # packed struct px_bpf_insn array (pyexec.seccomp)
    join_pidfd: int = -1                     # exec into the task of this pidfd (setns)
    set_ctty: bool = False                   # stdin is a tty: make it the controlling terminal
    join_netns_fd: int = -1                  # setns into this network namespace (Isolation.network netns:)
    oom_score_adj: Optional[int] = None
    stdio: Tuple[int, int, int] = (-1, -1, -1)
    cwd: Optional[str] = None


@dataclass
class Child:
    """The parent's view of a freshly cloned child (fds owned by the caller)."""

    pid: int
    pidfd: int
    sync_fd: int
    error_fd: int
    status_fd: int

    def close_setup_fds(self) -> None:
        for name in ("sync_fd", "error_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


class _Keep:
    """Holds cdata so the C strings outlive the px_spawn call."""

    def __init__(self) -> None:
        self.items: list = []

    def str(self, value: Optional[str]):
        if value is None:
            return ffi.NULL
        data = ffi.new("char[]", os.fsencode(value))
        self.items.append(data)
        return data

    def strv(self, values: Sequence[str]):
        pointers = [self.str(v) for v in values] + [ffi.NULL]
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


def _fill(plan: SpawnPlan, keep: _Keep):
    cfg = ffi.new("struct px_config *")
    keep.items.append(cfg)
    cfg.clone_flags = plan.clone_flags
    cfg.use_init = int(plan.use_init)
    cfg.subreaper = int(plan.subreaper)
    cfg.wait_for_parent = int(plan.wait_for_parent)
    cfg.hold_task = int(plan.hold_task)
    cfg.cgroup_fd = plan.cgroup_fd
    cfg.hostname = keep.str(plan.hostname)
    cfg.loopback_up = int(plan.loopback_up)
    cfg.make_private = int(plan.make_private)

    ops = ffi.new("struct px_mount_op[]", max(1, len(plan.mounts)))
    keep.items.append(ops)
    for i, op in enumerate(plan.mounts):
        ops[i].kind = op.kind
        ops[i].bind_flags = op.bind_flags
        ops[i].flags = op.flags
        ops[i].source = keep.str(op.source)
        ops[i].target = keep.str(op.target)
        ops[i].fstype = keep.str(op.fstype)
        ops[i].data = keep.str(op.data)
    cfg.mounts = ops
    cfg.n_mounts = len(plan.mounts)

    limits = ffi.new("struct px_rlimit[]", max(1, len(plan.rlimits)))
    keep.items.append(limits)
    for i, (resource, soft, hard, name) in enumerate(plan.rlimits):
        limits[i].resource = resource
        limits[i].soft = soft
        limits[i].hard = hard
        limits[i].name = keep.str(name)
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
    cfg.no_new_privs = int(plan.no_new_privs)
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
    cfg.join_pidfd = plan.join_pidfd
    cfg.set_ctty = int(plan.set_ctty)
    cfg.join_netns_fd = plan.join_netns_fd
    cfg.monitor_exe_fd = -1
    if plan.use_init:
        args, env = caller_areas()
        cfg.caller_args = list(args)
        cfg.caller_env = list(env)
    cfg.monitor_fds = [-1] * 6
    if plan.use_init:
        mon = plan.monitor
        if mon is None:
            raise ValueError("use_init needs a MonitorPlan")
        cfg.monitor_exe_fd = mon.exe_fd
        # [0] is the status pipe, which px_spawn makes itself.
        cfg.monitor_fds = [-1, mon.state_dir_fd, mon.log_dir_fd, mon.stdout_fd, mon.stderr_fd, mon.lifeline_fd]
        cfg.log_name = keep.str(mon.log_name)
        cfg.log_max_size = mon.log_max_size
        cfg.log_max_files = mon.log_max_files
    if plan.capabilities is None:
        from .caps import last_cap
        cfg.last_cap = last_cap()
    if plan.oom_score_adj is not None:
        cfg.set_oom_score = 1
        cfg.oom_score_adj = plan.oom_score_adj
    for i in range(3):
        cfg.stdio[i] = plan.stdio[i]
    cfg.cwd = keep.str(plan.cwd)
    cfg.program = keep.str(plan.program)
    cfg.search_path = keep.str(plan.search_path)
    cfg.argv = keep.strv(plan.argv)
    cfg.envp = keep.strv(plan.env)
    return cfg


def spawn(plan: SpawnPlan) -> Child:
    """Clone the child; it waits for ``release`` when ``plan.wait_for_parent`` or ``hold_task``."""
    keep = _Keep()
    cfg = _fill(plan, keep)
    out = ffi.new("struct px_child *")
    rc = lib.px_spawn(cfg, out)
    if rc < 0:
        raise OSError(-rc, f"clone3: {os.strerror(-rc)}")
    return Child(pid=out.pid, pidfd=out.pidfd, sync_fd=out.sync_fd,
                 error_fd=out.error_fd, status_fd=out.status_fd)


def child_exited(child: Child) -> bool:
    """True when the child has already exited (its pidfd is readable)."""
    probe = select.poll()
    probe.register(child.pidfd, select.POLLIN)
    return bool(probe.poll(0))


def release(child: Child) -> None:
    """Let a waiting child go on (after cgroup placement and id maps)."""
    if child.sync_fd >= 0:
        try:
            os.write(child.sync_fd, bytes([lib.PX_GO]))
        finally:
            os.close(child.sync_fd)
            child.sync_fd = -1


def wait_exec(child: Child) -> None:
    """Block until the task execs; raise ``LaunchError`` for a failed step."""
    record = ffi.new("struct px_error *")
    rc = lib.px_wait_exec(child.error_fd, record)
    os.close(child.error_fd)
    child.error_fd = -1
    if rc == 0:
        return
    if rc == 1:
        step = ffi.string(lib.px_step_name(record.step)).decode()
        detail = ffi.string(record.detail).decode(errors="replace")
        raise LaunchError(step, detail, record.err)
    raise LaunchError("setup", "", -rc, "the child broke off its error report")
