"""The task's network (``Isolation.network``) for the container executor.

* ``"none"``: the task's own network namespace; the shim brings ``lo`` up.
* ``"host"``: no network namespace.
* ``"netns:PATH"`` / ``"ns:PATH"``: no new namespace; the parent opens PATH
  (``open_netns``) and the shim's child ``setns()``s into it before anything
  else runs there (``SpawnPlan.join_namespaces``).
* ``Bridge``: the task's own namespace plus a veth pair: the host end
  (``px`` + 12 hex digits) enslaved to the bridge, the other end ``eth0`` in
  the task with an address of the subnet and a default route via the
  bridge's address (the subnet's first host address, the gateway).

Addresses are leased from files (the IPAM), one per address:
``/run/pyexec/ipam/<bridge>/<ip>`` holding ``{"task_id", "state_dir",
"veth"}``. Every change happens under one ``flock`` on ``/run/pyexec``, so
processes that launch and stop tasks at the same time never hand out one
address twice, and a bridge is never deleted while a lease on it exists. A
lease whose task's state directory is gone is stale (launch makes the state
directory before the lease, teardown drops the lease before the directory):
it is reclaimed by the next allocation that meets it and by ``cleanup_stale``.
``<bridge>/bridge.json`` records the subnet and what pyexec made: the bridge
itself, or only its gateway address on a bridge someone else made; when the
last lease goes, that (and nothing else) is removed.

All netlink traffic goes through pyroute2, by way of netlink.py (which also
makes the socket inside the task's namespace without moving any caller thread).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from .errors import ConfigError, LaunchError
from .native import lib
from .netconfig import Bridge, joined_netns_path
from .netlink import delete_link, iproute, link_index, netlink_error, netlink_socket_in

if TYPE_CHECKING:  # for the annotations only: netlink.py imports pyroute2 on first use
    from pyroute2 import IPRoute

__all__ = ["Lease", "STATE_ROOT", "IPAM_ROOT", "open_netns", "check_available", "allocate",
           "attach", "release", "find_lease", "cleanup_stale", "veth_name"]

log = logging.getLogger(__name__)

#: The lock (a flock on this directory) and the lease store under it; the
#: same for every executor whatever its state_root: there is one host network.
STATE_ROOT = "/run/pyexec"
IPAM_ROOT = os.path.join(STATE_ROOT, "ipam")
BRIDGE_FILE = "bridge.json"
NEXT_FILE = "next"           # where the next search for a free address starts
TASK_IFNAME = "eth0"

CLONE_NEWNET = lib.CLONE_NEWNET
NS_GET_NSTYPE = lib.NS_GET_NSTYPE
_VETH_RE = re.compile(r"^px[0-9a-f]{12}$")


@dataclass(frozen=True)
class Lease:
    """An address of a bridge's subnet held by one task."""

    bridge: str
    subnet: str
    ip: str
    gateway: str
    veth: str                 # the host end of the task's veth pair
    task_id: str
    state_dir: str

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def as_dict(self) -> Dict[str, Any]:
        return {"mode": "bridge", "bridge": self.bridge, "subnet": self.subnet, "ip": self.ip,
                "gateway": self.gateway, "interface": TASK_IFNAME, "host_veth": self.veth}


def veth_name(task_id: str) -> str:
    """The host end of a task's veth: ``px`` + 12 hex digits (fits IFNAMSIZ)."""
    return "px" + hashlib.sha256(task_id.encode()).hexdigest()[:12]


# -- joining an existing namespace ----------------------------------------------

def open_netns(network: str) -> int:
    """An O_CLOEXEC fd of the network namespace ``"netns:PATH"`` / ``"ns:PATH"``
    names, for the shim's child to setns() into; ConfigError when PATH is gone
    or no network namespace."""
    path = joined_netns_path(network)
    assert path is not None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError("network", network, f"cannot be opened: {exc.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise ConfigError("network", network, "is not a network namespace file")
    return fd


# -- the lease store ------------------------------------------------------------

@contextlib.contextmanager
def _locked() -> Iterator[None]:
    os.makedirs(STATE_ROOT, exist_ok=True)
    fd = os.open(STATE_ROOT, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: str, value: Dict[str, Any], exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _leases(bridge_dir: str) -> Dict[str, Dict[str, Any]]:
    """ip -> lease record of every lease file of one bridge."""
    try:
        names = os.listdir(bridge_dir)
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if _is_ip(name):
            out[name] = _read_json(os.path.join(bridge_dir, name)) or {}
    return out


def _is_stale(record: Dict[str, Any]) -> bool:
    state_dir = record.get("state_dir")
    return not isinstance(state_dir, str) or not os.path.isdir(state_dir)


def _drop_lease(ipr: "IPRoute", bridge_dir: str, ip: str, record: Dict[str, Any]) -> None:
    """Remove a (stale) lease: its veth first, then the file. Under the lock."""
    veth = record.get("veth")
    if isinstance(veth, str) and _VETH_RE.match(veth):
        delete_link(ipr, veth)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(bridge_dir, ip))


def _check_bridge(ipr: "IPRoute", bridge: Bridge, info: Optional[Dict[str, Any]]) -> None:
    """ConfigError when ``bridge`` cannot be used as asked (before anything is made)."""
    if info is not None and info.get("subnet") != bridge.subnet:
        raise ConfigError("network.subnet", bridge.subnet,
                          f"differs from {info.get('subnet')}, the subnet bridge {bridge.name} is in use with")
    index = link_index(ipr, bridge.name)
    if index is not None:
        link = ipr.link("get", index=index)[0]
        if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
            raise ConfigError("network.name", bridge.name, "is an existing interface that is not a bridge")
    subnet = ipaddress.IPv4Network(bridge.subnet)
    for addr in ipr.get_addr(family=socket.AF_INET):
        if addr["index"] == index:
            continue
        address = addr.get("IFA_ADDRESS") or addr.get("IFA_LOCAL")
        if address and ipaddress.IPv4Address(address) in subnet:
            owner = ipr.link("get", index=addr["index"])[0].get("ifname")
            raise ConfigError("network.subnet", bridge.subnet,
                              f"holds {address}, an address of interface {owner}")


def _ensure_bridge(ipr: "IPRoute", bridge: Bridge, bridge_dir: str) -> None:
    """The bridge up with its gateway address; what is made is recorded in
    bridge.json (written first, so a crash in between leaves a record for
    cleanup_stale). Under the lock."""
    info_path = os.path.join(bridge_dir, BRIDGE_FILE)
    info = _read_json(info_path)
    _check_bridge(ipr, bridge, info)
    if info is None:
        os.makedirs(bridge_dir, exist_ok=True)
        info = {"subnet": bridge.subnet, "gateway": bridge.gateway,
                "created_bridge": link_index(ipr, bridge.name) is None, "added_address": False}
        _write_json(info_path, info)
    index = link_index(ipr, bridge.name)
    if index is None:
        ipr.link("add", ifname=bridge.name, kind="bridge")
        index = ipr.link_lookup(ifname=bridge.name)[0]
        if not info["created_bridge"]:
            info["created_bridge"] = True
            _write_json(info_path, info)
    have = {(a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"), a["prefixlen"])
            for a in ipr.get_addr(family=socket.AF_INET, index=index)}
    if (bridge.gateway, bridge.prefixlen) not in have:
        if not info["created_bridge"] and not info["added_address"]:
            info["added_address"] = True
            _write_json(info_path, info)
        ipr.addr("add", index=index, address=bridge.gateway, prefixlen=bridge.prefixlen)
    ipr.link("set", index=index, state="up")


def _retire_bridge(ipr: "IPRoute", name: str, bridge_dir: str) -> None:
    """No lease is left: remove what pyexec made for the bridge, and its records. Under the lock."""
    if _leases(bridge_dir):
        return
    NetlinkError = netlink_error()
    info = _read_json(os.path.join(bridge_dir, BRIDGE_FILE)) or {}
    index = link_index(ipr, name)
    if index is not None:
        try:
            if info.get("created_bridge"):
                ipr.link("del", index=index)
            elif info.get("added_address"):
                net = ipaddress.IPv4Network(info["subnet"])
                ipr.addr("del", index=index, address=info["gateway"], prefixlen=net.prefixlen)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT):
                raise
    for leftover in (BRIDGE_FILE, NEXT_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(bridge_dir, leftover))
    with contextlib.suppress(OSError):
        os.rmdir(bridge_dir)
    with contextlib.suppress(OSError):
        os.rmdir(IPAM_ROOT)


def _taken_by(bridge_dir: str, ip: str) -> Optional[Dict[str, Any]]:
    record = _read_json(os.path.join(bridge_dir, ip))
    if record is None and not os.path.exists(os.path.join(bridge_dir, ip)):
        return None
    return record or {}


def check_available(bridge: Bridge) -> None:
    """Fail early (ConfigError) when ``bridge`` cannot be had now: its
    requested ``ip`` is leased to a live task, its subnet differs from the
    one the bridge is in use with, its name is another kind of interface."""
    bridge_dir = os.path.join(IPAM_ROOT, bridge.name)
    with _locked(), iproute() as ipr:
        _check_bridge(ipr, bridge, _read_json(os.path.join(bridge_dir, BRIDGE_FILE)))
        if bridge.ip is not None:
            record = _taken_by(bridge_dir, bridge.ip)
            if record is not None and not _is_stale(record):
                raise ConfigError("network.ip", bridge.ip, f"is taken (task {record.get('task_id')})")


def allocate(bridge: Bridge, task_id: str, state_dir: str) -> Lease:
    """Lease an address for the task (``bridge.ip`` or the next free one) and
    make sure the bridge exists with its gateway address. ConfigError when
    the address is taken or the subnet is full; nothing is left behind then."""
    bridge_dir = os.path.join(IPAM_ROOT, bridge.name)
    veth = veth_name(task_id)
    record = {"task_id": task_id, "state_dir": os.path.abspath(state_dir), "veth": veth}
    with _locked(), iproute() as ipr:
        try:
            _ensure_bridge(ipr, bridge, bridge_dir)
            ip = _claim(ipr, bridge, bridge_dir, record)
        except BaseException:
            _retire_bridge(ipr, bridge.name, bridge_dir)  # only when no other lease uses it
            raise
    return Lease(bridge=bridge.name, subnet=bridge.subnet, ip=ip, gateway=bridge.gateway, veth=veth,
                 task_id=task_id, state_dir=record["state_dir"])


def _claim(ipr: "IPRoute", bridge: Bridge, bridge_dir: str, record: Dict[str, Any]) -> str:
    def take(ip: str) -> bool:
        path = os.path.join(bridge_dir, ip)
        held = _taken_by(bridge_dir, ip)
        if held is not None:
            if not _is_stale(held):
                return False
            log.info("reclaiming address %s of bridge %s from gone task %s", ip, bridge.name, held.get("task_id"))
            _drop_lease(ipr, bridge_dir, ip, held)
        try:
            _write_json(path, record, exclusive=True)
        except FileExistsError:
            return False
        return True

    if bridge.ip is not None:
        if not take(bridge.ip):
            held = _taken_by(bridge_dir, bridge.ip) or {}
            raise ConfigError("network.ip", bridge.ip, f"is taken (task {held.get('task_id')})")
        return bridge.ip
    net = ipaddress.IPv4Network(bridge.subnet)
    first, last = int(net.network_address) + 2, int(net.broadcast_address) - 1  # +1 is the gateway
    # Round robin from where the last search stopped: a just-released address
    # is handed out last, so stale neighbour entries elsewhere have time to expire.
    try:
        with open(os.path.join(bridge_dir, NEXT_FILE)) as f:
            start = int(f.read().strip())
    except (OSError, ValueError):
        start = first
    if not first <= start <= last:
        start = first
    leased = _leases(bridge_dir)
    count = last - first + 1
    for step in range(count):
        value = first + (start - first + step) % count
        ip = str(ipaddress.IPv4Address(value))
        if ip in leased and not _is_stale(leased[ip]):
            continue
        if take(ip):
            with open(os.path.join(bridge_dir, NEXT_FILE), "w") as f:
                f.write(str(value + 1 if value < last else first))
            return ip
    raise ConfigError("network.subnet", bridge.subnet, f"has no free address left (bridge {bridge.name})")


def find_lease(task_id: str) -> Optional[Lease]:
    """The lease of ``task_id`` (a reattached task's), or None."""
    try:
        bridges = sorted(os.listdir(IPAM_ROOT))
    except FileNotFoundError:
        return None
    with _locked():
        for name in bridges:
            bridge_dir = os.path.join(IPAM_ROOT, name)
            info = _read_json(os.path.join(bridge_dir, BRIDGE_FILE))
            if info is None:
                continue
            for ip, record in _leases(bridge_dir).items():
                if record.get("task_id") == task_id:
                    return Lease(bridge=name, subnet=info["subnet"], ip=ip, gateway=info["gateway"],
                                 veth=record["veth"], task_id=task_id, state_dir=record["state_dir"])
    return None


# -- the task's side -----------------------------------------------------------

def attach(lease: Lease, pid: int) -> None:
    """Give the (waiting) child ``pid`` its end of a veth pair as eth0 with
    the lease's address, up, and a default route via the gateway. On failure
    the pair is deleted again and LaunchError raised."""
    NetlinkError = netlink_error()
    made = False
    try:
        with iproute() as ipr:
            bridge = link_index(ipr, lease.bridge)
            if bridge is None:
                raise LaunchError("network", lease.bridge, errno.ENODEV, "the bridge is gone")
            # The peer is born in the task's namespace: no eth0 ever exists on the host.
            ipr.link("add", ifname=lease.veth, kind="veth", peer={"ifname": TASK_IFNAME, "net_ns_pid": pid})
            made = True
            host_end = ipr.link_lookup(ifname=lease.veth)[0]
            ipr.link("set", index=host_end, master=bridge, state="up")
        with iproute(netlink_socket_in(pid)) as inside:
            eth0 = inside.link_lookup(ifname=TASK_IFNAME)[0]
            inside.addr("add", index=eth0, address=lease.ip, prefixlen=lease.prefixlen)
            inside.link("set", index=eth0, state="up")
            inside.route("add", dst="0.0.0.0/0", gateway=lease.gateway, oif=eth0)
    except BaseException as exc:
        if made:
            with contextlib.suppress(Exception), iproute() as ipr:
                delete_link(ipr, lease.veth)
        if isinstance(exc, NetlinkError):
            raise LaunchError("network", f"{lease.veth}/{TASK_IFNAME} {lease.ip}", exc.code or errno.EIO) from None
        if isinstance(exc, OSError) and not isinstance(exc, LaunchError):
            raise LaunchError("network", f"{lease.veth}/{TASK_IFNAME} {lease.ip}", exc.errno or errno.EIO,
                              str(exc)) from None
        raise


def release(lease: Lease) -> None:
    """Undo ``attach`` and ``allocate``: the veth, the lease, and the bridge
    (or its gateway address) when pyexec made it and this was its last lease."""
    bridge_dir = os.path.join(IPAM_ROOT, lease.bridge)
    with iproute() as ipr:
        delete_link(ipr, lease.veth)
        with _locked():
            record = _read_json(os.path.join(bridge_dir, lease.ip))
            if record is not None and record.get("task_id") == lease.task_id:
                os.unlink(os.path.join(bridge_dir, lease.ip))
            _retire_bridge(ipr, lease.bridge, bridge_dir)


def cleanup_stale() -> List[str]:
    """Reclaim what crashed callers left: leases of tasks whose state
    directory is gone (with their veths), host veths of pyexec's kind that
    no lease names, and bridges (or gateway addresses) pyexec made that no
    lease uses any more. Returns the task ids of the reclaimed leases."""
    cleaned: List[str] = []
    try:
        bridges = sorted(os.listdir(IPAM_ROOT))
    except FileNotFoundError:
        bridges = []
    with _locked(), iproute() as ipr:
        named = set()
        for name in bridges:
            bridge_dir = os.path.join(IPAM_ROOT, name)
            for ip, record in _leases(bridge_dir).items():
                if _is_stale(record):
                    log.warning("reclaiming address %s of bridge %s from gone task %s", ip, name,
                                record.get("task_id"))
                    _drop_lease(ipr, bridge_dir, ip, record)
                    if isinstance(record.get("task_id"), str):
                        cleaned.append(record["task_id"])
                else:
                    named.add(record.get("veth"))
            _retire_bridge(ipr, name, bridge_dir)
        for link in ipr.get_links():
            ifname = link.get("ifname") or ""
            if (_VETH_RE.match(ifname) and ifname not in named
                    and link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"):
                log.warning("deleting veth %s that no lease names", ifname)
                delete_link(ipr, ifname)
    return cleaned
