"""The network part of a task's configuration (``Isolation.network``):
``Bridge`` and the joins of an existing namespace ("netns:PATH", "ns:PATH"),
checked the way config.py checks everything else (a ``ConfigError`` naming
the field before anything exists). config.py re-exports the public names.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, FrozenSet, Optional, Tuple

from .errors import ConfigError

__all__ = ["Bridge", "joined_netns_path", "reconcile_network", "NETNS_DIR"]

_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # IFNAMSIZ - 1
NETNS_DIR = "/var/run/netns"  # where "ip netns add NAME" (and pyroute2) bind a namespace


@dataclass(frozen=True)
class Bridge:
    """``Isolation.network``: the task's own network namespace, joined to the
    host bridge ``name`` by a veth pair; ``eth0`` in the task gets ``ip`` (or
    a free address of ``subnet``) and a default route via the bridge's
    address, the subnet's first host address. The bridge is made on first
    use and removed with its last task (only when pyexec made it). IPv4 only;
    no port maps, no outbound NAT (see the README)."""

    name: str = "pyexec0"
    subnet: str = "10.88.0.0/16"
    ip: Optional[str] = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.name, str) or not _IFNAME_RE.match(self.name):
            raise ConfigError("network.name", self.name,
                              "is not an interface name (1-15 letters, digits, '_', '.', '-')")
        try:
            if not isinstance(self.subnet, str):
                raise TypeError(self.subnet)
            subnet = ipaddress.IPv4Network(self.subnet, strict=True)
        except (TypeError, ValueError):
            raise ConfigError("network.subnet", self.subnet,
                              "is not an IPv4 subnet like 10.88.0.0/16 (host bits zero)") from None
        if subnet.prefixlen > 30:
            raise ConfigError("network.subnet", self.subnet, "is too small (at most /30: a gateway and a task)")
        if subnet.is_loopback or subnet.is_multicast or subnet.is_link_local or subnet.is_unspecified \
                or subnet.is_reserved or subnet.network_address == ipaddress.IPv4Address(0):
            raise ConfigError("network.subnet", self.subnet, "is not a unicast subnet a bridge can use")
        put(self, "subnet", str(subnet))
        if self.ip is not None:
            try:
                if not isinstance(self.ip, str):
                    raise TypeError(self.ip)
                ip = ipaddress.IPv4Address(self.ip)
            except (TypeError, ValueError):
                raise ConfigError("network.ip", self.ip, "is not an IPv4 address") from None
            if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
                raise ConfigError("network.ip", self.ip, f"is not a host address of {subnet}")
            if ip == subnet.network_address + 1:
                raise ConfigError("network.ip", self.ip, "is the gateway (the bridge's own address)")
            put(self, "ip", str(ip))

    @property
    def gateway(self) -> str:
        """The bridge's address: the subnet's first host address."""
        return str(ipaddress.IPv4Network(self.subnet).network_address + 1)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


_JOIN_PREFIXES = ("netns:", "ns:")


def joined_netns_path(network: Any) -> Optional[str]:
    """The file of the namespace ``"netns:PATH"`` or ``"ns:PATH"`` joins
    (``"netns:NAME"`` is /var/run/netns/NAME); None for other networks."""
    if not isinstance(network, str):
        return None
    for prefix in _JOIN_PREFIXES:
        if network.startswith(prefix):
            path = network[len(prefix):]
            if prefix == "netns:" and path and "/" not in path:
                path = os.path.join(NETNS_DIR, path)
            return path
    return None


def _check_netns_file(network: str) -> None:
    path = joined_netns_path(network)
    if not path or not os.path.isabs(path):
        raise ConfigError("network", network, "must name an absolute path ('netns:/var/run/netns/NAME', "
                                              "'ns:/proc/PID/ns/net') or a name under /var/run/netns")
    if not os.path.exists(path):
        raise ConfigError("network", network, "does not exist")
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError("network", network, f"cannot be opened: {exc.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, 0xB703)  # NS_GET_NSTYPE
    except OSError:
        kind = -1
    finally:
        os.close(fd)
    if kind != 0x40000000:  # CLONE_NEWNET
        raise ConfigError("network", network, "is not a network namespace file")


def reconcile_network(network: Any, names: FrozenSet[str]) -> Tuple[Any, FrozenSet[str]]:
    """(network, namespaces) made consistent: the network decides about "net"."""
    if isinstance(network, Bridge):
        return network, names | {"net"}
    if network == "none":
        # Before Isolation.network, leaving "net" out of namespaces meant the host's network.
        return ("none", names) if "net" in names else ("host", names)
    if network == "host":
        return "host", names - {"net"}
    if joined_netns_path(network) is not None:
        _check_netns_file(network)
        if "user" in names:
            raise ConfigError("network", network, "cannot be joined from a new user namespace "
                                                  "(setns needs CAP_SYS_ADMIN over the namespace's owner)")
        return network, names - {"net"}
    raise ConfigError("network", network, "must be 'none', 'host', a Bridge, 'netns:PATH' or 'ns:PATH'")
