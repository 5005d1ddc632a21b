"""Escape attempts from inside a default container task, as root in the task.

Every attempt of the issue's list must fail; each test states what stops it.
(Isolation features themselves are tested in test_container_security.py.)
"""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from pyexec import ExecCommand, new_executor

pytestmark = pytest.mark.needs_root  # every attempt is made from inside a container task

PY = "/usr/bin/python3"


def sh(script: str):
    return ["/bin/sh", "-c", script]


def py(code: str):
    return [PY, "-c", code]


SYSCALL = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
nr = int(sys.argv[1])
args = [ctypes.c_long(int(a)) for a in sys.argv[2:]]
rc = libc.syscall(ctypes.c_long(nr), *args)
print(rc, os.strerror(ctypes.get_errno()) if rc < 0 else "ok")
"""


def syscall_in_task(run, name: str, *args: int) -> str:
    import pyexec._shim as shim  # syscall numbers come from the system headers via cffi
    number = getattr(shim.lib, f"__NR_{name}", None)
    if number is None:
        pytest.skip(f"{name} has no syscall number on this architecture")
    result, out, err = run(py(SYSCALL) + [str(number)] + [str(a) for a in args])
    assert result.exit_code == 0, err
    return out.strip()


def test_host_processes_are_invisible_and_cannot_be_killed(run):
    host = subprocess.Popen(["sleep", "60"])
    try:
        result, out, _ = run(sh(f"ls /proc | grep -c '^[0-9]'; kill -9 {host.pid}; echo rc=$?"))
        count, rc = out.split()[0], out.split()[-1]
        assert int(count) <= 4                  # monitor, sh, ls, grep: nothing of the host
        assert rc != "rc=0" and host.poll() is None
    finally:
        host.kill()
        host.wait()


def test_mount_fails(run):
    result, out, _ = run(sh("mount -t tmpfs none /tmp 2>&1; echo rc=$?"))
    assert "rc=0" not in out


def test_writing_kernel_sysctls_fails(run):
    result, out, _ = run(sh("echo 1 > /proc/sys/kernel/sysrq; echo rc=$?; "
                            "echo x > /proc/sys/kernel/hostname; echo rc=$?"))
    assert "rc=0" not in out


def test_reading_kcore_gives_nothing(run):
    result, out, _ = run(sh("head -c 16 /proc/kcore | wc -c"))
    assert out.strip() == "0"


def test_loading_a_kernel_module_fails(run):
    assert syscall_in_task(run, "init_module", 0, 0, 0).startswith("-1")
    assert syscall_in_task(run, "finit_module", 0, 0, 0).startswith("-1")


def test_open_by_handle_at_fails(run):
    assert syscall_in_task(run, "open_by_handle_at", 0, 0, 0) == "-1 Operation not permitted"


def test_ptrace_of_pid_1_fails(run):
    # PTRACE_ATTACH = 16: the monitor is not dumpable and the task lacks CAP_SYS_PTRACE.
    assert syscall_in_task(run, "ptrace", 16, 1, 0, 0).startswith("-1")


def test_a_new_user_namespace_cannot_regain_capabilities(run):
    result, out, _ = run(sh("unshare -U -r sh -c 'mount -t tmpfs x /tmp && echo mounted' 2>&1; echo rc=$?"))
    assert "mounted" not in out and "rc=0" not in out


def test_the_host_network_is_unreachable(run):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        result, out, _ = run(py(f"import socket\ns = socket.socket()\ns.settimeout(2)\n"
                                f"try:\n    s.connect(('127.0.0.1', {port})); print('connected')\n"
                                f"except OSError as e:\n    print('refused', e)\n"))
        assert out.startswith("refused")       # its own loopback: nothing listens there
    finally:
        server.close()


def test_no_host_fd_reaches_the_task_and_dotdot_stays_inside(run):
    leak = os.open("/etc/hostname", os.O_RDONLY)  # not close-on-exec: must still not reach the task
    try:
        result, out, _ = run(sh("ls /proc/self/fd; cd /../../..; pwd; ls / | tr '\\n' ' '"))
    finally:
        os.close(leak)
    lines = out.splitlines()
    fds = sorted(int(x) for x in lines if x.isdigit())
    assert fds == [0, 1, 2, 3]                     # 3 is ls's own directory fd
    assert "/" in lines and "local" in lines[-1]   # still the task's root


def test_capabilities_are_gone_after_switching_to_another_user(run):
    result, out, _ = run(sh("setpriv --reuid=65534 --regid=65534 --clear-groups grep CapEff /proc/self/status"))
    assert out.split()[-1] == "0000000000000000"


def test_one_task_cannot_read_another_tasks_files(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a, b = new_executor("container"), new_executor("container")
    try:
        a.launch(ExecCommand(argv=sh("echo secret > /tmp/mine; echo secret > /local/mine; sleep 60"),
                             task_dir=str(a_dir)))
        b.launch(ExecCommand(argv=sh(f"sleep 0.3; cat /tmp/mine /local/mine {a_dir}/local/mine "
                                     f"/proc/*/root/tmp/mine 2>&1; echo done"), task_dir=str(b_dir)))
        assert b.wait(10).exit_code == 0
        out = (b_dir / "logs" / "b.stdout.0").read_text()
        assert "secret" not in out and "done" in out
    finally:
        a.shutdown(grace=0)
        b.shutdown(grace=0)
