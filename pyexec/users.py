"""Resolving the task's user: name, uid or uid:gid → uid, gid, groups, home.

Looked up in the task's own root (``<root>/etc/passwd`` and ``/etc/group``),
not the host's NSS, because a custom rootfs has its own users; the host-mirror
root shares the host's /etc so both agree there. Supplementary groups are the
user's primary gid plus every group listing the user by name — never padded
with zeros (a known bug elsewhere gave tasks root's group that way).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import ConfigError

__all__ = ["TaskUser", "resolve_user"]


@dataclass(frozen=True)
class TaskUser:
    uid: int
    gid: int
    groups: Tuple[int, ...]
    name: Optional[str]
    home: str


def _read_db(path: Path) -> List[List[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _passwd(root: Path) -> Dict[str, Tuple[str, int, int, str]]:
    """name -> (name, uid, gid, home); also keyed by str(uid) for the first entry of each uid."""
    table: Dict[str, Tuple[str, int, int, str]] = {}
    for fields in _read_db(root / "etc/passwd"):
        if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        entry = (fields[0], int(fields[2]), int(fields[3]), fields[5] or "/")
        table.setdefault(fields[0], entry)
        table.setdefault(fields[2], entry)
    return table


def _groups(root: Path) -> Tuple[Dict[str, int], Dict[str, List[int]]]:
    by_name: Dict[str, int] = {}
    members: Dict[str, List[int]] = {}
    for fields in _read_db(root / "etc/group"):
        if len(fields) < 4 or not fields[2].isdigit():
            continue
        gid = int(fields[2])
        by_name.setdefault(fields[0], gid)
        for member in filter(None, fields[3].split(",")):
            members.setdefault(member, []).append(gid)
    return by_name, members


def resolve_user(spec: Optional[str], root: str = "/") -> TaskUser:
    """``None`` is root; otherwise "name", "uid", "uid:gid", "name:group"."""
    if spec is None:
        spec = "0"
    root_path = Path(root)
    user_part, _, group_part = spec.partition(":")
    passwd = _passwd(root_path)
    entry = passwd.get(user_part)
    if entry is None:
        if not user_part.isdigit():
            raise ConfigError("user", spec, f"is not a user in {root_path / 'etc/passwd'}")
        uid, gid, name, home = int(user_part), int(user_part), None, "/"
    else:
        name, uid, gid, home = entry
    group_names, members = _groups(root_path)
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        elif group_part in group_names:
            gid = group_names[group_part]
        else:
            raise ConfigError("user", spec, f"names a group not in {root_path / 'etc/group'}")
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise ConfigError("user", spec, "has an id out of range")
    groups = [gid]
    if name is not None:
        groups += [g for g in members.get(name, []) if g not in groups]
    return TaskUser(uid=uid, gid=gid, groups=tuple(groups), name=name, home=home)
