"""pyexec-oci driven through subprocess exactly as a client does (containerd's
shim, conmon, the runtime-tools suite): a busybox-static bundle, every verb,
the pid file, the log format, the console socket, hooks, and bad configs,
each a clear error naming its JSON path with nothing left behind."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from conftest import wait_for
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

CONTAINER_ID = "t1"


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def oci(tmp_path: Path) -> Iterator[Runtime]:
    """pyexec-oci with a private root, called by a test that is a child
    subreaper, as conmon and containerd's shim are: a container's process is
    the test's child once create exits, and the test reaps it."""
    with as_subreaper(), client_runtime(PYEXEC_OCI, tmp_path / "state", tmp_path / "log.json") as runtime:
        yield runtime


@pytest.fixture
def bundle(tmp_path: Path, rootfs: Path) -> Bundle:
    directory = tmp_path / "bundle"
    directory.mkdir()
    return Bundle(directory)


def _config(rootfs: Path, *args: str, **process: Any) -> Dict[str, Any]:
    config = base_config(list(args))
    config["root"]["path"] = str(rootfs)
    config["process"].update(process)
    return config


def test_version_is_in_runcs_format(oci: Runtime) -> None:
    out = oci("--version").stdout.splitlines()
    assert re.fullmatch(r"pyexec-oci version \S+", out[0])
    assert out[1].startswith("commit: ") and out[2] == "spec: 1.1.0"


def test_create_start_state_delete(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/sh", "-c", "echo hello from $(hostname); cat /proc/self/status"))
    pid_file = tmp_path / "init.pid"
    out = tmp_path / "out"
    created = oci.create(CONTAINER_ID, bundle.path, out, "--pid-file", str(pid_file))
    assert created.stderr == ""  # nothing the runtime says reaches the container's stdio
    text = pid_file.read_text()
    assert text.isdigit(), repr(text)  # digits only, no newline (containerd's Atoi)
    state = oci.state(CONTAINER_ID)
    assert state["status"] == "created" and state["pid"] == int(text)
    assert state["bundle"] == str(bundle.path) and state["id"] == CONTAINER_ID
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", state["created"])
    assert "hello" not in out.read_text()  # it waits before its exec
    oci("start", CONTAINER_ID)
    wait_for(lambda: oci.state(CONTAINER_ID)["status"] == "stopped", what="the container to exit")
    assert oci.state(CONTAINER_ID)["pid"] == 0
    output = out.read_text()
    assert "hello from oci" in output
    assert re.search(r"NoNewPrivs:\s+1", output) and re.search(r"NSpid:\s+1\n", output), output
    assert oci("start", CONTAINER_ID, check=False).returncode == 1
    oci("delete", CONTAINER_ID)
    assert not (oci.root / CONTAINER_ID).exists()
    assert oci("state", CONTAINER_ID, check=False).stderr.strip() == f"container {CONTAINER_ID} does not exist"


def test_a_missing_program_fails_create_and_leaves_nothing(oci: Runtime, bundle: Bundle, rootfs: Path,
                                                           tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "nope-not-here"))
    result = oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", check=False)
    assert result.returncode == 1
    assert "executable file not found in $PATH" in result.stderr
    error = oci.log_lines()[-1]
    assert error["level"] == "error" and "executable file not found" in error["msg"] and error["time"]
    assert not (oci.root / CONTAINER_ID).exists()
    assert oci("list", "--format", "json").stdout.strip() in ("[]", "null")


@pytest.mark.parametrize("mutate, path", [
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion"),
    (lambda c: c["process"].update(args=[]), "process.args"),
    (lambda c: c["process"].update(cwd="relative"), "process.cwd"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt"),
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[5]"),
    (lambda c: c["linux"]["resources"].update(memory={"limit": "lots"}), "linux.resources.memory.limit"),
    (lambda c: c["mounts"].append({"destination": "rel", "type": "tmpfs"}), "mounts[4].destination"),
    (lambda c: c["process"]["capabilities"].update(bounding=["CAP_NOT_A_CAP"]), "process.capabilities.bounding"),
])
def test_a_bad_config_is_an_error_naming_its_json_path(oci: Runtime, bundle: Bundle, rootfs: Path,
                                                       tmp_path: Path, mutate: Any, path: str) -> None:
    config = _config(rootfs, "/bin/true")
    mutate(config)
    bundle.write(config)
    result = oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(path), result.stderr
    assert oci.log_lines()[-1]["msg"].startswith(path)
    assert not (oci.root / CONTAINER_ID).exists()


def test_kill_delete_and_their_error_texts(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/sleep", "100"))
    oci.create(CONTAINER_ID, bundle.path, tmp_path / "out")
    oci("start", CONTAINER_ID)
    assert oci.state(CONTAINER_ID)["status"] == "running"
    refused = oci("delete", CONTAINER_ID, check=False)
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    # pid 1 of a namespace ignores signals it has no handler for, SIGKILL aside.
    oci("kill", CONTAINER_ID, "TERM")
    time.sleep(0.2)
    assert oci.state(CONTAINER_ID)["status"] == "running"
    oci("kill", CONTAINER_ID, "SIGKILL")
    wait_for(lambda: oci.state(CONTAINER_ID)["status"] == "stopped", what="SIGKILL to end pid 1")
    again = oci("kill", CONTAINER_ID, "9", check=False)
    assert again.returncode == 1 and "container not running" in again.stderr
    oci("delete", CONTAINER_ID)
    missing = oci("delete", CONTAINER_ID, check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert oci("delete", "--force", CONTAINER_ID).returncode == 0


def test_delete_of_a_created_container_kills_it(oci: Runtime, bundle: Bundle, rootfs: Path,
                                                tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/sleep", "100"))
    oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", "--pid-file", str(tmp_path / "pid"))
    pid = int((tmp_path / "pid").read_text())
    oci("delete", CONTAINER_ID)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
             open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", what="the process to die")


def test_kill_all_pause_resume_and_ps(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/sh", "-c", "sleep 100 & sleep 100 & wait"))
    oci.create(CONTAINER_ID, bundle.path, tmp_path / "out")
    oci("start", CONTAINER_ID)
    wait_for(lambda: len(json.loads(oci("ps", "--format", "json", CONTAINER_ID).stdout)) == 3,
             what="the shell and its two sleeps")
    oci("pause", CONTAINER_ID)
    assert oci.state(CONTAINER_ID)["status"] == "paused"
    oci("resume", CONTAINER_ID)
    assert oci.state(CONTAINER_ID)["status"] == "running"
    oci("pause", CONTAINER_ID)
    oci("kill", "--all", CONTAINER_ID, "KILL")  # a paused container is thawed to die
    wait_for(lambda: oci.state(CONTAINER_ID)["status"] == "stopped", what="kill --all")
    oci("delete", CONTAINER_ID)


def test_console_socket_gets_the_pty_master(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    config = _config(rootfs, "/bin/sh", "-c", "tty; stty size; echo done", terminal=True,
                     consoleSize={"height": 33, "width": 101})
    bundle.write(config)
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", "--console-socket", str(console.path))
        name, master = console.receive()
    finally:
        console.close()
    try:
        assert name == b"/dev/ptmx" and os.isatty(master)
        oci("start", CONTAINER_ID)
        seen = b""
        deadline = time.monotonic() + 10
        while b"done" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        assert re.search(rb"/dev/pts/\d+", seen) and b"33 101" in seen, seen
    finally:
        os.close(master)
    wait_for(lambda: oci.state(CONTAINER_ID)["status"] == "stopped", what="the tty container to end")
    oci("delete", CONTAINER_ID)


def test_hooks_get_the_state_on_stdin(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    config = _config(rootfs, "/bin/true")
    config["hooks"] = {phase: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {tmp_path}/{phase}.json"]}]
                       for phase in ("prestart", "createRuntime", "poststart", "poststop")}
    bundle.write(config)
    oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", "--pid-file", str(tmp_path / "pid"))
    pid = int((tmp_path / "pid").read_text())
    for phase in ("prestart", "createRuntime"):
        state = json.loads((tmp_path / f"{phase}.json").read_text())
        assert state["id"] == CONTAINER_ID and state["pid"] == pid and state["status"] == "created"
    oci("start", CONTAINER_ID)
    assert json.loads((tmp_path / "poststart.json").read_text())["status"] == "running"
    wait_for(lambda: oci.state(CONTAINER_ID)["status"] == "stopped", what="the container to exit")
    oci("delete", CONTAINER_ID)
    assert json.loads((tmp_path / "poststop.json").read_text())["status"] == "stopped"


def test_a_failing_create_hook_fails_create_and_leaves_nothing(oci: Runtime, bundle: Bundle, rootfs: Path,
                                                               tmp_path: Path) -> None:
    config = _config(rootfs, "/bin/true")
    config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    bundle.write(config)
    result = oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", check=False)
    assert result.returncode == 1 and "hooks.createRuntime[0]" in result.stderr
    assert not (oci.root / CONTAINER_ID).exists()


def test_run_in_the_foreground_returns_the_exit_status(oci: Runtime, bundle: Bundle, rootfs: Path,
                                                       tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/sh", "-c", "exit 3"))
    result = oci("run", "--bundle", str(bundle.path), CONTAINER_ID, check=False)
    assert result.returncode == 3, result.stderr
    assert not (oci.root / CONTAINER_ID).exists()
    # A signal death of pid 1 (from outside: inside, pid 1 cannot be killed) is 128 + signal.
    bundle.write(_config(rootfs, "/bin/sleep", "100"))
    runner = subprocess.Popen([*oci.argv, "--root", str(oci.root), "run", "--bundle", str(bundle.path),
                               CONTAINER_ID], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: oci("state", CONTAINER_ID, check=False).returncode == 0
                 and oci.state(CONTAINER_ID)["status"] == "running", what="run to start the container")
        oci("kill", CONTAINER_ID, "KILL")
        assert runner.wait(timeout=10) == 128 + signal.SIGKILL
    finally:
        runner.kill()
        runner.wait()
    assert not (oci.root / CONTAINER_ID).exists()


def test_list_shows_every_container(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/sleep", "100"))
    for name in ("a1", "b2"):
        oci.create(name, bundle.path, tmp_path / "out")
    listed = json.loads(oci("list", "--format", "json").stdout)
    assert sorted((c["id"], c["status"]) for c in listed) == [("a1", "created"), ("b2", "created")]
    assert oci("list", "-q").stdout.split() == ["a1", "b2"]
    table = oci("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] and len(table) == 3
    for name in ("a1", "b2"):
        oci("delete", "--force", name)


def test_flags_parse_as_runc_parses_them(oci: Runtime, bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    bundle.write(_config(rootfs, "/bin/true"))
    # Go-style single-dash long flags, --flag=value, flags after the operand.
    oci.create(CONTAINER_ID, bundle.path, tmp_path / "out", f"-pid-file={tmp_path}/pid")
    assert (tmp_path / "pid").read_text().isdigit()
    oci("delete", "-f", CONTAINER_ID)
    bad = oci("create", "--no-such-flag", CONTAINER_ID, check=False)
    assert bad.returncode == 1 and "no-such-flag" in bad.stderr


def _v1_file(controller: str, cgroup: str, name: str) -> str:
    return Path(f"/sys/fs/cgroup/{controller}/{cgroup}/{name}").read_text().strip()


def test_update_and_events_act_on_the_live_cgroup(oci: Runtime, bundle: Bundle, rootfs: Path,
                                                  tmp_path: Path) -> None:
    config = _config(rootfs, "/bin/sleep", "100")
    config["linux"]["cgroupsPath"] = "/pyexec-oci-test/t1"
    config["linux"]["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 50})
    bundle.write(config)
    oci.create(CONTAINER_ID, bundle.path, tmp_path / "out")
    oci("start", CONTAINER_ID)
    stats = json.loads(oci("events", "--stats", CONTAINER_ID).stdout)
    assert stats["type"] == "stats" and stats["id"] == CONTAINER_ID
    assert stats["data"]["pids"] == {"current": 1, "limit": 50}
    assert stats["data"]["memory"]["usage"]["limit"] == 64 << 20
    oci("update", "--memory", "128m", "--pids-limit", "60", CONTAINER_ID)
    again = json.loads(oci("events", "--stats", CONTAINER_ID).stdout)["data"]
    assert again["pids"]["limit"] == 60 and again["memory"]["usage"]["limit"] == 128 << 20
    oci("update", "--resources", "-", CONTAINER_ID, input='{"pids": {"limit": 70}}', stdin=None)
    assert json.loads(oci("events", "--stats", CONTAINER_ID).stdout)["data"]["pids"]["limit"] == 70
    bad = oci("update", "--resources", "-", CONTAINER_ID, input='{"pids": {"limit": "x"}}', stdin=None,
              check=False)
    assert bad.returncode == 1 and "pids.limit" in bad.stderr
    oci("delete", "--force", CONTAINER_ID)
