"""``pyexec-oci exec`` driven through subprocess as containerd's shim and conmon
call it: foreground with output and exit status, --detach with a pid file
(the process a child of the calling subreaper, in every namespace and the
cgroup of the container), --process JSON, a terminal over --console-socket,
the refusals, --preserve-fds; and the foreground result next to runc's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from support.oci import (
    PYEXEC_OCI,
    Bundle,
    ConsoleSocket,
    Runtime,
    as_subreaper,
    base_config,
    client_runtime,
    make_rootfs,
)

pytestmark = pytest.mark.needs_root(reason="an OCI runtime makes namespaces, mounts and cgroups")

CID = "x1"
RUNC = "/usr/sbin/runc"


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def oci(tmp_path: Path) -> Iterator[Runtime]:
    """pyexec-oci called by a child subreaper, as conmon and the shim are."""
    with as_subreaper(), client_runtime(PYEXEC_OCI, tmp_path / "pyexec-state", tmp_path / "pyexec-log.json") as rt:
        yield rt


@pytest.fixture
def bundle(tmp_path: Path, rootfs: Path) -> Bundle:
    directory = tmp_path / "bundle"
    directory.mkdir()
    config = base_config(["/bin/sleep", "300"])
    config["root"]["path"] = str(rootfs)
    return Bundle(directory).write(config)


def _running(runtime: Runtime, bundle: Bundle, tmp_path: Path, container_id: str = CID) -> Dict[str, Any]:
    runtime.create(container_id, bundle.path, tmp_path / f"{container_id}.out")
    runtime("start", container_id)
    return runtime.state(container_id)


def _wait_gone(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not end")


def test_foreground_exec_prints_and_exits_with_the_status(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    _running(oci, bundle, tmp_path)
    done = oci("exec", CID, "/bin/sh", "-c", "echo out:$(hostname):$$; echo err >&2; exit 7", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (7, "out:oci:2\n", "err\n"), done.stderr
    killed = oci("exec", CID, "/bin/sh", "-c", "kill -TERM $$", check=False)
    assert killed.returncode == 128 + 15
    missing = oci("exec", CID, "nosuchprog", check=False)
    assert missing.returncode == 1
    assert 'exec: "nosuchprog": executable file not found in $PATH' in missing.stderr


def test_detached_exec_is_the_callers_child_in_the_container(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    init = _running(oci, bundle, tmp_path)["pid"]
    pid_file = tmp_path / "exec.pid"
    out = tmp_path / "exec.out"
    with open(out, "wb") as f:
        done = subprocess.run([*oci.argv, "--root", str(oci.root), "exec", "--detach", "--pid-file", str(pid_file),
                               CID, "/bin/sh", "-c", "read x; echo $x $(hostname)"],
                              stdout=f, stderr=f, timeout=30, input=b"")
    assert done.returncode == 0, out.read_text()
    text = pid_file.read_text()
    assert text.isdigit(), repr(text)
    pid = int(text)
    # Not yet reaped: the runtime left it to us, the subreaper, and nothing of it above.
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    # (It may be a zombie already: its namespaces are gone then, but the parent and NSpid stay.)
    assert int(status["PPid"]) == os.getpid()
    assert len(status["NSpid"].split()) == 2 and status["NSpid"].split()[1] != "1"
    with open(f"/proc/{init}/cgroup") as f:
        container_cgroup = f.read()
    assert _wait_gone(pid) == 0
    assert out.read_text() == "oci\n"
    # Its namespaces and cgroup, checked on a process that stays.
    # (Not through oci(): its pipes would stay open in the process.)
    subprocess.run([*oci.argv, "--root", str(oci.root), "exec", "--detach", "--pid-file", str(pid_file), CID,
                    "/bin/sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=30)
    pid = int(pid_file.read_text())
    try:
        for ns in ("mnt", "pid", "uts", "net", "ipc"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
        with open(f"/proc/{pid}/cgroup") as f:
            assert f.read() == container_cgroup
        assert os.readlink(f"/proc/{pid}/root") == "/"
        assert os.stat(f"/proc/{pid}/root/bin/busybox").st_ino == os.stat(f"/proc/{init}/root/bin/busybox").st_ino
    finally:
        os.kill(pid, 9)
        _wait_gone(pid)


def test_process_json_sets_user_env_cwd(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    _running(oci, bundle, tmp_path)
    process = {"args": ["/bin/sh", "-c", "echo $(id -u):$(id -g):$(id -G | tr ' ' ,):$PWD:$FOO:$HOME"],
               "cwd": "/tmp", "env": ["PATH=/bin", "FOO=bar"],
               "user": {"uid": 65534, "gid": 65534, "additionalGids": [5]}}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    # --process wins over the flags (runc's rule): --cwd and --user are ignored.
    done = oci("exec", "--process", str(path), "--cwd", "/", "--user", "0", CID)
    assert done.stdout == "65534:65534:65534,5:/tmp:bar:/\n"
    process["user"] = {"uid": "nobody"}
    path.write_text(json.dumps(process))
    bad = oci("exec", "--process", str(path), CID, check=False)
    assert bad.returncode == 1 and "user.uid" in bad.stderr, bad.stderr
    # Flags without --process: on top of the bundle's process.
    done = oci("exec", "--user", "65534:65534", "--cwd", "/tmp", "--env", "FOO=flag", CID,
               "/bin/sh", "-c", "echo $(id -u):$PWD:$FOO")
    assert done.stdout == "65534:/tmp:flag\n"


def test_tty_exec_sends_the_master(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    _running(oci, bundle, tmp_path)
    console = ConsoleSocket(tmp_path / "console.sock")
    pid_file = tmp_path / "tty.pid"
    try:
        proc = subprocess.Popen([*oci.argv, "--root", str(oci.root), "exec", "--detach", "--tty", "--console-socket",
                                 str(console.path), "--pid-file", str(pid_file), CID, "/bin/sh", "-c",
                                 "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; tty"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        name, master = console.receive()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        console.close()
    assert name == b"/dev/ptmx"
    data = b""
    try:
        while True:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            data += chunk
    except OSError:  # EIO once the slave's last holder is gone
        pass
    os.close(master)
    assert b"is-a-tty" in data and b"/dev/pts/" in data, data
    _wait_gone(int(pid_file.read_text()))


def test_exec_into_stopped_or_paused_fails_like_runc(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    _running(oci, bundle, tmp_path)
    oci("pause", CID)
    paused = oci("exec", CID, "/bin/true", check=False)
    assert paused.returncode == 1 and "cannot exec in a paused container" in paused.stderr
    oci("resume", CID)
    oci("kill", CID, "9")
    deadline = time.monotonic() + 10
    while oci.state(CID)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    stopped = oci("exec", CID, "/bin/true", check=False)
    assert stopped.returncode == 1 and "cannot exec in a stopped container" in stopped.stderr


def test_preserve_fds_keeps_fd_3(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    _running(oci, bundle, tmp_path)
    read_end, write_end = os.pipe()
    try:
        done = subprocess.run([*oci.argv, "--root", str(oci.root), "exec", "--preserve-fds", "1", CID,
                               "/bin/sh", "-c", "echo through-3 >&3; ls /proc/self/fd | sort -n | tr '\\n' ' '"],
                              stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30,
                              close_fds=False, preexec_fn=lambda: os.dup2(write_end, 3))
        os.close(write_end)
        write_end = -1
        assert done.returncode == 0, done.stderr
        assert os.read(read_end, 100) == b"through-3\n"
        # 0-2, 3, and ls's own directory fd: nothing else of the runtime or the shim.
        assert done.stdout.split()[:4] == ["0", "1", "2", "3"] and len(done.stdout.split()) == 5, done.stdout
        missing = oci("exec", "--preserve-fds", "3", CID, "/bin/true", check=False)
        assert missing.returncode == 1 and "fd 3 is not open" in missing.stderr
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_create_preserve_fds(oci: Runtime, bundle: Bundle, tmp_path: Path, rootfs: Path) -> None:
    config = base_config(["/bin/sh", "-c", "echo from-init >&3; ls /proc/self/fd | wc -l"])
    config["root"]["path"] = str(rootfs)
    bundle.write(config)
    read_end, write_end = os.pipe()
    out = tmp_path / "out"
    try:
        cmd = [*oci.argv, "--root", str(oci.root), "run", "--bundle", str(bundle.path), "--preserve-fds", "1", CID]
        with open(out, "wb") as f:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=30, close_fds=False,
                                  preexec_fn=lambda: os.dup2(write_end, 3))
        os.close(write_end)
        write_end = -1
        assert done.returncode == 0, out.read_text()
        assert os.read(read_end, 100) == b"from-init\n"
        assert out.read_text().strip() == "5"  # 0-3 and ls's directory
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


@pytest.mark.skipif(not os.path.exists(RUNC) and shutil.which("runc") is None, reason="Debian's runc is not installed")
def test_foreground_exec_matches_runc(oci: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    script = "echo $(hostname) $(id -u) $PWD; ls /; exit 3"
    results = []
    for name, argv in (("pyexec", oci.argv), ("runc", [RUNC if os.path.exists(RUNC) else "runc"])):
        runtime = Runtime(argv, tmp_path / f"{name}-diff-state", tmp_path / f"{name}-diff-log.json")
        try:
            _running(runtime, bundle, tmp_path, container_id=f"d-{name}")
            done = runtime("exec", f"d-{name}", "/bin/sh", "-c", script, check=False)
            results.append((done.returncode, done.stdout))
        finally:
            runtime("delete", "--force", f"d-{name}", check=False)
    assert results[0] == results[1]


def test_exec_gets_the_containers_seccomp_filter(oci: Runtime, bundle: Bundle, tmp_path: Path, rootfs: Path) -> None:
    config = base_config(["/bin/sleep", "300"])
    config["root"]["path"] = str(rootfs)
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                                "errnoRet": 1}]}
    bundle.write(config)
    _running(oci, bundle, tmp_path)
    done = oci("exec", CID, "/bin/mkdir", "/tmp/d", check=False)
    assert done.returncode == 1 and "Operation not permitted" in done.stderr, done.stderr
