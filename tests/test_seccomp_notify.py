"""SCMP_ACT_NOTIFY end to end, through the shim alone (no namespaces, any user):
the child loads its filter with a listener and sends it over a socket
(csrc/seccomp.c), the caller receives it (receive_listener) and hands it to an
agent by runtime-spec's protocol (send_to_agent), and the agent, a thread of
this test, answers the task's notified getppid(2) through the kernel's
SECCOMP_IOCTL_NOTIF_RECV/SEND, whose structures come from <linux/seccomp.h>
through the shim's cffi module.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import threading
from typing import Any, Dict, List

import pytest

from pyexec.native import ffi, lib
from pyexec.seccomp import compile_filter, syscall_number
from pyexec.seccomp_notify import process_state, receive_listener, send_to_agent
from pyexec.shim import SpawnPlan, abort, finish, spawn
from support.profiles import PY, SYSCALL, profile, py, rule

GETPPID = syscall_number("getppid")
needs_python = pytest.mark.skipif(not os.path.exists(PY), reason="needs /usr/bin/python3")


def next_notification(listener: int, timeout: float) -> Any:
    """The next struct seccomp_notif, or None when every task of the filter is gone."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    events = poller.poll(timeout * 1000)
    assert events, "no notification in time"
    if not events[0][1] & select.POLLIN:
        return None                                     # POLLHUP: nobody left to notify
    buf = bytearray(ffi.sizeof("struct seccomp_notif"))  # the kernel wants it zeroed
    fcntl.ioctl(listener, lib.SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    notif = ffi.new("struct seccomp_notif *")
    ffi.memmove(notif, buf, len(buf))
    return notif


def answer(listener: int, notif: Any, val: int = 0, error: int = 0) -> None:
    resp = ffi.new("struct seccomp_notif_resp *", {"id": notif.id, "val": val, "error": error, "flags": 0})
    fcntl.ioctl(listener, lib.SECCOMP_IOCTL_NOTIF_SEND, bytes(ffi.buffer(resp)))


class Agent(threading.Thread):
    """A seccomp agent at ``path``: takes one containerProcessState message with its
    fd, then answers every getppid notification with 4242 until the task is gone."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.message: Dict[str, Any] = {}
        self.seen: List[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            self.message = json.loads(data)
            assert len(fds) == 1
            listener = fds[0]
            try:
                while (notif := next_notification(listener, 20)) is not None:
                    self.seen.append(notif.pid)
                    assert notif.data.nr == GETPPID and notif.data.arch == lib.PX_AUDIT_ARCH
                    answer(listener, notif, val=4242)
            finally:
                os.close(listener)
        except BaseException as exc:                    # reported by the test thread
            self.error = exc
        finally:
            self.server.close()


def launch(tmp_path, compiled, child_sock) -> tuple:
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        plan = SpawnPlan(program=PY, argv=py(SYSCALL + f"print(*call({GETPPID}, 1, 2))"), env=[], search_path="/bin",
                         stdio=(-1, stdout.fileno(), -1), seccomp_filter=compiled.program,
                         seccomp_flags=compiled.flags, seccomp_listener_fd=child_sock.fileno())
        child = spawn(plan)
    finish(child)
    return child, out


@needs_python
def test_an_agent_answers_the_tasks_notified_call(tmp_path):
    agent_path = str(tmp_path / "agent.sock")
    compiled = compile_filter(profile(rule("getppid", "SCMP_ACT_NOTIFY"), listenerPath=agent_path,
                                      listenerMetadata="the agent's own", flags=["SECCOMP_FILTER_FLAG_TSYNC"]))
    assert compiled.notify and compiled.listener_path == agent_path
    agent = Agent(agent_path)
    agent.start()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        child, out = launch(tmp_path, compiled, theirs)
        try:
            theirs.close()
            listener = receive_listener(ours)
            state = {"ociVersion": "1.1.0", "id": "c1", "status": "created", "pid": child.pid, "bundle": "/b"}
            try:
                send_to_agent(agent_path, listener, json.dumps(state).encode(), compiled.listener_metadata)
            finally:
                os.close(listener)                      # the agent has its own now
            _, status = os.waitpid(child.pid, 0)
        finally:
            abort(child)
    agent.join(30)
    assert agent.error is None, agent.error
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text().split() == ["4242", "0"]     # the agent's answer, no errno
    assert agent.seen == [child.pid]
    assert agent.message == {"ociVersion": "1.1.0", "fds": ["seccompFd"], "pid": child.pid,
                             "metadata": "the agent's own", "state": state}


def test_no_listener_sent_is_an_error():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        theirs.sendall(b"L")
        theirs.close()
        with pytest.raises(OSError, match="sent no seccomp listener"):
            receive_listener(ours)


def test_an_agent_that_is_not_there(tmp_path):
    with pytest.raises(OSError) as info:
        send_to_agent(str(tmp_path / "nobody.sock"), 0, b'{"pid": 1}')
    assert info.value.errno in (errno.ENOENT, errno.ECONNREFUSED)


def test_process_state_takes_the_pid_of_the_process():
    state = {"ociVersion": "1.0.2", "id": "c", "pid": 7}
    assert process_state(state, "m") == {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 7, "metadata": "m",
                                         "state": state}
    assert process_state(state, pid=9)["pid"] == 9         # an exec'd process, not the container's
