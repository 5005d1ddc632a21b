"""The verbs that act on an existing container: start, state, list, kill,
delete, pause, resume, ps.

Each takes the runtime's ``Root`` and the parsed operands, prints what runc
prints (nothing on success, except the verbs that report) and raises
``RuntimeFailure`` with runc's texts where clients match them ("container
does not exist", "container not running"). They run as short-lived
processes: everything is found again from the container's record and the
kernel, and nothing of them stays behind.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from typing import IO, List, Optional, Tuple

from ..cgroups import CgroupManager
from .cgroup import container_cgroup
from .hooks import run_hooks
from .signals import parse_signal, signal_all, signal_process
from .state import ContainerRecord, NotFound, Root

__all__ = ["RuntimeFailure", "start", "state", "list_containers", "kill", "delete", "pause", "resume", "ps",
           "status_of"]

DELETE_WAIT = 10.0  # seconds for a killed container's process to go before delete gives up
START_WAIT = 10.0   # seconds start waits for the released process to exec


class RuntimeFailure(Exception):
    """A verb failed; the text is what the client sees (stderr and --log)."""


def _cgroup_and_status(root: Root, record: ContainerRecord) -> Tuple[Optional[CgroupManager], str]:
    """The container's cgroup (None: none, or gone) and its status now."""
    cgroup = container_cgroup(record.cgroup)
    return cgroup, root.status(record, frozen=cgroup.frozen() if cgroup is not None else False)


def status_of(root: Root, record: ContainerRecord) -> str:
    return _cgroup_and_status(root, record)[1]


def state(root: Root, container_id: str, out: IO[str] = sys.stdout) -> None:
    record = root.load(container_id)
    json.dump(record.spec_state(status_of(root, record)), out, indent=2)
    out.write("\n")


def list_containers(root: Root, fmt: str = "table", quiet: bool = False, out: IO[str] = sys.stdout) -> None:
    records: List[ContainerRecord] = []
    for container_id in root.ids():
        try:
            records.append(root.load(container_id))
        except (NotFound, ValueError, OSError):
            continue  # removed meanwhile, or half-written by a create that died
    if quiet:
        for record in records:
            out.write(record.id + "\n")
        return
    states = [record.spec_state(status_of(root, record)) for record in records]
    if fmt == "json":
        json.dump(states, out)
        out.write("\n")
        return
    if fmt not in ("table", ""):
        raise RuntimeFailure(f"invalid format option: {fmt}")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root")
             for s in states]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")


def start(root: Root, container_id: str) -> None:
    """Release a created container: one byte into its FIFO, which goes."""
    with root.locked(container_id):
        record = root.load(container_id)
        status = status_of(root, record)
        if status != "created":
            raise RuntimeFailure(f"cannot start a container that is {status}" if status != "stopped"
                                 else "cannot start a container that has stopped")
        fifo = root.fifo(container_id)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            # ENXIO: nobody holds its read end, the process is gone.
            raise RuntimeFailure(f"cannot start container {container_id}: {exc.strerror}") from None
        try:
            os.write(fd, b"\0")
            os.unlink(fifo)
            # The process holds the FIFO's read end until its exec closes it
            # (close-on-exec): the write end then reports POLLERR, and the
            # poststart hooks run after the program started (runtime-spec).
            poller = select.poll()
            poller.register(fd, select.POLLERR)
            poller.poll(START_WAIT * 1000)
        finally:
            os.close(fd)
        run_hooks(record, "poststart", status="running", fatal=False)


def kill(root: Root, container_id: str, sig_text: Optional[str], all_processes: bool = False) -> None:
    try:
        sig = parse_signal(sig_text) if sig_text else signal.SIGTERM
    except ValueError as exc:
        raise RuntimeFailure(str(exc)) from None
    record = root.load(container_id)
    cgroup, status = _cgroup_and_status(root, record)
    if status == "stopped":
        raise RuntimeFailure("container not running")
    if all_processes and cgroup is not None:
        signal_all(cgroup.pids(), sig)
        if status == "paused" and sig == signal.SIGKILL:
            cgroup.thaw()  # a frozen process dies only once it runs again
        return
    if not signal_process(record.pid, record.pid_start, sig):
        raise RuntimeFailure("container not running")
    if status == "paused" and sig == signal.SIGKILL and cgroup is not None:
        cgroup.thaw()


def _wait_gone(record: ContainerRecord, root: Root, timeout: float) -> bool:
    """Wait until the container's process has exited (it is not our child:
    its pidfd turns readable when it exits, reaped or not)."""
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return True
    try:
        if root.status(record) == "stopped":
            return True
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def delete(root: Root, container_id: str, force: bool = False) -> None:
    """Remove a stopped container (a created one is killed first; a running
    or paused one only with ``force``). ``force`` of a missing id is no error."""
    try:
        with root.locked(container_id):
            _delete(root, root.load(container_id), force)
    except NotFound:
        if not force:
            raise


def _delete(root: Root, record: ContainerRecord, force: bool) -> None:
    cgroup, status = _cgroup_and_status(root, record)
    if status in ("running", "paused") and not force:
        raise RuntimeFailure(f"cannot delete container {record.id} that is not stopped: {status}")
    if status != "stopped":
        if cgroup is not None:
            signal_all(cgroup.pids(), signal.SIGKILL)
            if status == "paused":
                cgroup.thaw()  # a frozen process dies only once it runs again
        signal_process(record.pid, record.pid_start, signal.SIGKILL)
        if not _wait_gone(record, root, DELETE_WAIT):
            raise RuntimeFailure(f"container {record.id}: its process survived SIGKILL for {DELETE_WAIT:.0f}s")
    if cgroup is not None:
        cgroup.destroy()  # kills what is left (a straggler of an exec) and removes it
    run_hooks(record, "poststop", status="stopped", fatal=False)
    root.remove(record.id)


def pause(root: Root, container_id: str) -> None:
    record = root.load(container_id)
    cgroup, status = _cgroup_and_status(root, record)
    if status not in ("running", "created"):
        raise RuntimeFailure("container not running" if status == "stopped" else f"container is {status}")
    if cgroup is None:
        raise RuntimeFailure(f"container {container_id} has no cgroup to freeze")
    cgroup.freeze()


def resume(root: Root, container_id: str) -> None:
    record = root.load(container_id)
    cgroup, status = _cgroup_and_status(root, record)
    if status != "paused":
        raise RuntimeFailure("container not paused" if status != "stopped" else "container not running")
    assert cgroup is not None
    cgroup.thaw()


def ps(root: Root, container_id: str, fmt: str = "table", ps_args: Optional[List[str]] = None,
       out: IO[str] = sys.stdout) -> None:
    record = root.load(container_id)
    cgroup = container_cgroup(record.cgroup)
    pids = cgroup.pids() if cgroup is not None else []
    if fmt == "json":
        json.dump(pids, out)
        out.write("\n")
        return
    if fmt not in ("table", ""):
        raise RuntimeFailure(f"invalid format option: {fmt}")
    # runc's table: ps(1) with the caller's arguments, only the container's rows.
    result = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeFailure(f"ps: {result.stderr.strip()}")
    lines = result.stdout.splitlines()
    if not lines:
        return
    header = lines[0].split()
    try:
        column = header.index("PID")
    except ValueError:
        raise RuntimeFailure("ps output has no PID column") from None
    wanted = set(pids)
    out.write(lines[0] + "\n")
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            out.write(line + "\n")
