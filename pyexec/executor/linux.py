"""The launch machinery every Linux executor shares: shim spawn, cgroup, state.

``LinuxExecutor`` owns the sequence prepare -> spawn (clone, cgroup placement,
release and the wait for the exec happen in the C shim, through launch.py)
-> the caller's own work for a child parked for it, undoing every step when
one fails; the task's state directory (state.py) and its cgroup; stats (the
cgroup's, else the process tree's), live limit updates, killing every
process of the task, teardown, handing the task over (``handle``/``adopt``),
exec into it (exec.py, given an ``ExecTarget``) and ``cleanup_stale`` for
what crashed callers left. Subclasses say what to spawn (``_plan``) and may
add to the state directory before the clone (``_prepare``): the container
executor its mount plan, the universal executor nothing.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
import os
import shutil
import signal
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..cgroups import CgroupManager, new_manager, task_names
from ..cgroups.devices import DeviceRule
from ..config import ExecCommand, Resources
from ..errors import ConfigError, PyexecError, TaskExitedError
from ..handles import make_handle, open_identified
from ..process import ExecResult, ExitResult, TaskHandle
from ..shim import Child, SpawnPlan, abort, finish
from ..stats.pidtree import PidCollector
from ..stats.usage import ResourceUsage
from .base import Executor
from .exec import DEFAULT_OUTPUT_LIMIT, ExecTarget, run_exec
from .exec_streaming import ExecProcess, start_streaming
from .launch import spawn_into_cgroup, task_monitor_plan
from .state import (
    DEFAULT_STATE_ROOT,
    read_task_json,
    remove_state_dir,
    state_entries,
    task_json_template,
    write_task_json,
)
from .taskfiles import StdioFiles, prepare_task_dir
from .taskproc import AdoptedProcess, TaskProcess, readable

__all__ = ["LinuxExecutor", "DEFAULT_STATE_ROOT"]

log = logging.getLogger(__name__)

KILL_TIMEOUT = 5.0  # seconds to empty a task without a cgroup before giving up


class LinuxExecutor(Executor):
    """A task spawned by the C shim, optionally in its own cgroup."""

    def __init__(self, state_root: str = DEFAULT_STATE_ROOT, cgroup_parent: str = "pyexec") -> None:
        super().__init__()
        self.state_root = state_root
        self.cgroup_parent = cgroup_parent
        self.task_id: Optional[str] = None
        self._cgroup: Optional[CgroupManager] = None
        self._collector: Optional[PidCollector] = None
        self._process_sampler: Optional[PidCollector] = None
        self._init_used = False
        self._lifeline: Optional[int] = None  # write end: closing it (or dying) kills the task
        self._state_dir: Optional[str] = None
        self._made_task_dir: Optional[str] = None
        self._exec_record: Optional[Dict[str, Any]] = None  # the task's identity for exec (task.json)
        self._task_json = ("", "", "")  # task.json around pid and started_at, made before the clone

    # -- for subclasses ----------------------------------------------------
    @abc.abstractmethod
    def _plan(self, cmd: ExecCommand) -> Tuple[SpawnPlan, Dict[str, Any]]:
        """Validate ``cmd`` (ConfigError before anything exists) and say what to
        spawn: the plan, and the exec record (exec.py's ``exec_record``) that
        lets a later ``exec`` run as the task does."""

    def _prepare(self, cmd: ExecCommand, plan: SpawnPlan, state_dir: str) -> None:
        """Add to the plan what needs the state directory (mount points)."""

    def _before_release(self, cmd: ExecCommand, child: Child) -> None:
        """The child is cloned and parked (``plan.wait_for_parent``): last words
        before it runs (the container executor writes user-namespace id maps)."""

    def _after_clone(self) -> None:
        """The child exists and holds its copies of the fds the plan named."""

    def _device_rules(self, cmd: ExecCommand) -> Optional[List[DeviceRule]]:
        """Device rules for the task cgroup; None (the default) leaves devices alone."""
        return None

    def _use_cgroup(self, cmd: ExecCommand) -> bool:
        """Whether this task gets a cgroup (the container executor: always)."""
        return True

    # -- launch ------------------------------------------------------------
    def _start(self, cmd: ExecCommand) -> TaskProcess:
        plan, self._exec_record = self._plan(cmd)
        use_cgroup = self._use_cgroup(cmd)
        self.task_id = f"{cmd.name}-{uuid.uuid4().hex[:12]}"
        self._task_json = task_json_template(self.task_id, self.kind, self.cgroup_parent, self._exec_record)
        stdio: Optional[StdioFiles] = None
        child: Optional[Child] = None
        fds: List[int] = []  # ours to close once the child has its copies
        try:
            self._made_task_dir = prepare_task_dir(str(cmd.task_dir))
            # The state directory exists before the cgroup and outlives it, so
            # cleanup_stale() can tell a live task from a crashed caller's leftovers.
            self._state_dir = os.path.join(self.state_root, self.task_id)
            os.makedirs(self._state_dir, mode=0o700)
            self._prepare(cmd, plan, self._state_dir)
            stdio = StdioFiles(cmd, log_pipes=plan.use_init)
            plan.stdio = stdio.fds
            if plan.use_init:
                plan.monitor, self._lifeline = task_monitor_plan(cmd, stdio, self._state_dir, fds)
            if use_cgroup:
                self._cgroup = new_manager(self.task_id, cmd.resources, parent=self.cgroup_parent,
                                           devices=self._device_rules(cmd))
                self._cgroup.create()
            started_at = time.time()
            child = spawn_into_cgroup(plan, self._cgroup)
            self._after_clone()
            if child.parked:
                self._before_release(cmd, child)
            finish(child)
            write_task_json(self._state_dir, self._task_json, child.pid, started_at)
        except BaseException:
            if child is not None:
                self._abort(child)
            self._teardown()
            raise
        finally:
            if stdio is not None:
                stdio.close()
            for fd in fds:
                os.close(fd)
        self._init_used = plan.use_init
        if self._cgroup is None:
            # The init (the monitor once launched) is pyexec's process, not the task's.
            self._collector = PidCollector(child.pid, cache_seconds=1.0, include_root=not plan.use_init)
        log.debug("task %s launched as pid %d", self.task_id, child.pid)
        return TaskProcess(child.pid, child.pidfd, child.status_fd, started_at, on_exit=self._on_exit)

    # -- exec into the task -------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: Optional[float] = 5.0, env: Optional[Mapping[str, str]] = None,
             cwd: Optional[str] = None, user: Optional[str] = None,
             output_limit: int = DEFAULT_OUTPUT_LIMIT) -> ExecResult:
        with self._exec_target() as target:
            return run_exec(target, argv, timeout=timeout, env=env, cwd=cwd, user=user, output_limit=output_limit)

    def exec_streaming(self, argv: Sequence[str], stdin: bool = True, tty: bool = False,
                       env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                       user: Optional[str] = None) -> ExecProcess:
        with self._exec_target() as target:
            return start_streaming(target, argv, stdin=stdin, tty=tty, env=env, cwd=cwd, user=user)

    exec.__doc__ = Executor.exec.__doc__
    exec_streaming.__doc__ = Executor.exec_streaming.__doc__

    def _exec_target(self) -> ExecTarget:
        """What an exec goes into: the task's monitor (a copy of this
        executor's own pidfd: one opened by pid now could name a stranger),
        its exec record and its cgroup. TaskExitedError once it exited."""
        proc = self._running()
        record = self._exec_identity()
        dup = getattr(proc, "dup_pidfd", None)
        pidfd = dup() if dup is not None and proc.result is None else -1
        if pidfd < 0:
            raise TaskExitedError("the task has exited; cannot exec into it")
        target = ExecTarget(pid=proc.pid, pidfd=pidfd, record=record, cgroup=self._cgroup)
        if proc.result is not None or readable(pidfd, 0):  # exited, not reaped yet
            target.close()
            raise TaskExitedError("the task has exited; cannot exec into it")
        return target

    def _exec_identity(self) -> Dict[str, Any]:
        """The task's identity for exec: recorded at launch, or read back from
        task.json by a reattached executor."""
        if self._exec_record is None:
            state = read_task_json(self._state_dir) if self._state_dir is not None else None
            record = state.get("exec") if state is not None else None
            if not isinstance(record, dict):
                if self._proc is not None and self._proc.result is not None:
                    raise TaskExitedError("the task has exited; cannot exec into it")
                raise PyexecError(f"task {self.task_id} has no exec record in its state directory "
                                  f"(launched by an older pyexec); cannot exec into it")
            self._exec_record = record
        return self._exec_record

    # -- handing over ------------------------------------------------------
    def handle(self) -> Dict[str, Any]:
        proc = self._running()
        if proc.result is not None:
            raise TaskExitedError("the task has exited; there is nothing to hand over")
        assert self.task_id is not None
        return make_handle(self.kind, self.task_id, self.state_root, self.cgroup_parent, proc.pid,
                           proc.started_at)

    def adopt(self, handle: Dict[str, Any]) -> None:
        with self._launch_lock:
            if self._cmd is not None or self._proc is not None:
                raise PyexecError("this executor already has a task; reattach with a new one")
            task_id = handle["task_id"]
            state_dir = os.path.join(self.state_root, task_id)
            if not os.path.isdir(state_dir):
                raise TaskExitedError(f"task {task_id} is gone: {state_dir} was removed (another caller "
                                      f"took it over and saw it end, or it was cleaned)")
            self.task_id, self._state_dir = task_id, state_dir
            if task_id in task_names(self.cgroup_parent):
                self._cgroup = new_manager(task_id, Resources(), parent=self.cgroup_parent)
                self._cgroup.adopt()
            pidfd = open_identified(handle["pid"], handle["pid_start"], handle["boot_id"])
            self._init_used = True
            if self._cgroup is None and pidfd >= 0:
                self._collector = PidCollector(handle["pid"], cache_seconds=1.0, include_root=False)
            self._proc = AdoptedProcess(handle["pid"], pidfd, state_dir, handle["started_at"],
                                        on_exit=self._on_exit)
            log.debug("reattached to task %s (monitor pid %d, %s)", task_id, handle["pid"],
                      "running" if pidfd >= 0 else "ended")

    def cleanup_stale(self, min_age: float = 60.0) -> List[str]:
        """Remove what crashed callers left behind under this executor's
        ``state_root`` and ``cgroup_parent``; returns the task ids cleaned.

        * a task cgroup without a state directory is a leftover: its processes
          are killed and the cgroup removed (launch makes the state directory
          before the cgroup, teardown removes it after, so no live task looks
          like this);
        * a state directory whose cgroup is empty or gone, older than
          ``min_age`` seconds (younger ones may be launches in progress), is
          removed with its cgroup.

        A task whose cgroup still holds processes and whose state directory
        exists is alive and is left alone: its caller may reattach to it.
        """
        if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) or min_age < 0:
            raise ConfigError("min_age", min_age, "is not a number of seconds >= 0")
        cleaned: List[str] = []
        cgroups = set(task_names(self.cgroup_parent))
        states = set(state_entries(self.state_root, self.cgroup_parent))
        now = time.time()
        for task_id in sorted(cgroups | states):
            state_dir = os.path.join(self.state_root, task_id)
            manager = new_manager(task_id, Resources(), parent=self.cgroup_parent) if task_id in cgroups else None
            if task_id in states:
                try:
                    age = now - os.stat(state_dir).st_mtime
                except FileNotFoundError:
                    continue
                if age < min_age or (manager is not None and manager.pids()):
                    continue
            log.warning("cleaning stale task %s (cgroup %s, state dir %s)", task_id,
                        "present" if manager else "gone", "present" if task_id in states else "gone")
            if manager is not None:
                manager.destroy()
            shutil.rmtree(state_dir, ignore_errors=True)
            cleaned.append(task_id)
        return cleaned

    @staticmethod
    def _abort(child: Child) -> None:
        """Kill and reap a child whose launch failed."""
        abort(child)

    # -- running -----------------------------------------------------------
    def _sample(self, per_process: bool = False) -> ResourceUsage:
        cgroup, collector = self._cgroup, self._collector
        if cgroup is not None:
            sample = cgroup.stats()
            if per_process and self._proc is not None:
                if self._process_sampler is None:
                    # Walk from the init but count the cgroup's members; the
                    # init itself (the monitor) is pyexec's, not the task's.
                    self._process_sampler = PidCollector(self._proc.pid, cache_seconds=1.0,
                                                         include_root=not self._init_used,
                                                         extra_pids=cgroup.pids)
                sample = dataclasses.replace(sample, processes=self._process_sampler.sample().processes)
            return sample
        if collector is not None and self._proc is not None and self._proc.result is None:
            return collector.sample()
        raise TaskExitedError("the task has exited")

    def update_resources(self, resources: Resources) -> None:
        """Change the running task's limits (validated like at launch)."""
        if not isinstance(resources, Resources):
            raise TypeError("update_resources() takes a Resources")
        self._running()
        cgroup = self._cgroup
        if cgroup is None:
            if self._collector is not None and self._proc is not None and self._proc.result is None:
                for field in dataclasses.fields(resources):
                    value = getattr(resources, field.name)
                    if value is not None:
                        raise ConfigError(field.name, value, "needs a cgroup, and this task has none")
                return
            raise TaskExitedError("the task has exited")
        cgroup.update(resources)

    # -- the end -----------------------------------------------------------
    def _on_exit(self, result: ExitResult) -> ExitResult:
        # The main process is reaped. Its stragglers die with its pid namespace
        # (container), its init's last sweep (universal) or its cgroup, here.
        cgroup = self._cgroup
        if cgroup is not None:
            try:
                usage = cgroup.stats()
                result = dataclasses.replace(result, usage=usage, oom_killed=cgroup.oom_killed(usage))
            except OSError as exc:
                log.warning("task %s: reading final cgroup stats failed: %s", self.task_id, exc)
        self._teardown()  # destroying the cgroup kills any straggler
        return result

    def _kill_all(self) -> None:
        proc = self._proc
        if self._cgroup is not None:
            if proc is not None:
                # The init: as pid 1 of a namespace its death takes every process with it.
                proc.send_signal(signal.SIGKILL)
            self._cgroup.kill_all()
            return
        if proc is not None and self._collector is not None:
            self._kill_tree(proc)

    def _kill_tree(self, proc: TaskHandle) -> None:
        """No cgroup: SIGKILL everything below the init, found again each round,
        until the init exits (it does once the task is gone, after killing
        whatever it adopted); the init itself last, if it is still there."""
        assert self._collector is not None
        deadline = time.monotonic() + KILL_TIMEOUT
        while proc.result is None and time.monotonic() < deadline:
            if not self._collector.kill_tree(signal.SIGKILL):
                break
            try:
                proc.wait(0.05)
            except TimeoutError:
                pass
        proc.send_signal(signal.SIGKILL)

    def _teardown(self) -> None:
        """Remove what launch made; safe to call more than once."""
        lifeline, self._lifeline = self._lifeline, None
        if lifeline is not None:
            os.close(lifeline)
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            cgroup.destroy(keep_parents=True)  # kills whatever is left first
        if self._state_dir is not None:
            remove_state_dir(self._state_dir)
            self._state_dir = None
        if self._made_task_dir is not None and self._proc is None:
            shutil.rmtree(self._made_task_dir, ignore_errors=True)
            self._made_task_dir = None
