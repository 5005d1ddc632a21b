"""``exec``: one more process in a running container, the way runc runs it.

The process is runtime-spec's ``process`` object: ``--process FILE``
(then every other process flag is ignored, runc's rule), else the bundle's
own ``process`` with the command after the id and the flags applied on top
(``--cwd``, ``--env`` appended, ``--tty``, ``--user UID[:GID]``,
``--additional-gids``, ``--cap`` added to the bounding, effective and
permitted sets, ``--no-new-privs``, ``--apparmor``, ``--process-label``).

It joins every namespace of the container's process that differs from
ours, in one setns() through a pidfd of it (the shim's init-less join mode,
csrc/join.c), is born in the container's cgroup, and gets the process's
user, groups, capabilities, rlimits (the container's when it names none,
as runc does), noNewPrivileges, cwd and env (plus HOME when missing, as
create does) and the container's seccomp filter (compiled at create, kept
in the record). Its stdio is ours, or with ``terminal`` a pty made inside
the container whose master goes over ``--console-socket``.

The process that execs the program is a child of this runtime (a
CLONE_PARENT fork in the container's pid namespace, or the clone itself),
so ``--detach`` just writes the pid file and exits: the process goes to our
caller's subreaper (conmon, containerd's shim) with nothing of pyexec above
it. Without ``--detach``, exec forwards the usual signals to it, waits, and
exits with its status (128 + signal).

Which containers: running and created ones (runc 1.1 allows an exec into a
created container: its namespaces exist, its own process waits before its
exec); a stopped one fails with "cannot exec in a stopped container", a
paused one with runc's text unless ``--ignore-paused``.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..config import DEFAULT_PATH
from ..errors import ConfigError, LaunchError
from ..executor.launch import Identity, namespaces_to_join, spawn_into_cgroup, spawn_plan
from ..process import decode_wait_status
from ..shim import Child, abort, finish
from ..users import TaskUser
from .args import Invocation
from .cgroup import container_cgroup
from .create import check_preserved_fds, connect_console, exec_failure, write_pid_file
from .plan import DEFAULT_UMASK, process_capabilities, process_env
from .spec import OciProcess, parse_process
from .state import ContainerRecord, Root, process_start
from .verbs import RuntimeFailure, status_of

__all__ = ["ExecOptions", "exec_options", "exec_process", "exec_verb"]

# /proc/PID/ns names -> the flag of one setns() through the pidfd.
# What a foreground exec passes on to its process (runc forwards every signal it can catch).
_FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH)


@dataclass
class ExecOptions:
    """exec's flags; ``command`` is what follows the container id."""

    command: List[str] = field(default_factory=list)
    process_file: Optional[str] = None
    detach: bool = False
    pid_file: Optional[str] = None
    tty: bool = False
    console_socket: Optional[str] = None
    cwd: Optional[str] = None
    env: List[str] = field(default_factory=list)
    user: Optional[str] = None
    additional_gids: List[str] = field(default_factory=list)
    caps: List[str] = field(default_factory=list)
    no_new_privs: bool = False
    preserve_fds: int = 0
    process_label: Optional[str] = None
    apparmor: Optional[str] = None
    ignore_paused: bool = False


def exec_options(inv: Invocation) -> ExecOptions:
    """The options of a parsed ``exec`` command line."""
    def text(key: str) -> Optional[str]:
        value = inv.flags.get(key)
        return value if isinstance(value, str) and value else None

    def texts(key: str) -> List[str]:
        value = inv.flags.get(key)
        return list(value) if isinstance(value, list) else []

    preserve = text("preserve-fds") or "0"
    if not preserve.isdigit():
        raise RuntimeFailure(f"invalid value {preserve!r} for --preserve-fds")
    return ExecOptions(command=list(inv.args[1:]), process_file=text("process"), detach=bool(inv.flags.get("detach")),
                       pid_file=text("pid-file"), tty=bool(inv.flags.get("tty")), console_socket=text("console-socket"),
                       cwd=text("cwd"), env=texts("env"), user=text("user"), additional_gids=texts("additional-gids"),
                       caps=texts("cap"), no_new_privs=bool(inv.flags.get("no-new-privs")),
                       preserve_fds=int(preserve), process_label=text("process-label"), apparmor=text("apparmor"),
                       ignore_paused=bool(inv.flags.get("ignore-paused")))


def _bundle_process(record: ContainerRecord) -> Dict[str, Any]:
    """The bundle's own ``process`` object, as JSON (empty when unreadable)."""
    try:
        with open(os.path.join(record.bundle, "config.json"), "rb") as f:
            value = json.load(f).get("process")
    except (OSError, ValueError, AttributeError):
        return {}
    return dict(value) if isinstance(value, dict) else {}


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RuntimeFailure(f"parsing {text} as int for {what} failed") from None


def _from_flags(record: ContainerRecord, options: ExecOptions) -> Dict[str, Any]:
    """runc's exec without --process: the bundle's process, changed by the flags."""
    if not options.command:
        raise RuntimeFailure("exec args cannot be empty")
    p = _bundle_process(record)
    p["args"] = list(options.command)
    p.setdefault("cwd", "/")
    if options.cwd:
        p["cwd"] = options.cwd
    p["env"] = list(p.get("env") or []) + options.env
    p["terminal"] = options.tty
    p.pop("consoleSize", None)
    if options.apparmor:
        p["apparmorProfile"] = options.apparmor
    if options.process_label:
        p["selinuxLabel"] = options.process_label
    if options.no_new_privs:
        p["noNewPrivileges"] = True
    if options.caps:
        caps = dict(p.get("capabilities") or {})
        sets = ["bounding", "effective", "permitted"] + (["ambient"] if caps.get("inheritable") else [])
        for name in sets:
            caps[name] = list(caps.get(name) or []) + options.caps
        p["capabilities"] = caps
    user = dict(p.get("user") or {})
    if options.user:
        uid, _, gid = options.user.partition(":")
        user["uid"] = _int(uid, "uid")
        if gid:
            user["gid"] = _int(gid, "gid")
    if options.additional_gids:
        user["additionalGids"] = list(user.get("additionalGids") or []) + [
            _int(g, "additional gid") for g in options.additional_gids]
    p["user"] = user
    return p


def _load_process(record: ContainerRecord, options: ExecOptions) -> OciProcess:
    if options.process_file is None:
        return parse_process(_from_flags(record, options), path="process")
    try:
        with open(options.process_file, "rb") as f:
            value = json.load(f)
    except OSError as exc:
        raise RuntimeFailure(f"open {options.process_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise RuntimeFailure(f"{options.process_file}: invalid JSON: {exc}") from None
    return parse_process(value, path="")


def _rlimits(process: OciProcess, record: ContainerRecord) -> OciProcess:
    """runc's rule: a process that names no rlimits gets the container's."""
    if process.rlimits:
        return process
    container = _bundle_process(record)
    if not container.get("rlimits"):
        return process
    try:
        limits = parse_process(container, path="process").rlimits
    except ConfigError:
        return process
    return dataclasses.replace(process, rlimits=limits)


def _seccomp(record: ContainerRecord) -> Optional[bytes]:
    encoded = record.process.get("seccomp")
    return base64.b64decode(encoded) if isinstance(encoded, str) and encoded else None


def _open_container(root: Root, record: ContainerRecord, ignore_paused: bool) -> int:
    """A pidfd of the container's process, which must be running (or created)."""
    status = status_of(root, record)
    if status == "stopped":
        raise RuntimeFailure("cannot exec in a stopped container")
    if status == "paused" and not ignore_paused:
        raise RuntimeFailure("cannot exec in a paused container (use --ignore-paused to override)")
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        raise RuntimeFailure("cannot exec in a stopped container") from None
    # The pidfd is of whatever has the pid now: make sure it is still the container's.
    if process_start(record.pid) != record.pid_start:
        os.close(pidfd)
        raise RuntimeFailure("cannot exec in a stopped container")
    return pidfd


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _launch(root: Root, record: ContainerRecord, process: OciProcess, options: ExecOptions) -> int:
    """Start the process; the host pid of the one that exec'd the program."""
    pidfd = _open_container(root, record, options.ignore_paused)
    console_fd = -1
    child: Optional[Child] = None
    try:
        user = process.user
        identity = Identity(
            user=TaskUser(uid=user.uid, gid=user.gid, groups=tuple(user.additional_gids), name=None, home="/"),
            capabilities=process_capabilities(process),
            no_new_privs=process.no_new_privileges,
            rlimits=[(r.resource, r.soft, r.hard, r.type) for r in process.rlimits],
            seccomp_filter=_seccomp(record),
            oom_score_adj=process.oom_score_adj,
        )
        env = process_env(process, record.rootfs, user.uid)
        plan = spawn_plan(process.args[0], process.args, env, env.get("PATH", DEFAULT_PATH), process.cwd, identity,
                          user_env=False, use_init=False, join_pidfd=pidfd,
                          clone_flags=namespaces_to_join(record.pid), stdio=(0, 1, 2),
                          umask=user.umask if user.umask is not None else DEFAULT_UMASK,
                          preserve_fds=options.preserve_fds)
        if process.terminal:
            assert options.console_socket is not None
            console_fd = connect_console(options.console_socket)
            plan.console_socket_fd = console_fd
            if process.console_size is not None:
                plan.console_rows, plan.console_cols = process.console_size.height, process.console_size.width
        child = spawn_into_cgroup(plan, container_cgroup(record.cgroup, adopt=True))
        try:
            finish(child)
        except LaunchError as exc:
            raise exec_failure(exc, process.args[0]) from None
        task = child.task_pid
        if task != child.pid:
            _reap(child.pid)  # the intermediate of a joined pid namespace: it exits right after the fork
        return task
    except BaseException:
        if child is not None:
            failed_task = child.task_pid
            abort(child)
            if failed_task > 0 and failed_task != child.pid:
                _reap(failed_task)  # a fork that failed is our child too
        raise
    finally:
        for fd in (pidfd, console_fd):
            if fd >= 0:
                os.close(fd)
        if child is not None and child.pidfd >= 0:
            os.close(child.pidfd)


def _wait(pid: int) -> int:
    """Forward signals to ``pid`` until it ends; its exit status (128 + signal)."""
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:  # reaped elsewhere (our caller ignores SIGCHLD)
            return 0
    code, _ = decode_wait_status(status)
    return code


def exec_process(root: Root, container_id: str, options: ExecOptions) -> int:
    """Run ``options``' process in ``container_id``; 0 with ``detach``, else its exit status."""
    check_preserved_fds(options.preserve_fds)
    record = root.load(container_id)
    process = _rlimits(_load_process(record, options), record)
    if process.terminal and options.console_socket is None:
        if options.detach:
            raise RuntimeFailure("cannot allocate tty if runc will detach without setting console socket")
        raise RuntimeFailure("a terminal without --console-socket is not supported by pyexec-oci yet")
    if not process.terminal and options.console_socket is not None:
        raise RuntimeFailure("--console-socket given but process.terminal is false")
    with root.locked(container_id):
        pid = _launch(root, root.load(container_id), process, options)
    if options.pid_file is not None:
        try:
            write_pid_file(options.pid_file, pid)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
            raise
    if options.detach:
        return 0
    return _wait(pid)


def exec_verb(root: Root, inv: Invocation) -> int:
    """cli.py's handler of ``exec``."""
    return exec_process(root, inv.args[0], exec_options(inv))
