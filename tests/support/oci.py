"""Driving an OCI runtime the way clients do: bundles, the command, a console socket.

``Bundle`` is a busybox-static root file system (every applet a relative
link to /bin/busybox, an /etc/passwd and /etc/group) with a config.json
written from ``base_config()``; ``Runtime`` runs ``pyexec-oci`` (or runc, for
the differential tests) as a subprocess with a private ``--root`` and the
JSON log format, exactly as containerd's shim calls it; ``ConsoleSocket``
is the receiving end of ``--console-socket``.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import prctl

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
PYEXEC_OCI = [sys.executable, "-m", "pyexec.oci"]

_BASE: Dict[str, Any] = {
    "ociVersion": "1.1.0",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["/bin/true"],
        "env": ["PATH=/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {s: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                         for s in ("bounding", "effective", "permitted")},
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "oci",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
    ],
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "maskedPaths": ["/proc/kcore", "/proc/keys"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
    },
}


def base_config(args: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    config = copy.deepcopy(_BASE)
    if args is not None:
        config["process"]["args"] = list(args)
    return config


def make_rootfs(path: Path) -> Path:
    """A busybox-static root at ``path`` (made once per test session by the fixture)."""
    bin_dir = path / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", bin_dir / applet)
    for name in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (path / name).mkdir(exist_ok=True)
    (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (path / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return path


@dataclass
class Bundle:
    """A bundle directory whose rootfs is a symlink-free copy of the session's busybox root."""

    path: Path

    def write(self, config: Dict[str, Any]) -> "Bundle":
        (self.path / "config.json").write_text(json.dumps(config))
        return self


class Runtime:
    """One runtime command with a private state root and a JSON log."""

    def __init__(self, argv: List[str], root: Path, log: Path) -> None:
        self.argv = argv
        self.root = root
        self.log = log

    def __call__(self, *args: str, check: bool = True, timeout: float = 30.0,
                 stdin: Optional[int] = subprocess.DEVNULL, **kwargs: Any) -> subprocess.CompletedProcess:
        cmd = [*self.argv, "--root", str(self.root), "--log", str(self.log), "--log-format", "json", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=stdin, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def create(self, container_id: str, bundle: Path, output: Path, *flags: str,
               check: bool = True) -> subprocess.CompletedProcess:
        """create with the container's stdout and stderr going to ``output``
        (a file: the container keeps its stdio after create exits, so a pipe
        would not see EOF until the container ends). The runtime's own
        messages go there too: the returned ``stderr`` is that file's text
        written during create."""
        cmd = [*self.argv, "--root", str(self.root), "--log", str(self.log), "--log-format", "json",
               "create", "--bundle", str(bundle), *flags, container_id]
        with open(output, "ab") as out:
            before = out.tell()
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30).returncode
        said = output.read_bytes()[before:].decode(errors="replace")
        result = subprocess.CompletedProcess(cmd, code, "", said)
        if check and code != 0:
            raise AssertionError(f"create {container_id} failed ({code}): {said}")
        return result

    def state(self, container_id: str) -> Dict[str, Any]:
        return dict(json.loads(self("state", container_id).stdout))

    def log_lines(self) -> List[Dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def reap_children(timeout: float = 5.0) -> None:
    """Reap every child of this process: the containers that came to it as
    their subreaper (deleted, so dead or dying) and nothing else of ours is
    left by then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


@contextmanager
def as_subreaper() -> Iterator[None]:
    """This process as a child subreaper, as conmon and containerd's shim are:
    a container's process is its child once create exits; at the end every
    child left (deleted containers, dead or dying) is reaped."""
    prctl.set_child_subreaper(1)
    try:
        yield
    finally:
        prctl.set_child_subreaper(0)
        reap_children()


@contextmanager
def client_runtime(argv: List[str], root: Path, log: Path) -> Iterator[Runtime]:
    """A ``Runtime`` whose containers are deleted at the end: a failed test
    must not leave them to the leak check of the next."""
    runtime = Runtime(argv, root, log)
    try:
        yield runtime
    finally:
        for container_id in os.listdir(runtime.root) if runtime.root.exists() else []:
            runtime("delete", "--force", container_id, check=False)


class ConsoleSocket:
    """The client side of --console-socket: listens, receives the pty master."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(20)

    def receive(self) -> "tuple[bytes, int]":
        """(the name sent with it, the master fd): exactly one fd in one message."""
        conn, _ = self.sock.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        assert len(fds) == 1, fds
        return msg, fds[0]

    def close(self) -> None:
        self.sock.close()
