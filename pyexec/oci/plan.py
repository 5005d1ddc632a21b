"""A validated OCI config as the library's launch: the shim's SpawnPlan.

This module owns the translation of ``process`` and ``linux`` into the
shim's plan through the launch layer (``pyexec.executor.launch``): the
identity (user, the five capability sets, rlimits, no_new_privileges,
seccomp, oom_score_adj), the namespaces made by the clone and the ones
joined by path, hostname and domainname, sysctls, personality, umask, the
mount plan (mounts.py). The container's process has no pyexec init: it is
pid 1 of its pid namespace and holds before its exec on the start FIFO.

What is opened here for the child (the namespace files to join) is
returned with the plan, for the caller to close once the child has its
copies.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..caps import capability_mask, last_cap
from ..config import DEFAULT_PATH
from ..errors import ConfigError
from ..executor.launch import Identity, spawn_plan
from ..native import lib
from ..seccomp import compile_profile
from ..shim import CapabilitySets, SpawnPlan
from ..users import TaskUser, resolve_user
from .mounts import mount_plan
from .spec import OciConfig, OciProcess

__all__ = ["OciPlan", "NAMESPACE_FLAGS", "DEFAULT_UMASK", "plan_container", "process_env", "process_capabilities"]

# runtime-spec namespace types -> clone flags.
NAMESPACE_FLAGS = {
    "pid": lib.CLONE_NEWPID, "network": lib.CLONE_NEWNET, "mount": lib.CLONE_NEWNS, "ipc": lib.CLONE_NEWIPC,
    "uts": lib.CLONE_NEWUTS, "user": lib.CLONE_NEWUSER, "cgroup": lib.CLONE_NEWCGROUP, "time": lib.CLONE_NEWTIME,
}
_PERSONALITY = {"LINUX": lib.PER_LINUX, "LINUX32": lib.PER_LINUX32}
DEFAULT_UMASK = 0o022  # runc's, when process.user.umask is unset


@dataclass
class OciPlan:
    """The plan of one container's process and what the caller must close
    once it is cloned (``fds``); ``uid_map``/``gid_map`` are written while
    the child is parked (a new user namespace), as (inside, outside, count)."""

    plan: SpawnPlan
    fds: List[int] = field(default_factory=list)
    uid_map: List[Tuple[int, int, int]] = field(default_factory=list)
    gid_map: List[Tuple[int, int, int]] = field(default_factory=list)
    namespaces: List[str] = field(default_factory=list)

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def process_env(process: OciProcess, rootfs: str, uid: int) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for entry in process.env:
        key, _, value = entry.partition("=")
        env[key] = value
    if "HOME" not in env:
        # runc's rule: HOME from the container's own passwd entry of the uid, else /.
        try:
            env["HOME"] = resolve_user(str(uid), rootfs).home
        except ConfigError:
            env["HOME"] = "/"
    return env


def process_capabilities(process: OciProcess) -> Optional[CapabilitySets]:
    caps = process.capabilities
    if caps is None:
        return None  # runtime-spec leaves them as they are
    return CapabilitySets(bounding=capability_mask(caps.bounding), effective=capability_mask(caps.effective),
                          permitted=capability_mask(caps.permitted), inheritable=capability_mask(caps.inheritable),
                          ambient=capability_mask(caps.ambient), last_cap=last_cap())


def _seccomp(config: OciConfig, process: OciProcess) -> Optional[bytes]:
    seccomp = config.linux.seccomp
    if seccomp is None:
        return None
    if seccomp.listener_path is not None:
        raise ConfigError("linux.seccomp.listenerPath", seccomp.listener_path, "not supported by pyexec-oci yet")
    bounding = process.capabilities.bounding if process.capabilities is not None else ()
    return compile_profile(dict(seccomp.profile), bounding, source="linux.seccomp")


def plan_container(config: OciConfig, cgroup_path: str) -> OciPlan:
    """The plan of the container's process (ConfigError before anything exists)."""
    process = config.process
    if process is None:
        raise ConfigError("process", None, "is missing: create needs the container's process")
    linux = config.linux
    for path, value in (("linux.timeOffsets", linux.time_offsets), ("process.scheduler", process.scheduler),
                        ("process.ioPriority", process.io_priority)):
        if value:
            raise ConfigError(path, value, "not supported by pyexec-oci yet")
    out = OciPlan(plan=SpawnPlan(program="", argv=(), env=(), search_path=""))
    try:
        clone_flags = 0
        joins: List[Tuple[int, int]] = []
        for index, ns in enumerate(linux.namespaces):
            flag = NAMESPACE_FLAGS[ns.type]
            if ns.path is None:
                clone_flags |= flag
                out.namespaces.append(ns.type)
                continue
            try:
                fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise ConfigError(f"linux.namespaces[{index}].path", ns.path,
                                  f"cannot be opened: {exc.strerror}") from None
            out.fds.append(fd)
            joins.append((fd, flag))
        user = process.user
        groups = tuple(user.additional_gids)
        task_user = TaskUser(uid=user.uid, gid=user.gid, groups=groups, name=None, home="/")
        identity = Identity(
            user=task_user,
            capabilities=process_capabilities(process),
            no_new_privs=process.no_new_privileges,
            rlimits=[(r.resource, r.soft, r.hard, r.type) for r in process.rlimits],
            seccomp_filter=_seccomp(config, process),
            oom_score_adj=process.oom_score_adj,
        )
        env = process_env(process, config.root.path, user.uid)
        new_user_ns = linux.new_namespace("user")
        if new_user_ns:
            out.uid_map = [(m.container_id, m.host_id, m.size) for m in linux.uid_mappings]
            out.gid_map = [(m.container_id, m.host_id, m.size) for m in linux.gid_mappings]
        # A uts namespace of its own, new or joined by path (runc's rule): never the runtime's.
        uts = linux.namespace("uts") is not None
        if (config.hostname or config.domainname) and not uts:
            field_name = "hostname" if config.hostname else "domainname"
            raise ConfigError(field_name, config.hostname or config.domainname,
                              "needs a uts namespace of the container's own")
        personality = linux.personality
        out.plan = spawn_plan(
            process.args[0], process.args, env, env.get("PATH", DEFAULT_PATH), process.cwd, identity,
            user_env=False,
            use_init=False,
            clone_flags=clone_flags,
            join_namespaces=joins,
            hostname=config.hostname if uts else None,
            domainname=config.domainname if uts else None,
            loopback_up=linux.new_namespace("network"),
            make_private=False,  # the mount plan sets / to slave first, as runc does
            mounts=mount_plan(config, config.root.path, cgroup_path=cgroup_path),
            sysctls=sorted(linux.sysctl.items()),
            personality=_PERSONALITY[personality.domain] if personality is not None else None,
            umask=user.umask if user.umask is not None else DEFAULT_UMASK,
            # Parked until the id maps are written and the createRuntime hooks ran.
            wait_for_parent=True,
            stdio=(0, 1, 2),
        )
    except BaseException:
        out.close()
        raise
    return out
