"""The shim's features for the OCI runtime (pyexec-oci), driven through
``shim.spawn`` directly, as the runtime does: a task without init
(``use_init=False``, the cloned child is the task) that holds before its exec
until a byte arrives on ``start_fd``, a console socket, namespaces joined by
fd (a pid namespace by the launching thread), sysctls, personality, umask,
domainname, clean signal state, and the mount ops the OCI mount plan uses
(mknod, chown, binds with flags of their own, propagation changes).
"""
from __future__ import annotations

import array
import errno
import os
import platform
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import pytest

from pyexec import ExecCommand, LaunchError
from pyexec.native import lib
from pyexec.rootfs import MountOp, plan_mounts
from pyexec.shim import Child, SpawnPlan, abort, finish, spawn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="spawning namespaces needs root")

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
NEW_MNT = lib.CLONE_NEWNS


def _plan(argv: Sequence[str], out: Optional[int] = None, **fields: object) -> SpawnPlan:
    """A plan without init whose stdout and stderr (when ``out``) go to that fd."""
    if out is not None:
        fields.setdefault("stdio", (-1, out, out))
    return SpawnPlan(program=argv[0], argv=list(argv), env=[f"PATH={PATH}"], search_path=PATH,
                     **fields)  # type: ignore[arg-type]


def _wait(child: Child, timeout: float = 10.0) -> int:
    """The child's exit status (os.waitstatus_to_exitcode), reaping it."""
    ready, _, _ = select.select([child.pidfd], [], [], timeout)
    assert ready, f"pid {child.pid} still runs after {timeout}s"
    _, status = os.waitpid(child.pid, 0)
    return os.waitstatus_to_exitcode(status)


class Output:
    """A file the task writes its stdout and stderr to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def text(self) -> str:
        return self.path.read_text()

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def output(tmp_path: Path) -> Iterator[Output]:
    out = Output(tmp_path / "out")
    yield out
    out.close()


def _run(plan: SpawnPlan, timeout: float = 10.0) -> int:
    """Launch ``plan``, wait for its exit and return the exit code; always reaped."""
    child = spawn(plan)
    try:
        finish(child)
        return _wait(child, timeout)
    finally:
        abort(child)


def _sh(script: str) -> List[str]:
    return ["/bin/sh", "-c", script]


# -- the hold before exec (start_fd) ---------------------------------------------

def _proc_fds(pid: int) -> List[int]:
    return sorted(int(name) for name in os.listdir(f"/proc/{pid}/fd"))


def test_a_held_task_waits_for_one_byte_on_its_fifo_then_execs(tmp_path: Path, output: Output) -> None:
    # pyexec-oci's create/start: the FIFO opened O_RDWR, so that the task's
    # read blocks (not EOF) once the creating process has closed its copy.
    fifo = tmp_path / "exec.fifo"
    os.mkfifo(fifo, 0o600)
    start = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
    spare_r, spare_w = os.pipe()  # any other fd of ours must not stay open in the held task
    plan = _plan(_sh("echo started $$"), output.fd, clone_flags=lib.CLONE_NEWPID, start_fd=start)
    child = spawn(plan)
    try:
        finish(child)  # returns as launched, while the task waits
        os.close(start)
        os.close(spare_r)
        os.close(spare_w)
        time.sleep(0.2)
        assert os.readlink(f"/proc/{child.pid}/exe") == os.readlink("/proc/self/exe")  # still our copy
        with open(f"/proc/{child.pid}/stat") as stat:
            assert stat.read().rsplit(")", 1)[1].split()[0] == "S"
        fds = set(_proc_fds(child.pid))
        assert start in fds and fds - {0, 1, 2} == {start}  # (0 may be closed where tests run without stdin)
        assert output.text() == ""
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # would fail ENXIO without a reader
        os.write(writer, b"0")
        os.close(writer)
        os.unlink(fifo)
        assert _wait(child) == 0
        assert output.text() == "started 1\n"
    finally:
        abort(child)


def test_eof_on_the_start_fd_exits_127_without_exec(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r, w = os.pipe()
    child = spawn(_plan(_sh(f"touch {marker}"), start_fd=r))
    try:
        finish(child)
        os.close(r)
        os.close(w)  # the held task keeps only its read end: EOF
        assert _wait(child) == 127
        assert not marker.exists()
    finally:
        abort(child)


@pytest.mark.parametrize("case", ["missing", "not-executable", "eacces-wins"])
def test_a_program_the_exec_would_not_find_fails_the_launch_before_the_hold(tmp_path: Path, case: str) -> None:
    plain = tmp_path / "bin" / "prog"
    plain.parent.mkdir()
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    if case == "missing":
        program, search, code = "no-such-program-here", PATH, errno.ENOENT
    elif case == "not-executable":
        program, search, code = str(plain), PATH, errno.EACCES
    else:  # execvpe: an EACCES on the way beats ENOENT at the end
        program, search, code = "prog", f"{plain.parent}:/nonexistent", errno.EACCES
    r, w = os.pipe()
    plan = SpawnPlan(program=program, argv=[program], env=[], search_path=search, start_fd=r)
    child = spawn(plan)
    try:
        with pytest.raises(LaunchError) as info:
            finish(child)
        assert (info.value.step, info.value.path, info.value.errno) == ("exec", program, code)
        assert _wait(child) == 127
    finally:
        abort(child)
        os.close(r)
        os.close(w)


def test_a_held_task_found_in_its_search_path_execs_what_was_found(tmp_path: Path, output: Output) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "hello").write_text("#!/bin/sh\necho \"hello from $0\"\n")
    (bindir / "hello").chmod(0o755)
    r, w = os.pipe()
    plan = SpawnPlan(program="hello", argv=["hello"], env=[], search_path=f"/nonexistent:{bindir}",
                     stdio=(-1, output.fd, output.fd), start_fd=r)
    child = spawn(plan)
    try:
        finish(child)
        os.close(r)
        os.write(w, b"x")
        os.close(w)
        assert _wait(child) == 0
        assert output.text() == f"hello from {bindir}/hello\n"
    finally:
        abort(child)


def test_start_fd_needs_a_task_without_init(tmp_path: Path) -> None:
    from pyexec.shim import MonitorPlan
    r, w = os.pipe()
    monitor = os.open("/bin/true", os.O_PATH | os.O_CLOEXEC)
    try:
        child = spawn(_plan(["/bin/true"], start_fd=r, use_init=True, monitor=MonitorPlan(exe_fd=monitor)))
        try:
            with pytest.raises(LaunchError) as info:
                finish(child)
            assert info.value.step == "start" and info.value.errno == errno.EINVAL
        finally:
            abort(child)
    finally:
        for fd in (r, w, monitor):
            os.close(fd)


# -- the console socket ------------------------------------------------------------

def _receive_master(sock: socket.socket) -> int:
    """The one message of the console socket: "/dev/ptmx" and exactly one fd."""
    sock.settimeout(10)
    data, ancillary, flags, _ = sock.recvmsg(64, socket.CMSG_SPACE(4 * array.array("i").itemsize))
    assert data == b"/dev/ptmx" and not flags & socket.MSG_CTRUNC
    assert len(ancillary) == 1, ancillary
    level, kind, fds = ancillary[0]
    assert (level, kind, len(fds)) == (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i").itemsize)
    assert sock.recv(16) == b""  # nothing more: the task closed its end
    return array.array("i", fds)[0]


def _read_until(fd: int, wanted: str, timeout: float = 10.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} from the console, only {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError as exc:  # EIO: the slave's last holder is gone
                assert exc.errno == errno.EIO
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


CONSOLE_SCRIPT = "stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo ttys; read line; echo got:$line"


def test_the_console_socket_gets_the_master_and_the_task_the_slave() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        plan = _plan(_sh(CONSOLE_SCRIPT), console_socket_fd=theirs.fileno(), console_rows=33, console_cols=111)
        child = spawn(plan)
        master = -1
        try:
            finish(child)
            theirs.close()
            master = _receive_master(ours)
            assert os.isatty(master)
            text = _read_until(master, "ttys")
            assert "33 111" in text
            os.write(master, b"hello\n")
            assert "got:hello" in _read_until(master, "got:hello")
            assert _wait(child) == 0
        finally:
            abort(child)
            if master >= 0:
                os.close(master)
            theirs.close()


def test_the_console_of_a_task_in_its_own_root_is_its_devpts_and_dev_console(tmp_path: Path) -> None:
    # The library's host-mirror root: the pty comes from the root's own
    # devpts (pts/0 of a fresh instance), and /dev/console is bound to it.
    (tmp_path / "task" / "local").mkdir(parents=True)
    (tmp_path / "root").mkdir()
    script = ("readlink /proc/self/fd/0; stat -c %t:%T /dev/console; stat -L -c %t:%T /proc/self/fd/0; "
              "tty; read line; echo got:$line")
    cmd = ExecCommand(argv=_sh(script), task_dir=str(tmp_path / "task"))
    flags = lib.CLONE_NEWNS | lib.CLONE_NEWPID | lib.CLONE_NEWIPC | lib.CLONE_NEWUTS | lib.CLONE_NEWNET
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        plan = _plan(_sh(script), clone_flags=flags, make_private=True, loopback_up=True,
                     mounts=plan_mounts(cmd, str(tmp_path / "root")), console_socket_fd=theirs.fileno())
        child = spawn(plan)
        master = -1
        try:
            finish(child)
            theirs.close()
            master = _receive_master(ours)
            text = _read_until(master, "/dev/pts/0\r\n", timeout=10)
            os.write(master, b"x\n")
            text += _read_until(master, "got:x")
            lines = [line for line in text.replace("\r", "").split("\n") if line and line != "x"]
            assert lines[0] == "/dev/pts/0", text
            assert lines[1] == lines[2] and lines[1].startswith("88:"), text  # the Unix98 pty slave major
            assert lines[3] == "/dev/pts/0" and lines[4] == "got:x", text
            assert _wait(child) == 0
        finally:
            abort(child)
            if master >= 0:
                os.close(master)
            theirs.close()


def test_a_console_that_cannot_be_sent_fails_the_launch() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.close()  # the client is gone: EPIPE, not a SIGPIPE death
    try:
        child = spawn(_plan(["/bin/true"], console_socket_fd=theirs.fileno()))
        try:
            with pytest.raises(LaunchError) as info:
                finish(child)
            assert info.value.step == "console" and info.value.errno == errno.EPIPE
        finally:
            abort(child)
    finally:
        theirs.close()


# -- namespaces joined by fd -------------------------------------------------------

def _children(pid: int) -> List[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _start(procs: List[subprocess.Popen], argv: Sequence[str], ready: str) -> subprocess.Popen:
    """A helper process; ``ready`` is printed by it once its namespaces are made."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == ready
    return proc


def _ns_fd(pid: int, kind: str) -> int:
    return os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)


def test_a_joined_pid_namespace_holds_the_task_and_the_thread_goes_back(procs: List[subprocess.Popen],
                                                                         output: Output) -> None:
    unshare = _start(procs, ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", "echo up; exec sleep 60"],
                     "up")
    inner = _children(unshare.pid)[0]
    fd = _ns_fd(inner, "pid")
    try:
        plan = _plan(_sh("exec grep NSpid /proc/self/status"), output.fd, join_namespaces=[(fd, lib.CLONE_NEWPID)])
        assert _run(plan) == 0
    finally:
        os.close(fd)
        os.kill(inner, signal.SIGKILL)  # while unshare lives to reap it (an orphan's reaper may be slow)
        unshare.wait(10)
    levels = output.text().split()[1:]
    assert len(levels) == 2 and levels[1] == "2", output.text()  # pid 2 below the sleep, pid 1 there
    # The launching thread (and so what it forks next) is back in our own pid namespace.
    assert os.readlink("/proc/thread-self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
    assert subprocess.run(["true"]).returncode == 0


def test_joining_a_pid_namespace_that_is_none_fails_before_the_clone() -> None:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(LaunchError) as info:
            spawn(_plan(["/bin/true"], join_namespaces=[(fd, lib.CLONE_NEWPID)]))
        assert (info.value.step, info.value.path, info.value.errno) == ("setns", "pid namespace", errno.EINVAL)
    finally:
        os.close(fd)
    assert os.readlink("/proc/thread-self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")


def test_joined_uts_net_and_mount_namespaces(procs: List[subprocess.Popen], tmp_path: Path,
                                             output: Output) -> None:
    mark = tmp_path / "mark"
    mark.mkdir()
    helper = _start(procs, ["unshare", "--uts", "--net", "--mount", "sh", "-c",
                            f"hostname joined && mount -t tmpfs none {mark} && echo inside > {mark}/file "
                            "&& echo up && exec sleep 60"], "up")
    fds = [(_ns_fd(helper.pid, kind), flag) for kind, flag in
           (("mnt", lib.CLONE_NEWNS), ("uts", lib.CLONE_NEWUTS), ("net", lib.CLONE_NEWNET))]  # mnt first here
    try:
        script = f"hostname; cat {mark}/file; readlink /proc/self/ns/net; pwd"
        assert _run(_plan(_sh(script), output.fd, join_namespaces=fds)) == 0
    finally:
        for fd, _ in fds:
            os.close(fd)
    assert output.text().split() == ["joined", "inside", os.readlink(f"/proc/{helper.pid}/ns/net"), "/"]
    assert not (mark / "file").exists()  # the helper's tmpfs is its mount namespace's only


def test_a_joined_user_namespace_makes_the_task_its_root(procs: List[subprocess.Popen], output: Output) -> None:
    helper = _start(procs, ["unshare", "--user", "sh", "-c", "echo up; exec sleep 60"], "up")
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{helper.pid}/{name}", "w") as f:
            f.write("0 100000 65536\n")
    fd = _ns_fd(helper.pid, "user")
    try:
        script = "id -u; id -g; cat /proc/self/uid_map; readlink /proc/self/ns/user"
        child = spawn(_plan(_sh(script + "; sleep 0.3"), output.fd, join_namespaces=[(fd, lib.CLONE_NEWUSER)]))
        try:
            finish(child)
            time.sleep(0.1)
            with open(f"/proc/{child.pid}/status") as status:
                uids = [line.split()[1:] for line in status if line.startswith("Uid:")][0]
            assert uids == ["100000"] * 4
            assert _wait(child) == 0
        finally:
            abort(child)
    finally:
        os.close(fd)
    assert output.text().split() == ["0", "0", "0", "100000", "65536", os.readlink(f"/proc/{helper.pid}/ns/user")]


def test_a_namespace_that_cannot_be_joined_names_its_type(output: Output) -> None:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        child = spawn(_plan(["/bin/true"], join_namespaces=[(fd, lib.CLONE_NEWUTS)]))
        try:
            with pytest.raises(LaunchError) as info:
                finish(child)
            assert (info.value.step, info.value.path, info.value.errno) == ("setns", "uts namespace", errno.EINVAL)
        finally:
            abort(child)
    finally:
        os.close(fd)


# -- sysctls -------------------------------------------------------------------------

def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_sysctls_are_written_in_the_tasks_own_namespaces(output: Output) -> None:
    host_shmmax, host_forward = _read("/proc/sys/kernel/shmmax"), _read("/proc/sys/net/ipv4/ip_forward")
    wanted_forward = "0" if host_forward == "1" else "1"
    plan = _plan(_sh("cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/lo/forwarding"),
                 output.fd, clone_flags=lib.CLONE_NEWUTS | lib.CLONE_NEWIPC | lib.CLONE_NEWNET,
                 sysctls=[("kernel.shmmax", "12345678"), ("net.ipv4.ip_forward", wanted_forward),
                          ("net/ipv4/conf/lo/forwarding", wanted_forward)])
    assert _run(plan) == 0
    assert output.text().split() == ["12345678", wanted_forward, wanted_forward]
    assert _read("/proc/sys/kernel/shmmax") == host_shmmax
    assert _read("/proc/sys/net/ipv4/ip_forward") == host_forward


@pytest.mark.parametrize("key, code", [("kernel.no_such_sysctl", errno.ENOENT), ("..kernel.shmmax", errno.EINVAL),
                                       ("kernel/../../self/oom_score_adj", errno.EINVAL), ("", errno.EINVAL)])
def test_a_sysctl_that_fails_names_its_key(key: str, code: int) -> None:
    child = spawn(_plan(["/bin/true"], clone_flags=lib.CLONE_NEWIPC, sysctls=[(key, "1")]))
    try:
        with pytest.raises(LaunchError) as info:
            finish(child)
        assert (info.value.step, info.value.path, info.value.errno) == ("sysctl", key, code)
    finally:
        abort(child)


# -- personality, umask, domainname, signals ----------------------------------------

def test_personality_umask_and_domainname(output: Output) -> None:
    host_domain = _read("/proc/sys/kernel/domainname")
    plan = _plan(_sh("cat /proc/self/personality; umask; cat /proc/sys/kernel/domainname"), output.fd,
                 clone_flags=lib.CLONE_NEWUTS, personality=lib.PER_LINUX32, umask=0o027, domainname="example.test")
    assert _run(plan) == 0
    assert output.text().split() == [f"{lib.PER_LINUX32:08x}", "0027", "example.test"]
    assert _read("/proc/sys/kernel/domainname") == host_domain


@pytest.mark.skipif(platform.machine() != "x86_64", reason="LINUX32 of x86_64 shows as i686")
def test_a_linux32_personality_shows_a_32_bit_machine(output: Output) -> None:
    assert _run(_plan(["uname", "-m"], output.fd, personality=lib.PER_LINUX32)) == 0
    assert output.text().strip() == "i686"


def test_the_caller_umask_stays_without_one(output: Output) -> None:
    old = os.umask(0o002)
    try:
        assert _run(_plan(_sh("umask"), output.fd)) == 0
    finally:
        os.umask(old)
    assert output.text().strip() == "0002"


@pytest.fixture
def odd_signals() -> Iterator[None]:
    """This thread blocks SIGUSR2 and ignores SIGUSR1, besides CPython's
    own SIG_IGN of SIGPIPE and SIGXFSZ."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        signal.signal(signal.SIGUSR1, previous)


SIGNAL_LINES = "grep -E '^Sig(Ign|Blk)' /proc/self/status"
CLEAN = ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


def test_a_task_without_init_execs_with_no_signal_ignored_or_blocked(odd_signals: None, output: Output) -> None:
    assert _run(_plan(_sh(SIGNAL_LINES), output.fd)) == 0
    assert output.text().split() == CLEAN


def test_a_held_task_execs_with_no_signal_ignored_or_blocked(odd_signals: None, output: Output) -> None:
    r, w = os.pipe()
    child = spawn(_plan(_sh(SIGNAL_LINES), output.fd, start_fd=r))
    try:
        finish(child)
        os.close(r)
        os.write(w, b"1")
        os.close(w)
        assert _wait(child) == 0
    finally:
        abort(child)
    assert output.text().split() == CLEAN


def test_a_container_task_execs_with_no_signal_ignored_or_blocked(odd_signals: None, spawn_mode: str,
                                                                   run: object) -> None:
    result, out, err = run(_sh(SIGNAL_LINES))  # type: ignore[operator]
    assert result.exit_code == 0, err
    assert out.split() == CLEAN


# -- mount ops: mknod, chown, binds with flags, propagation ---------------------------

def new_encode_dev(major: int, minor: int) -> int:
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def _in_mount_ns(mounts: Sequence[MountOp], script: str, output: Output) -> int:
    return _run(_plan(_sh(script), output.fd, clone_flags=NEW_MNT, make_private=True, mounts=mounts))


def _tmpfs(target: Path) -> MountOp:
    return MountOp(lib.PX_OP_MOUNT, str(target), source="tmpfs", fstype="tmpfs", data="mode=0755")


def test_mknod_makes_devices_and_fifos_and_chown_their_owner(tmp_path: Path, output: Output) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    mounts = [
        _tmpfs(dev),
        MountOp(lib.PX_OP_MKNOD, f"{dev}/null", flags=lib.S_IFCHR | 0o666, bind_flags=new_encode_dev(1, 3)),
        MountOp(lib.PX_OP_MKNOD, f"{dev}/null", flags=lib.S_IFCHR | 0o666, bind_flags=new_encode_dev(1, 3)),
        MountOp(lib.PX_OP_MKNOD, f"{dev}/big", flags=lib.S_IFBLK | 0o600, bind_flags=new_encode_dev(259, 300)),
        MountOp(lib.PX_OP_MKNOD, f"{dev}/fifo", flags=lib.S_IFIFO | 0o640),
        MountOp(lib.PX_OP_CHOWN, f"{dev}/null", flags=(1234 << 32) | 5678),
        MountOp(lib.PX_OP_SYMLINK, f"{dev}/link", source="fifo"),
        MountOp(lib.PX_OP_CHOWN, f"{dev}/link", flags=(42 << 32) | 43),
    ]
    script = (f"cd {dev} && echo gone > null && cat null && stat -c '%n %F %t:%T %a %u:%g' null big fifo link "
              f"&& stat -L -c '%u:%g' link")
    assert _in_mount_ns(mounts, script, output) == 0, output.text()
    assert output.text().splitlines() == [
        "null character special file 1:3 666 1234:5678",
        "big block special file 103:12c 600 0:0",
        "fifo fifo 0:0 640 0:0",
        "link symbolic link 0:0 777 42:43",
        "0:0",  # lchown: the link, not what it names
    ]
    assert not (dev / "null").exists()


@pytest.mark.parametrize("kind, step", [(lib.PX_OP_MKNOD, "mknod"), (lib.PX_OP_CHOWN, "chown")])
def test_a_failed_mknod_or_chown_names_its_target(tmp_path: Path, kind: int, step: str) -> None:
    target = str(tmp_path / "missing" / "node")
    child = spawn(_plan(["/bin/true"], clone_flags=NEW_MNT, make_private=True,
                        mounts=[MountOp(kind, target, flags=lib.S_IFIFO | 0o600)]))
    try:
        with pytest.raises(LaunchError) as info:
            finish(child)
        assert (info.value.step, info.value.path, info.value.errno) == (step, target, errno.ENOENT)
    finally:
        abort(child)


def _mount_options(mountinfo: str, target: Path) -> List[str]:
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] == str(target):
            return fields[5].split(",")
    raise AssertionError(f"{target} is not mounted: {mountinfo}")


def test_a_bind_with_flags_of_its_own_is_remounted_with_them(tmp_path: Path, output: Output) -> None:
    # The source is a tmpfs of the task's (tmp_path's file system may be
    # noexec itself); the task writes the script into it.
    src = tmp_path / "src"
    src.mkdir()
    targets = {name: tmp_path / name for name in ("noexec", "ro", "noatime", "strict", "plain")}
    for target in targets.values():
        target.mkdir()
    mounts = [
        _tmpfs(src),
        MountOp(lib.PX_OP_BIND, str(targets["noexec"]), source=str(src), flags=lib.MS_NOEXEC | lib.MS_NOSUID),
        MountOp(lib.PX_OP_BIND, str(targets["ro"]), source=str(src), flags=lib.MS_RDONLY | lib.MS_NODEV),
        MountOp(lib.PX_OP_BIND, str(targets["noatime"]), source=str(src), flags=lib.MS_NOATIME),
        MountOp(lib.PX_OP_BIND, str(targets["strict"]), source=str(src), flags=lib.MS_STRICTATIME),
        MountOp(lib.PX_OP_BIND, str(targets["plain"]), source=str(src)),
    ]
    script = (f"printf '#!/bin/sh\\necho ran\\n' > {src}/script && chmod 755 {src}/script; "
              f"{src}/script; {targets['plain']}/script; {targets['noexec']}/script 2>/dev/null || echo refused; "
              f"touch {targets['noexec']}/new && echo writable; touch {targets['ro']}/x 2>/dev/null || echo ro; "
              "cat /proc/self/mountinfo")
    assert _in_mount_ns(mounts, script, output) == 0, output.text()
    lines = output.text().splitlines()
    assert lines[:5] == ["ran", "ran", "refused", "writable", "ro"], lines
    mountinfo = "\n".join(lines[5:])
    noexec = _mount_options(mountinfo, targets["noexec"])
    assert "noexec" in noexec and "nosuid" in noexec and "rw" in noexec
    assert {"ro", "nodev"} <= set(_mount_options(mountinfo, targets["ro"]))
    assert "noatime" in _mount_options(mountinfo, targets["noatime"])
    strict = _mount_options(mountinfo, targets["strict"])
    assert "relatime" not in strict and "noatime" not in strict
    assert "noexec" not in _mount_options(mountinfo, targets["plain"])
    assert not (targets["noexec"] / "new").exists()  # all of it in the task's tmpfs


def test_propagation_changes_are_mounts_without_a_source(tmp_path: Path, output: Output) -> None:
    shared, slave = tmp_path / "shared", tmp_path / "slave"
    shared.mkdir()
    slave.mkdir()
    mounts = [
        _tmpfs(shared),
        MountOp(lib.PX_OP_MOUNT, str(shared), flags=lib.MS_SHARED),
        MountOp(lib.PX_OP_BIND, str(slave), source=str(shared)),
        MountOp(lib.PX_OP_MOUNT, str(slave), flags=lib.MS_SLAVE | lib.MS_REC),
    ]
    assert _in_mount_ns(mounts, "cat /proc/self/mountinfo", output) == 0, output.text()
    optional = {}
    for line in output.text().splitlines():
        fields = line.split()
        optional[fields[4]] = fields[6:fields.index("-")]
    assert [tag.split(":")[0] for tag in optional[str(shared)]] == ["shared"]
    assert [tag.split(":")[0] for tag in optional[str(slave)]] == ["master"]
