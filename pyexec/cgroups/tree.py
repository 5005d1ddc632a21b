"""A task's cgroup directories as trees on disk: the processes in them,
killing those, and making and removing the directories. The same on v1 and
v2; the backends choose what to call and on which files.

This module owns:

* listing members (``procs``, ``tree_pids``: a cgroup and its descendants);
* killing (``kill_pids``; ``freeze_kill_thaw``, one round under the freezer,
  for v1's freezer.state and v2's cgroup.freeze alike);
* making directories while a sibling task may remove a shared parent
  (``retry_vanished_parent``), undoing a failed create (``undo_created``);
* removing (``remove_tree`` with EBUSY retries, ``rmdir_unused``,
  ``remove_empty_parents``).

Control files are written through fscommon.py, so every write is logged there.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import time
from typing import Callable, Iterable, List, Sequence

from .fscommon import write_text

__all__ = [
    "FREEZE_WAIT", "procs", "tree_pids", "kill_pids", "freeze_kill_thaw", "remove_tree",
    "retry_vanished_parent", "undo_created", "remove_empty_parents", "rmdir_unused",
]

log = logging.getLogger(__name__)

FREEZE_WAIT = 1.0  # seconds to wait for a cgroup to freeze before killing anyway


def procs(directory: str) -> List[int]:
    """The pids in ``directory``'s cgroup.procs; [] when the cgroup is gone."""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def tree_pids(directories: Iterable[str]) -> List[int]:
    """Sorted unique pids in the cgroups ``directories`` and all their descendants."""
    found = set()
    for top in directories:
        for dirpath, _dirs, _files in os.walk(top):
            found.update(procs(dirpath))
    return sorted(found)


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each pid; pids that are already gone are ignored."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def freeze_kill_thaw(freeze_file: str, freeze: str, thaw: str, is_frozen: Callable[[], bool],
                     pids: Callable[[], List[int]], deadline: float) -> None:
    """One kill round under the freezer: freeze (so nothing forks between
    listing and killing), SIGKILL every pid, thaw (SIGKILLed tasks die once
    thawed). Both v1's freezer.state and v2's cgroup.freeze work this way."""
    try:
        write_text(freeze_file, freeze)
        until = min(deadline, time.monotonic() + FREEZE_WAIT)
        while not is_frozen():
            if time.monotonic() > until:
                log.warning("%s did not freeze in time; killing anyway", os.path.dirname(freeze_file))
                break
            time.sleep(0.002)
        kill_pids(pids())
    finally:
        try:
            write_text(freeze_file, thaw)
        except FileNotFoundError:
            pass


def remove_tree(directory: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup and its descendants, deepest first, retrying EBUSY (tasks
    that were just killed leave the cgroup asynchronously). Gone already is fine."""
    if not os.path.isdir(directory):
        return
    subdirs = [dirpath for dirpath, _d, _f in os.walk(directory)]
    deadline = time.monotonic() + timeout
    for path in sorted(subdirs, key=len, reverse=True):
        delay = 0.005
        while True:
            try:
                os.rmdir(path)
                log.debug("removed cgroup %s", path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)


def retry_vanished_parent(make: Callable[[], None], attempts: int = 5) -> None:
    """Call ``make``; again when it fails with FileNotFoundError, because a
    sibling task's destroy() removed an empty shared parent between our mkdirs."""
    for attempt in range(attempts):
        try:
            make()
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def undo_created(created: Sequence[str]) -> None:
    """rmdir the directories a failed create() made, newest first; never raises."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                log.warning("could not remove %s after a failed create: %s", path, e)


def remove_empty_parents(directory: str, stop: str) -> None:
    """rmdir ``directory`` and its ancestors up to (not including) ``stop`` while
    they are empty. Busy or non-empty parents (siblings still alive) stay."""
    stop = os.path.normpath(stop)
    path = os.path.normpath(directory)
    while path != stop and path.startswith(stop + os.sep):
        if not rmdir_unused(path):
            return
        path = os.path.dirname(path)


def rmdir_unused(path: str) -> bool:
    """rmdir the cgroup ``path``: True when it is gone (now or before), False
    when the kernel says it is in use (processes or sub-cgroups)."""
    try:
        os.rmdir(path)
        log.debug("removed cgroup %s", path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True
