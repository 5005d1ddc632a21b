"""The listener of a seccomp filter with SCMP_ACT_NOTIFY, from the child to the agent.

A profile with SCMP_ACT_NOTIFY (pyexec.seccomp.Filter.notify) is loaded with
SECCOMP_FILTER_FLAG_NEW_LISTENER; the kernel gives the child a listener fd,
and the syscalls the profile notifies wait until whoever holds it answers
them. The child sends it over the unix socket of ``SpawnPlan.seccomp_listener_fd``
(csrc/seccomp.c: one SCM_RIGHTS message); ``receive_listener`` takes it on
the caller's end, and ``send_to_agent`` passes it on to the agent at the
profile's ``listenerPath`` by runtime-spec's protocol.

Between the filter's load and its exec the child still makes a few calls
(sendmsg, execve; without no_new_privs also the credential steps, see
csrc/task.c), and ``shim.spawn`` waits for the exec. A profile that notifies
one of those needs the listener served during the launch, from another thread
(cffi calls drop the GIL). Notifying sendmsg can never work: the listener is
what the child is sending.
"""
from __future__ import annotations

import json
import socket
from typing import Any, Dict, Optional

__all__ = ["receive_listener", "send_to_agent", "process_state"]

OCI_VERSION = "1.1.0"


def receive_listener(sock: socket.socket) -> int:
    """The listener fd the child sent over ``sock`` (the caller's end of the socket
    pair whose other end was ``SpawnPlan.seccomp_listener_fd``); it is the caller's
    to close. OSError when the child closed its end without sending one."""
    _, fds, flags, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise OSError("the child sent no seccomp listener")
    for extra in fds[1:]:
        socket.close(extra)
    if flags & socket.MSG_CTRUNC:
        socket.close(fds[0])
        raise OSError("the seccomp listener message was truncated")
    return fds[0]


def process_state(state: Dict[str, Any], metadata: str = "", pid: Optional[int] = None) -> Dict[str, Any]:
    """runtime-spec's containerProcessState for the container ``state`` (the
    state verb's JSON): the one fd it comes with is the seccomp listener."""
    return {"ociVersion": state.get("ociVersion", OCI_VERSION), "fds": ["seccompFd"],
            "pid": state.get("pid") if pid is None else pid, "metadata": metadata, "state": state}


def send_to_agent(path: str, listener_fd: int, state_json: bytes, metadata: str = "",
                  pid: Optional[int] = None) -> None:
    """Hand ``listener_fd`` to the seccomp agent listening at ``path`` (a unix stream
    socket: the profile's listenerPath): one message, the containerProcessState
    JSON of ``state_json`` with ``metadata`` (listenerMetadata), the fd as
    SCM_RIGHTS. ``pid`` is the process the filter is on (default: the state's).
    The caller still holds ``listener_fd``. OSError when the agent is not there."""
    message = json.dumps(process_state(json.loads(state_json), metadata, pid)).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as agent:
        agent.connect(path)
        sent = socket.send_fds(agent, [message], [listener_fd])
        if sent != len(message):
            raise OSError(f"the seccomp agent at {path} took {sent} of {len(message)} bytes")
