"""The universal executor: a task on the host, without namespaces (Nomad's raw_exec).

It owns what differs from the container: how the program is found (Nomad's
order: ``task_dir/local``, ``task_dir``, an absolute path, then the task's
PATH; a found file without an execute bit gets one), who the task runs as
(the caller, or another user when the caller is root), its working directory
(the task directory by default) and whether it gets a cgroup: when this
process may create one, always; otherwise the task still runs, limits raise
``ConfigError`` and stats come from the process tree.

The shim forks an init between the caller and the task, marked child
subreaper: a task's double-forked daemons are reparented to it rather than
to the host's init, it forwards signals, reports the task's status, and when
the task exits it kills its process group and every process it adopted. So
nothing survives the task, with or without a cgroup; ``shutdown`` kills the
cgroup, or the tree below the init (found again before each round).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from ..cgroups import may_create_cgroups
from ..config import DEFAULT_PATH, ExecCommand
from ..errors import ConfigError
from ..shim import SpawnPlan
from ..users import TaskUser, resolve_user
from .exec import exec_record
from .launch import Identity, rlimit_plan, spawn_plan
from .linux import LinuxExecutor
from .lookup import find_program
from .state import default_state_root
from .taskfiles import check_host_isolation

__all__ = ["UniversalExecutor"]


class UniversalExecutor(LinuxExecutor):
    """Runs a task on the host in its own session, cgroup when possible.

    ``cgroups``: None (default) uses one when this process may create it;
    True requires one (ConfigError at launch otherwise); False never uses one.
    """

    kind = "universal"

    def __init__(self, state_root: Optional[str] = None, cgroup_parent: str = "pyexec",
                 cgroups: Optional[bool] = None) -> None:
        super().__init__(state_root=state_root or default_state_root(), cgroup_parent=cgroup_parent)
        if cgroups not in (None, True, False):
            raise ConfigError("cgroups", cgroups, "must be None (when possible), True or False")
        self.cgroups = cgroups

    def _use_cgroup(self, cmd: ExecCommand) -> bool:
        if self.cgroups is False:
            reason = "needs a cgroup, and this executor was made with cgroups=False"
        elif may_create_cgroups():
            return True
        elif self.cgroups:
            raise ConfigError("cgroups", True, "this process may not create cgroups (not root, "
                                               "no delegated cgroup v2 subtree)")
        else:
            reason = "needs a cgroup, and this process may not create one (not root, no delegated subtree)"
        for name in type(cmd.resources).__dataclass_fields__:
            value = getattr(cmd.resources, name)
            if value is not None:
                raise ConfigError(name, value, reason)
        return False

    def _plan(self, cmd: ExecCommand) -> Tuple[SpawnPlan, Dict[str, Any]]:
        check_host_isolation(cmd, self.kind)
        user: Optional[TaskUser] = None
        if cmd.user is not None:
            user = resolve_user(cmd.user, "/")
            if os.geteuid() != 0 and (user.uid, user.gid) != (os.geteuid(), os.getegid()):
                raise ConfigError("user", cmd.user, "can only be switched by a root caller")
        env = dict(cmd.env or {})
        search_path = env.get("PATH", DEFAULT_PATH)
        identity = Identity(
            user=user,
            capabilities=None,
            no_new_privs=False,  # a host task keeps setuid programs working, as raw_exec does
            rlimits=rlimit_plan(cmd.isolation.rlimits),
            seccomp_filter=None,
            oom_score_adj=cmd.oom_score_adj,
        )
        plan = spawn_plan(find_program(cmd.argv[0], str(cmd.task_dir), search_path), cmd.argv, env, search_path,
                          cmd.cwd or str(cmd.task_dir), identity, subreaper=True)
        return plan, exec_record(self.kind, cmd, plan, identity)
