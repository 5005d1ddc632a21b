"""The container executor: a task in its own namespaces, root and credentials.

It owns the translation of an ``ExecCommand`` into the shim's ``SpawnPlan``:
namespaces, the mount plan (in the task's state directory), user,
capabilities, rlimits and environment. Launching, the cgroup, stats and
teardown are ``LinuxExecutor``'s, shared with the universal executor.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import prctl

from .. import network, shim
from ..caps import names_of_mask
from ..cgroups.devices import DEFAULT_DEVICE_RULES, DeviceRule, device_rule
from ..config import DEFAULT_PATH, Bridge, ExecCommand, host_id, joined_netns_path
from ..errors import ConfigError
from ..native import lib
from ..rootfs import MountOp, plan_mounts
from ..seccomp import filter_for
from ..shim import Child, SpawnPlan
from ..users import resolve_user
from .exec import exec_record
from .launch import NAMESPACE_FLAGS, ROOT_USER, Identity, capability_sets, rlimit_plan, spawn_plan, write_id_maps
from .linux import LinuxExecutor

__all__ = ["ContainerExecutor"]

log = logging.getLogger(__name__)


class ContainerExecutor(LinuxExecutor):
    """Runs a task isolated in namespaces (see ``Isolation``); needs root."""

    kind = "container"

    # -- launch ------------------------------------------------------------
    def _plan(self, cmd: ExecCommand) -> Tuple[SpawnPlan, Dict[str, Any]]:
        if not prctl.cap_effective.sys_admin:
            # Namespaces, mounts and pivot_root need it; say so before cloning.
            raise ConfigError("executor", "container", "needs CAP_SYS_ADMIN (run it as root); "
                                                       "the universal executor runs without")
        isolation = cmd.isolation
        # runc's default device set and the requested nodes; a bad path fails
        # here, before anything exists.
        self._devices = list(DEFAULT_DEVICE_RULES) + [device_rule(d.path, d.permissions) for d in isolation.devices]
        root_dir = isolation.rootfs or "/"
        user = ROOT_USER if cmd.user is None else resolve_user(cmd.user, root_dir)
        if isinstance(isolation.network, Bridge):
            network.check_available(isolation.network)  # a taken ip fails before anything exists
        capabilities = capability_sets(isolation.capabilities, user.uid)
        identity = Identity(
            user=user,
            capabilities=capabilities,
            no_new_privs=isolation.no_new_privs,
            rlimits=rlimit_plan(isolation.rlimits),
            seccomp_filter=filter_for(isolation, names_of_mask(capabilities.bounding)),
            oom_score_adj=cmd.oom_score_adj,
        )
        plan = spawn_plan(
            cmd.argv[0], cmd.argv, cmd.env or {}, (cmd.env or {}).get("PATH", DEFAULT_PATH), cmd.cwd or "/",
            identity,
            clone_flags=sum(NAMESPACE_FLAGS[ns] for ns in isolation.namespaces),
            subreaper="pid" not in isolation.namespaces,
            hostname=(isolation.hostname or cmd.name) if "uts" in isolation.namespaces else None,
            loopback_up="net" in isolation.namespaces,
            make_private="mnt" in isolation.namespaces,
            # Parked until the id maps and a bridge's eth0 are in place.
            wait_for_parent="user" in isolation.namespaces or isinstance(isolation.network, Bridge),
        )
        uid_map = isolation.uid_map if "user" in isolation.namespaces else None
        return plan, exec_record(self.kind, cmd, plan, identity, capabilities=isolation.capabilities,
                                 uid_map=uid_map)

    def _device_rules(self, cmd: ExecCommand) -> List[DeviceRule]:
        return self._devices

    def _after_clone(self) -> None:
        self._close_netns_fd()  # the child has its copy

    def _before_release(self, cmd: ExecCommand, child: Child) -> None:
        if self._lease is not None:
            network.attach(self._lease, child.pid)
        isolation = cmd.isolation
        if "user" not in isolation.namespaces:
            return
        assert isolation.uid_map is not None and isolation.gid_map is not None
        # The task's root is an unprivileged host id: what it must write (its
        # monitor's exit record and logs, /local) becomes that id's.
        uid, gid = host_id(tuple(isolation.uid_map), 0), host_id(tuple(isolation.gid_map), 0)
        assert uid is not None and gid is not None  # Isolation checks that the maps hold id 0
        assert self._state_dir is not None
        paths = [self._state_dir, os.path.join(str(cmd.task_dir), "local")]
        logs = os.path.join(str(cmd.task_dir), "logs")
        if os.path.isdir(logs):
            paths.append(logs)
            paths += [os.path.join(logs, name) for name in os.listdir(logs)
                      if name.startswith(f"{cmd.name}.std")]
        for path in paths:
            if os.path.lexists(path):
                os.lchown(path, uid, gid)
        write_id_maps(child.pid, isolation.uid_map, isolation.gid_map)

    def _prepare(self, cmd: ExecCommand, plan: SpawnPlan, state_dir: str) -> None:
        if "mnt" in cmd.isolation.namespaces:
            # The host-mirror tmpfs goes on the state directory itself, in the
            # task's mount namespace only (the monitor reaches the directory by
            # fd): a subdirectory to mount on would be one more mkdir and rmdir
            # per task, and on a disk file system an rmdir costs ~0.1 ms.
            plan.mounts = plan_mounts(cmd, state_dir)
            if shim.SHARE_MEMORY and "pid" in cmd.isolation.namespaces and plan.mounts:
                # The init runs in our memory until it execs the monitor: its
                # /proc/1/cmdline (readable by anyone) would be our argv.
                plan.mounts = list(plan.mounts) + [MountOp(lib.PX_OP_MASK, "/proc/1/cmdline")]
        self._network_prepare(cmd, plan, state_dir)

    # -- network (Isolation.network; see pyexec.network) ----------------------
    _lease: Optional[network.Lease] = None
    _netns_fd: Optional[int] = None

    def _network_prepare(self, cmd: ExecCommand, plan: SpawnPlan, state_dir: str) -> None:
        """A bridge: lease an address (and make the bridge); a joined
        namespace: open it for the child. Undone by _teardown on failure."""
        net = cmd.isolation.network
        if isinstance(net, Bridge):
            assert self.task_id is not None
            self._lease = network.allocate(net, self.task_id, state_dir)
        elif joined_netns_path(net) is not None:
            self._netns_fd = network.open_netns(net)
            plan.join_namespaces = ((self._netns_fd, lib.CLONE_NEWNET),)

    def _close_netns_fd(self) -> None:
        fd, self._netns_fd = self._netns_fd, None
        if fd is not None:
            os.close(fd)

    def network_info(self) -> Optional[Dict[str, Any]]:
        """The task's bridge network (``{"mode": "bridge", "bridge", "subnet",
        "ip", "gateway", "interface", "host_veth"}``), None for other networks
        (also after a reattach: the lease is found again)."""
        lease = self._lease
        return lease.as_dict() if lease is not None else None

    def adopt(self, handle: Dict[str, Any]) -> None:
        super().adopt(handle)
        if self.task_id is not None:
            self._lease = network.find_lease(self.task_id)

    def _teardown(self) -> None:
        self._close_netns_fd()
        lease, self._lease = self._lease, None
        try:
            if lease is not None:
                try:
                    network.release(lease)  # before the state dir goes: its lease is never "stale" meanwhile
                except Exception as exc:  # the task is gone either way; cleanup_stale reclaims the rest
                    log.warning("task %s: releasing its network (%s) failed: %s", self.task_id, lease.ip, exc)
        finally:
            super()._teardown()

    def cleanup_stale(self, min_age: float = 60.0) -> List[str]:
        cleaned = super().cleanup_stale(min_age)
        # After the state dirs: the leases of the tasks just cleaned are stale now.
        cleaned += [task_id for task_id in network.cleanup_stale() if task_id not in cleaned]
        return cleaned
