"""The cgroup mounts of /proc/self/mountinfo, parsed once and re-read only
when the mount table changed.

Every launch needs the cgroup mount points (which v1 hierarchies exist and
where; the cgroup2 mount). Reading and parsing mountinfo costs as much as
the rest of building a cgroup manager, while the table practically never
changes, so this module keeps the parsed entries and an open fd of
/proc/self/mountinfo. The kernel marks that fd POLLPRI|POLLERR once any
mount or umount happened in its mount namespace since it was opened or last
polled (fs/proc_namespace.c, mounts_poll), so a zero-timeout poll() tells
whether the cached entries are still the table's. The cache is also dropped
when the fd is no longer the one we opened (the caller closed and reused its
number), in a forked child (the fd's open file and its poll state are
shared with the parent) and when this process moved to another mount
namespace (the fd watches the namespace it was opened in).
"""
from __future__ import annotations

import os
import re
import select
import threading
from typing import List, NamedTuple, Optional, Tuple

from .fscommon import read_all

__all__ = ["MountEntry", "cgroup_mounts", "cgroup_mounts_cached", "parse_cgroup_mounts", "MOUNTINFO"]

MOUNTINFO = "/proc/self/mountinfo"


class MountEntry(NamedTuple):
    """One cgroup file system mount from /proc/self/mountinfo."""

    fstype: str            # "cgroup" (v1) or "cgroup2"
    mountpoint: str
    root: str              # the cgroup the mount shows at its top ("/" normally)
    options: Tuple[str, ...]  # super options, e.g. ("rw", "memory")


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(text: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_cgroup_mounts(text: str) -> List[MountEntry]:
    """The cgroup and cgroup2 lines of mountinfo ``text``, in mount order."""
    out: List[MountEntry] = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        out.append(MountEntry(rfields[0], _unescape(fields[4]), _unescape(fields[3]),
                              tuple(rfields[2].split(","))))
    return out


def _mount_ns() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return None


class _Table:
    """The cached entries and the fd that says when they went stale."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fd = -1
        self.identity: Optional[Tuple[int, int, int, Optional[str]]] = None  # pid, st_dev, st_ino, mount ns
        self.poller: Optional[select.poll] = None
        self.entries: Optional[Tuple[MountEntry, ...]] = None

    def _ours(self) -> bool:
        """Whether ``fd`` is still the file this process opened (not closed and reused)."""
        if self.identity is None:
            return False
        try:
            st = os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity[1:3]

    def _fresh(self) -> bool:
        if self.entries is None or self.poller is None or self.identity is None:
            return False
        if self.identity[0] != os.getpid() or not self._ours():
            return False
        if self.poller.poll(0):  # POLLPRI|POLLERR: the table changed (POLLNVAL: fd closed)
            return False
        return self.identity[3] == _mount_ns()

    def get(self) -> Tuple[MountEntry, ...]:
        with self.lock:
            if not self._fresh():
                self._reload()
            assert self.entries is not None
            return self.entries

    def _reload(self) -> None:
        """Open a new fd, then read through it: a change after the open marks
        the new fd, so it is seen at the next check, never lost."""
        if self._ours():  # a forked child closes its inherited copy too (the parent keeps its own)
            os.close(self.fd)
        self.entries, self.poller, self.identity, self.fd = None, None, None, -1
        namespace = _mount_ns()
        fd = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        try:
            entries = tuple(parse_cgroup_mounts(read_all(fd).decode(errors="surrogateescape")))
            st = os.fstat(fd)
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.poller, self.entries = fd, poller, entries
        self.identity = (os.getpid(), st.st_dev, st.st_ino, namespace)


_table = _Table()


def _after_fork_in_child() -> None:
    # A fork while another thread held the lock (a launch reading the table)
    # would leave the child's copy locked for good: the child gets a new one.
    _table.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def cgroup_mounts(mountinfo: str = MOUNTINFO) -> List[MountEntry]:
    """Every cgroup and cgroup2 mount visible to this process, in mount order
    (from the cache while the mount table is unchanged; another ``mountinfo``
    file is read every time)."""
    if mountinfo != MOUNTINFO:
        with open(mountinfo) as f:
            return parse_cgroup_mounts(f.read())
    return list(_table.get())


def cgroup_mounts_cached() -> Tuple[MountEntry, ...]:
    """``cgroup_mounts()`` as the cached tuple itself: the same object while
    the table is unchanged, so derived facts can be cached against it."""
    return _table.get()
