"""The Linux launch layer: from a task's identity and options to a started child.

Every Linux launch goes through here: the container and universal
executors' tasks and every exec into a running task (and next the OCI
runtime and the warm pool), each with its own options. This module owns

* ``Identity``: who a task's processes are (user, capabilities,
  no_new_privs, rlimits, seccomp filter, oom_score_adj), the same for the
  task and every command exec'd into it;
* ``spawn_plan``, the one builder of the shim's ``SpawnPlan``;
* the tables both paths need: ``NAMESPACE_FLAGS``, ``ROOT_USER``,
  ``capability_sets`` (Docker's rules) and ``rlimit_plan``;
* the monitor's executable (``open_monitor``) and the task monitor's inputs
  (``task_monitor_plan``);
* ``spawn_into_cgroup``: the clone with the child born in, or placed into,
  its cgroup.

It knows nothing of executors: callers pass values, not themselves.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..caps import DEFAULT_CAPABILITIES, capability_mask, last_cap
from ..cgroups import CgroupManager
from ..config import ExecCommand, rlimit_number
from ..errors import LaunchError
from ..logmon import RotatingLog
from ..native import lib
from ..shim import CapabilitySets, Child, Credentials, MonitorPlan, SpawnPlan, spawn
from ..users import TaskUser
from .taskfiles import StdioFiles, user_environment

__all__ = ["Identity", "spawn_plan", "write_id_maps", "namespaces_to_join", "NAMESPACE_FLAGS", "ROOT_USER",
           "MONITOR_PATH", "capability_sets", "rlimit_plan", "open_monitor", "task_monitor_plan",
           "spawn_into_cgroup"]

log = logging.getLogger(__name__)

MONITOR_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyexec-monitor")

# Isolation.namespaces names -> the clone flag that makes (or, for an exec, joins) one.
NAMESPACE_FLAGS = {
    "pid": lib.CLONE_NEWPID, "mnt": lib.CLONE_NEWNS, "uts": lib.CLONE_NEWUTS, "ipc": lib.CLONE_NEWIPC,
    "net": lib.CLONE_NEWNET, "user": lib.CLONE_NEWUSER, "cgroup": lib.CLONE_NEWCGROUP,
    "time": lib.CLONE_NEWTIME,
}

def namespaces_to_join(pid: int) -> int:
    """CLONE_NEW* flags of the namespaces of ``pid`` that are not ours: those
    a process joining it (an exec) enters. Read now rather than recorded at
    launch: a namespace the task joined by path counts, and so does a
    reattaching caller's own."""
    flags = 0
    for name, flag in NAMESPACE_FLAGS.items():
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            continue  # a kernel without this namespace type
        if theirs != os.readlink(f"/proc/self/ns/{name}"):
            flags |= flag
    return flags


ROOT_USER = TaskUser(uid=0, gid=0, groups=(0,), name="root", home="/root")


@dataclass(frozen=True)
class Identity:
    """Who a task's processes are and how they are confined, the same for the
    task and every command exec'd into it. ``user`` None: the caller's own
    ids (the universal executor without ``user``); ``capabilities`` None:
    left as they are."""

    user: Optional[TaskUser]
    capabilities: Optional[CapabilitySets]
    no_new_privs: bool
    rlimits: Sequence[Tuple[int, int, int, str]]
    seccomp_filter: Optional[bytes]
    oom_score_adj: Optional[int]


def spawn_plan(program: str, argv: Sequence[str], env: Mapping[str, str], search_path: str, cwd: str,
               identity: Identity, user_env: bool = True, **options: Any) -> SpawnPlan:
    """The shim's plan for one process: ``program`` (a path, or a name the
    shim searches in ``search_path`` inside the task's root) with ``argv``
    and ``env`` (plus USER, LOGNAME and HOME of ``identity.user`` unless set,
    when ``user_env``), in ``cwd``, as ``identity``, below an init unless
    ``use_init=False`` is among the ``options``: the caller's own SpawnPlan
    fields (the namespaces to make or join, the hostname, the mounts, whether
    the child parks for the caller's work, and so on)."""
    user = identity.user
    environment = user_environment(dict(env), user) if user is not None and user_env else env
    fields: Dict[str, Any] = dict(
        program=program,
        argv=argv,
        env=[f"{k}={v}" for k, v in environment.items()],
        search_path=search_path,
        cwd=cwd,
        use_init=True,
        rlimits=identity.rlimits,
        credentials=None if user is None else Credentials(user.uid, user.gid, user.groups),
        capabilities=identity.capabilities,
        no_new_privs=identity.no_new_privs,
        seccomp_filter=identity.seccomp_filter,
        oom_score_adj=identity.oom_score_adj,
    )
    fields.update(options)
    return SpawnPlan(**fields)


def write_id_maps(pid: int, uid_map: Sequence[Tuple[int, int, int]], gid_map: Sequence[Tuple[int, int, int]]) -> None:
    """Write the user namespace id maps of the parked child ``pid``
    (``(inside, outside, count)`` lines); LaunchError naming the map when the
    kernel refuses one."""
    for name, idmap in (("uid_map", uid_map), ("gid_map", gid_map)):
        text = "".join(f"{inside} {outside} {count}\n" for inside, outside, count in idmap)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            raise LaunchError(name, text.strip(), exc.errno or 0) from None


def capability_sets(requested: Optional[Sequence[str]], uid: int) -> CapabilitySets:
    """Docker's rules: root gets the set; another user gets none unless asked for (then ambient)."""
    mask = capability_mask(requested if requested is not None else DEFAULT_CAPABILITIES)
    if uid == 0:
        return CapabilitySets(mask, mask, mask, 0, 0, last_cap())
    granted = mask if requested is not None else 0
    return CapabilitySets(mask, granted, granted, granted, granted, last_cap())


def rlimit_plan(rlimits: Mapping[str, Tuple[int, int]]) -> List[Tuple[int, int, int, str]]:
    """The shim's (resource, soft, hard, name) list for Isolation.rlimits."""
    return [(rlimit_number(name), soft, hard, name) for name, (soft, hard) in rlimits.items()]


def open_monitor() -> int:
    """An O_PATH fd of the pyexec-monitor executable (the caller closes it);
    the init execs it through the fd, so it works after pivot_root."""
    try:
        return os.open(MONITOR_PATH, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LaunchError("monitor", MONITOR_PATH, errno.ENOENT,
                          "missing: pyexec is not built (pip install .)") from None


def task_monitor_plan(cmd: ExecCommand, stdio: StdioFiles, state_dir: str,
                      fds: List[int]) -> Tuple[MonitorPlan, Optional[int]]:
    """A task monitor's inputs: its executable, the state and log directories
    by fd, the log pipes, and with ``kill_on_caller_exit`` a lifeline. The
    fds the plan names are appended to ``fds`` (the caller closes them once
    the child has its copies); returns the plan and the lifeline's write
    end, which the caller keeps for as long as the task may live."""
    def opened(path: str, flags: int) -> int:
        fd = os.open(path, flags | os.O_CLOEXEC)
        fds.append(fd)
        return fd

    exe_fd = open_monitor()
    fds.append(exe_fd)
    plan = MonitorPlan(exe_fd=exe_fd, state_dir_fd=opened(state_dir, os.O_RDONLY | os.O_DIRECTORY),
                       stdout_fd=stdio.log_fds[0], stderr_fd=stdio.log_fds[1], log_name=str(cmd.name),
                       log_max_size=int(cmd.log_config.max_file_size), log_max_files=cmd.log_config.max_files)
    if stdio.log_dir is not None:
        plan.log_dir_fd = opened(stdio.log_dir, os.O_RDONLY | os.O_DIRECTORY)
        # The files exist (and rotate once, if a restart asks) before launch
        # returns; the monitor opens the same index right after.
        for slot, stream in enumerate(("stdout", "stderr")):
            if stdio.log_fds[slot] >= 0:
                RotatingLog(stdio.log_dir, f"{cmd.name}.{stream}", cmd.log_config).close()
    lifeline = None
    if cmd.kill_on_caller_exit:
        read_end, lifeline = os.pipe2(os.O_CLOEXEC)
        fds.append(read_end)
        plan.lifeline_fd = read_end
    return plan, lifeline


class _CloneIntoCgroup:
    """Whether clone3 takes CLONE_INTO_CGROUP here: cleared once it refused
    (kernels 5.3-5.6 say EINVAL, older ones ENOSYS), so that later launches
    go straight to the fallback."""

    works = True


def spawn_into_cgroup(plan: SpawnPlan, cgroup: Optional[CgroupManager]) -> Child:
    """spawn() with the child in ``cgroup``: born there (clone3
    CLONE_INTO_CGROUP, cgroup v2), else written into its cgroup.procs files by
    the shim, which holds the child's task until then (v1, or a kernel
    without CLONE_INTO_CGROUP: spawned again that way when clone3 refuses)."""
    if cgroup is None:
        return spawn(plan)
    cgroup_fd = cgroup.open_dir_fd() if _CloneIntoCgroup.works else None
    refused: Optional[OSError] = None
    if cgroup_fd is not None:
        plan.cgroup_fd = cgroup_fd
        try:
            return spawn(plan)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.E2BIG):
                raise
            refused = exc
        finally:
            os.close(cgroup_fd)
            plan.cgroup_fd = -1
    plan.place_paths = cgroup.procs_files()
    plan.hold_task = plan.hold_task or not plan.wait_for_parent
    child = spawn(plan)  # when this fails too, the flag was not the problem
    if refused is not None:
        log.info("clone3(CLONE_INTO_CGROUP) failed (%s); placing tasks through cgroup.procs", refused)
        _CloneIntoCgroup.works = False
    return child
