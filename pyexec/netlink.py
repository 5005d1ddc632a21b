"""Netlink access for the task network (network.py): pyroute2 sockets of the
host and of a task's network namespace, and the link lookups network.py
repeats.

All netlink traffic goes through pyroute2, imported on first use (it takes
~0.1 s to import, and only tasks with a bridge network need it). Work inside
the task's namespace uses a netlink socket created there by a short-lived
helper thread (``netlink_socket_in``: the thread ``setns()``s and exits; no
caller thread ever changes namespace and nothing forks). setns(2) is called
through the compiled shim (Python 3.11 has no os.setns).
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Dict, Optional, Type

from .native import ffi, lib

if TYPE_CHECKING:  # for the annotations only: pyroute2 is imported on first use
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["iproute", "netlink_error", "netlink_socket_in", "link_index", "delete_link"]


def iproute(fileno: Optional[int] = None) -> "IPRoute":
    """An IPRoute of this process's network namespace, or (``fileno``) of the
    NETLINK_ROUTE socket ``fileno``, which it then owns (closed here if that fails)."""
    from pyroute2 import IPRoute  # ~0.1 s to import: only when a network needs it
    if fileno is None:
        return IPRoute()
    try:
        return IPRoute(fileno=fileno)  # owns the socket from here on
    except BaseException:
        os.close(fileno)
        raise


def netlink_error() -> Type["NetlinkError"]:
    """pyroute2's NetlinkError (its ``code`` is the kernel's errno), imported on first use."""
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError


def netlink_socket_in(pid: int) -> int:
    """A NETLINK_ROUTE socket of the network namespace of ``pid`` (a socket
    stays in the namespace it was made in). A fresh thread setns()s, makes
    it and ends: the namespace of the caller's threads never changes."""
    ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    out: Dict[str, Any] = {}

    def work() -> None:
        try:
            if lib.setns(ns_fd, lib.CLONE_NEWNET) != 0:
                err = ffi.errno
                raise OSError(err, f"setns into the network namespace of pid {pid}: {os.strerror(err)}")
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
            out["fd"] = sock.detach()
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc

    try:
        thread = threading.Thread(target=work, name=f"pyexec-netns-{pid}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(ns_fd)
    if "error" in out:
        raise out["error"]
    fd: int = out["fd"]
    return fd


def link_index(ipr: "IPRoute", name: str) -> Optional[int]:
    """The index of link ``name``, None when there is none."""
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def delete_link(ipr: "IPRoute", name: str) -> bool:
    """Delete link ``name``; False when it was not there (a veth also goes
    by itself with its namespace, so gone is fine)."""
    NetlinkError = netlink_error()
    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True
