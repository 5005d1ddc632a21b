"""The OCI runtime's record of its containers: ``<root>/<id>/``.

Each container has a directory under the runtime's ``--root`` (created 0700)
holding ``state.json`` (``ContainerRecord``: what ``state`` prints, plus what
the later verbs need to find the container again: the process's start time,
its cgroup, the hooks still to run, the namespaces an exec joins) and, while
the container is ``created``, the FIFO its process waits on before its
exec (``exec.fifo``; ``start`` writes one byte into it and removes it).

The status is never stored: it is read from the kernel each time
(``status``): stopped when the process is gone, a zombie, or a different
process with the same pid (its start time differs); paused when its cgroup
is frozen; created while the FIFO exists; else running. A record lasts until
``delete``. ``locked`` serialises the verbs that change a container.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from ..executor.state import write_atomically
from ..handles import process_identity

__all__ = ["DEFAULT_ROOT", "STATE_FILE", "FIFO", "ContainerRecord", "NotFound", "Root", "rfc3339_now",
           "process_start"]

DEFAULT_ROOT = "/run/pyexec-oci"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
# runc's rule for ids: no path separators, nothing a file name cannot be.
_ID_RE = re.compile(r"^[\w+\-.]+$")


class NotFound(Exception):
    """No container of that id (the text clients match: "container does not exist")."""

    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id} does not exist")  # runc: "container does not exist"


def rfc3339_now() -> str:
    """Now as RFC 3339 in UTC with nanoseconds, the way runc writes ``created``."""
    ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def process_start(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot (None: gone)."""
    identity = process_identity(pid)
    return identity[0] if identity is not None else None


@dataclass
class ContainerRecord:
    """What the runtime keeps of one container (state.json).

    ``pid`` is the host pid of the container's process and ``pid_start`` its
    start time (clock ticks since boot), so a reused pid is never taken for
    it. ``cgroup`` says where its cgroup is (``{"parent": "a/b", "name":
    "c"}``), ``hooks`` the poststart/poststop hooks still to run (the OCI
    form), ``namespaces`` the namespace types it made (an exec joins them).
    """

    id: str
    bundle: str
    rootfs: str
    pid: int
    pid_start: int
    created: str
    oci_version: str = "1.1.0"
    annotations: Dict[str, str] = field(default_factory=dict)
    owner: str = ""
    cgroup: Dict[str, str] = field(default_factory=dict)
    hooks: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    namespaces: List[str] = field(default_factory=list)
    process: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=None, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ContainerRecord":
        value = json.loads(data)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names})

    def spec_state(self, status: str) -> Dict[str, Any]:
        """The runtime-spec state object (what ``state`` prints): pid 0 once stopped."""
        out: Dict[str, Any] = {
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        return out


class Root:
    """The runtime's state root (``--root``): one directory per container."""

    def __init__(self, path: str = DEFAULT_ROOT) -> None:
        self.path = os.path.abspath(path)

    def ensure(self) -> None:
        """Make the root (0700) if it is missing."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    @staticmethod
    def check_id(container_id: str) -> None:
        if not container_id or container_id in (".", "..") or not _ID_RE.match(container_id):
            raise ValueError(f"invalid container id: {container_id!r}")

    def dir(self, container_id: str) -> str:
        self.check_id(container_id)
        return os.path.join(self.path, container_id)

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), FIFO)

    def ids(self) -> List[str]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self.path, n, STATE_FILE)))

    def load(self, container_id: str) -> ContainerRecord:
        """The record of ``container_id``; NotFound when there is none."""
        try:
            path = os.path.join(self.dir(container_id), STATE_FILE)
        except ValueError:
            raise NotFound(container_id) from None
        try:
            with open(path, "rb") as f:
                return ContainerRecord.from_json(f.read())
        except FileNotFoundError:
            raise NotFound(container_id) from None

    def save(self, record: ContainerRecord) -> None:
        write_atomically(os.path.join(self.dir(record.id), STATE_FILE), record.to_json())

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.dir(container_id), ignore_errors=True)

    @contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        """Hold the container's lock (flock on its directory) for one verb."""
        try:
            fd = os.open(self.dir(container_id), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ValueError):
            raise NotFound(container_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def status(self, record: ContainerRecord, frozen: Optional[bool] = None) -> str:
        """created, running, paused or stopped, read from the kernel now.
        ``frozen``: whether its cgroup is frozen, when the caller knows."""
        if record.pid <= 0 or not _alive(record.pid, record.pid_start):
            return "stopped"
        if frozen:
            return "paused"
        if os.path.exists(self.fifo(record.id)):
            return "created"
        return "running"


def _alive(pid: int, start: int) -> bool:
    """Whether ``pid`` is still that process (same start time) and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return False
        raise
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == start
