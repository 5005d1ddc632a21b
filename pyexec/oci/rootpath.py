"""Paths inside a container's root, resolved from the host without ever leaving the root.

Before pivot_root the mount plan works on host paths (``<rootfs>/dev/pts``),
where the kernel would follow a symlink of the image (``/dev -> /etc`` or
``/run -> /``) to wherever it points on the host: a malicious image (or a
second container sharing a volume) could make a mount land on the host
(CVE-2021-30465 and its kin). So each component of a destination is looked
at with lstat, never followed by the kernel: a symlink is read and resolved
here, its target taken inside the root (an absolute one from the root, not
from the host's /; ``..`` never climbs above the root), and the plan then
names only the resolved path, whose components are real directories.

The tree is read through a ``Probe`` (container path -> ``Node``): the host
below the rootfs by default, or mounts.py's view, which knows what its
earlier mounts will have put on top by then. Between the plan and the
mounts an image can still change (the shim would need openat2's
RESOLVE_IN_ROOT to close that window); what is resolved here is that the
config itself cannot point out of the root.
"""
from __future__ import annotations

import enum
import os
import stat
from collections import deque
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..errors import ConfigError

__all__ = ["Kind", "Node", "Probe", "Resolved", "MAX_SYMLINKS", "host_node", "host_probe", "host_path",
           "resolve_in_root"]

MAX_SYMLINKS = 40  # the kernel's limit (ELOOP) for one path


class Kind(enum.Enum):
    DIR = "directory"
    OTHER = "file"     # anything that is neither a directory nor a symlink
    LINK = "symlink"
    MISSING = "missing"


@dataclass(frozen=True)
class Node:
    """What is at a path: its kind and, for a symlink, its target as written."""

    kind: Kind
    target: Optional[str] = None


Probe = Callable[[str], Node]


def host_node(path: str) -> Node:
    """lstat of the host path ``path``: ENOENT and ENOTDIR are MISSING, other errors are raised."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return Node(Kind.MISSING)
    if stat.S_ISLNK(st.st_mode):
        return Node(Kind.LINK, os.readlink(path))
    return Node(Kind.DIR if stat.S_ISDIR(st.st_mode) else Kind.OTHER)


def host_path(root: str, path: str) -> str:
    """The host path of the container path ``path`` (absolute, resolved) under ``root``."""
    return root if path == "/" else root.rstrip("/") + path


def host_probe(root: str) -> Probe:
    """A probe of the tree on the host below ``root``, as it is now."""
    return lambda path: host_node(host_path(root, path))


@dataclass(frozen=True)
class Resolved:
    """A container path with every symlink resolved inside the root.

    ``path`` is absolute and normal; ``kind`` what is there (MISSING: nothing
    yet); ``missing`` the container paths of its components that do not
    exist, outermost first (``path`` itself last when it is missing), the
    directories a plan must make.
    """

    path: str
    kind: Kind
    missing: Tuple[str, ...] = ()


def _parts(path: str) -> List[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_root(path: str, probe: Probe, field: str, follow_last: bool = True) -> Resolved:
    """Resolve the container path ``path`` (absolute) through ``probe``.

    With ``follow_last`` false a symlink at the last component is the
    result itself (for making a node or a link there: mknod and symlink do
    not follow it). ``field`` names the config value in a ConfigError: a
    component that is a file, a symlink loop, a probe that fails.
    """
    todo = deque(_parts(path))
    names: List[str] = []
    kinds: List[Kind] = []
    links = 0
    while todo:
        name = todo.popleft()
        if name == "..":
            if names:  # ".." of the root is the root
                names.pop()
                kinds.pop()
            continue
        if kinds and kinds[-1] is Kind.OTHER:
            raise ConfigError(field, path, f"goes through {'/' + '/'.join(names)!r}, which is not a directory")
        here = "/" + "/".join(names + [name])
        if kinds and kinds[-1] is Kind.MISSING:
            node = Node(Kind.MISSING)  # nothing is below what does not exist
        else:
            try:
                node = probe(here)
            except OSError as exc:
                raise ConfigError(field, path, f"cannot be looked up at {here!r}: {exc.strerror}") from None
        if node.kind is Kind.LINK and (todo or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise ConfigError(field, path, "has too many levels of symbolic links")
            target = node.target or ""
            if target.startswith("/"):  # absolute: from the container's root, not the host's
                names.clear()
                kinds.clear()
            todo.extendleft(reversed(_parts(target)))
            continue
        names.append(name)
        kinds.append(node.kind)
    if not names:
        return Resolved("/", Kind.DIR)
    first_missing = next((i for i, k in enumerate(kinds) if k is Kind.MISSING), len(kinds))
    missing = tuple("/" + "/".join(names[:i + 1]) for i in range(first_missing, len(names)))
    return Resolved("/" + "/".join(names), kinds[-1], missing)
