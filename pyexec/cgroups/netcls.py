"""The v1 net_cls and net_prio controllers (no cgroup v2 counterpart: v2.py
refuses these fields; on v2 eBPF programs take their place).

net_cls.classid: the class id tagged on the task's packets (tc, iptables).
net_prio.ifpriomap: "ifname priority" per write, the SO_PRIORITY of the
task's packets per interface. A v1 task joins these hierarchies only when
the field is set.
"""
from __future__ import annotations

import os

from ..config import Resources
from .fscommon import require_file, write_value, write_values

__all__ = ["check_net_cls_v1", "set_net_cls_v1", "check_net_prio_v1", "set_net_prio_v1"]


def check_net_cls_v1(path: str, res: Resources) -> None:
    """Raise ConfigError when net_cls_classid is set and net_cls.classid is missing."""
    if res.net_cls_classid is not None:
        require_file(path, "net_cls.classid", "net_cls_classid", res.net_cls_classid, "net_cls")


def set_net_cls_v1(path: str, res: Resources) -> None:
    """Write net_cls.classid."""
    if res.net_cls_classid is not None:
        write_value(os.path.join(path, "net_cls.classid"), res.net_cls_classid, "net_cls_classid",
                    res.net_cls_classid)


def check_net_prio_v1(path: str, res: Resources) -> None:
    """Raise ConfigError when net_prio_ifpriomap is set and net_prio.ifpriomap is missing."""
    if res.net_prio_ifpriomap is not None:
        require_file(path, "net_prio.ifpriomap", "net_prio_ifpriomap", res.net_prio_ifpriomap, "net_prio")


def set_net_prio_v1(path: str, res: Resources) -> None:
    """One "ifname priority" write per interface to net_prio.ifpriomap."""
    if res.net_prio_ifpriomap:
        write_values(os.path.join(path, "net_prio.ifpriomap"),
                     [(f"{name} {prio}", "net_prio_ifpriomap", {name: prio})
                      for name, prio in res.net_prio_ifpriomap.items()])
