"""``create`` and ``run``: a bundle becomes a container waiting before its exec.

create, in order (a failure at any step undoes every earlier one, so a
failed create leaves nothing behind):

  1. the whole config is validated and planned (spec.py, plan.py, mounts.py,
     resources.py): nothing exists yet;
  2. the container's directory under --root and its start FIFO;
  3. its cgroup, with the limits and device rules;
  4. the clone (the shim): the child is born in (or placed into) the
     cgroup and parks; the runtime writes the id maps of a new user
     namespace and runs the prestart, createRuntime and createContainer
     hooks with the state on stdin;
  5. the child sets up its root, credentials and limits, resolves
     ``args[0]`` (not found fails create) and then holds on the FIFO;
  6. the pid file (digits only, written atomically) and state.json.

create then exits: the container's process, pid 1 of its namespace, is
re-parented to the caller's subreaper (conmon, the containerd shim). The
runtime's own stdin, stdout and stderr are the container's stdio; with
``process.terminal`` the pty is made inside the container and its master
sent over ``--console-socket``. ``run`` is create, start, wait and delete in
one process (the container is its child then), or create and start with
``--detach``.
"""
from __future__ import annotations

import base64
import dataclasses
import errno
import os
import socket
from typing import Optional

from ..cgroups import CgroupManager
from ..errors import ConfigError, LaunchError
from ..executor.launch import spawn_into_cgroup, write_id_maps
from ..executor.state import write_atomically
from ..process import decode_wait_status
from ..shim import Child, abort, finish
from .cgroup import cgroup_location, open_cgroup
from .hooks import run_hook_list
from .plan import plan_container
from .resources import device_rules, to_resources
from .spec import OciConfig, OciHook, load_config
from .state import ContainerRecord, Root, process_start, rfc3339_now
from .verbs import RuntimeFailure, delete, start

__all__ = ["CreateOptions", "create", "run", "connect_console", "write_pid_file", "exec_failure", "check_preserved_fds"]


@dataclasses.dataclass
class CreateOptions:
    """create's (and run's) flags."""

    bundle: str = "."
    pid_file: Optional[str] = None
    console_socket: Optional[str] = None
    preserve_fds: int = 0
    systemd_cgroup: bool = False
    no_pivot: bool = False


def _hooks_json(hooks: tuple[OciHook, ...]) -> list[dict[str, object]]:
    return [{"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout} for h in hooks]


def connect_console(path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise RuntimeFailure(f"console socket {path}: {exc.strerror}") from None
    return sock.detach()


def write_pid_file(path: str, pid: int) -> None:
    # Digits only, no newline (containerd's Atoi), renamed into place whole.
    path = os.path.abspath(path)
    write_atomically(path, str(pid).encode())


def check_preserved_fds(count: int) -> None:
    """``--preserve-fds N``: the caller's fds 3..3+N-1 must all be open. Then
    every fd this runtime opens for the child lands above them, where the shim
    wants it (a shim fd among them would reach the container or be lost)."""
    for fd in range(3, 3 + count):
        try:
            os.fstat(fd)
        except OSError:
            raise RuntimeFailure(f"--preserve-fds {count}: fd {fd} is not open") from None


def create(root: Root, container_id: str, options: CreateOptions) -> ContainerRecord:
    """Make the container ``container_id`` from ``options.bundle``; returns its record."""
    Root.check_id(container_id)
    bundle = os.path.abspath(options.bundle)
    config = load_config(bundle)
    check_preserved_fds(options.preserve_fds)
    process = config.process
    if process is not None and process.terminal and options.console_socket is None:
        raise RuntimeFailure("cannot allocate tty if runc will detach without setting console socket")
    if process is not None and not process.terminal and options.console_socket is not None:
        raise RuntimeFailure("--console-socket given but process.terminal is false")
    parent, name = cgroup_location(config.linux.cgroups_path, container_id, options.systemd_cgroup)
    resources = to_resources(config.linux.resources)
    rules = device_rules(config.linux.resources, config.linux.devices)
    oci = plan_container(config, "/" + "/".join(part for part in (parent, name) if part))
    root.ensure()
    directory = root.dir(container_id)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        oci.close()
        raise RuntimeFailure(f"container with id exists: {container_id}") from None
    cgroup: Optional[CgroupManager] = None
    child: Optional[Child] = None
    fifo_fd = console_fd = -1
    try:
        fifo = root.fifo(container_id)
        os.mkfifo(fifo, 0o600)
        # O_RDWR: the child's read blocks until start writes, instead of seeing EOF.
        fifo_fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        plan = oci.plan
        plan.start_fd = fifo_fd
        plan.preserve_fds = options.preserve_fds
        if options.console_socket is not None:
            console_fd = connect_console(options.console_socket)
            plan.console_socket_fd = console_fd
            if process is not None and process.console_size is not None:
                plan.console_rows, plan.console_cols = process.console_size.height, process.console_size.width
        cgroup = open_cgroup(parent, name, resources)
        cgroup.device_rules = rules
        cgroup.create()
        child = spawn_into_cgroup(plan, cgroup)
        oci.close()
        record = ContainerRecord(
            id=container_id, bundle=bundle, rootfs=config.root.path, pid=child.pid,
            pid_start=process_start(child.pid) or 0, created=rfc3339_now(), oci_version=config.oci_version,
            annotations=dict(config.annotations), cgroup={"parent": parent, "name": name},
            hooks={"poststart": _hooks_json(config.hooks.poststart),
                   "poststop": _hooks_json(config.hooks.poststop)},
            namespaces=list(oci.namespaces),
            # exec's processes get the container's filter (runc's rule): compiled once, here.
            process={"seccomp": base64.b64encode(oci.plan.seccomp_filter).decode()
                     if oci.plan.seccomp_filter else None})
        if child.parked:
            if oci.uid_map:
                write_id_maps(child.pid, oci.uid_map, oci.gid_map)
            _creation_hooks(config, record)
        try:
            finish(child)
        except LaunchError as exc:
            raise exec_failure(exc, oci.plan.program) from None
        if options.pid_file is not None:
            write_pid_file(options.pid_file, child.pid)
        root.save(record)
        return record
    except BaseException:
        if child is not None:
            abort(child)
        if cgroup is not None:
            cgroup.destroy()
        root.remove(container_id)
        raise
    finally:
        oci.close()
        for fd in (fifo_fd, console_fd):
            if fd >= 0:
                os.close(fd)
        if child is not None:
            # The container's process is not ours to reap: it goes to the
            # caller's subreaper once we exit. Close our fds of it.
            for fd in (child.pidfd, child.status_fd):
                if fd >= 0:
                    os.close(fd)


def exec_failure(exc: LaunchError, program: str) -> Exception:
    """runc's texts for a program that cannot be run, which clients map to
    exit codes (127: not found, 126: permission denied)."""
    if exc.step != "exec":
        return exc
    if exc.errno == errno.ENOENT:
        if "/" not in program:
            return RuntimeFailure(f'exec: "{program}": executable file not found in $PATH')
        return RuntimeFailure(f'exec: "{program}": stat {program}: no such file or directory')
    if exc.errno == errno.EACCES:
        return RuntimeFailure(f'exec: "{program}": permission denied')
    return exc


def _creation_hooks(config: OciConfig, record: ContainerRecord) -> None:
    """prestart (deprecated), createRuntime and createContainer, while the
    child is parked in its new namespaces, before its root is set up."""
    state = record.spec_state("created")  # what runc and crun pass, and runtime-tools expects
    hooks = config.hooks
    run_hook_list(_hooks_json(hooks.prestart), "prestart", state)
    run_hook_list(_hooks_json(hooks.create_runtime), "createRuntime", state)
    run_hook_list(_hooks_json(hooks.create_container), "createContainer", state)
    if hooks.start_container:
        raise ConfigError("hooks.startContainer", _hooks_json(hooks.start_container),
                          "not supported by pyexec-oci yet")


def run(root: Root, container_id: str, options: CreateOptions, detach: bool = False, keep: bool = False) -> int:
    """create + start, then (unless ``detach``) wait and delete; the
    container's exit status (128 + signal when a signal killed it)."""
    record = create(root, container_id, options)
    try:
        start(root, container_id)
    except BaseException:
        delete(root, container_id, force=True)
        raise
    if detach:
        return 0
    try:
        _, status = os.waitpid(record.pid, 0)
    except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored by our caller)
        status = 0
    code, _ = decode_wait_status(status)
    if not keep:
        delete(root, container_id, force=True)
    return code
