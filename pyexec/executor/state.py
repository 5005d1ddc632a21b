"""A Linux task's state directory: ``<state_root>/<task id>/``.

It holds ``task.json`` (who the task is: id, kind, monitor pid, start time,
cgroup parent and the exec record an ``exec`` into it needs) and, once the
task ended, the monitor's ``exit.json``. This module owns their names, the
atomic writes, reading them back, telling which directories belong to which
executor, and removing a directory once its task is over. The directory is
made before the task's cgroup and removed after it, so that
``cleanup_stale`` can tell a live task from a crashed caller's leftovers.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["DEFAULT_STATE_ROOT", "STATE_FILE", "EXIT_FILE", "default_state_root", "exit_file",
           "task_json_template", "write_task_json", "write_atomically", "read_task_json", "state_entries",
           "remove_state_dir"]

DEFAULT_STATE_ROOT = "/run/pyexec"
STATE_FILE = "task.json"
EXIT_FILE = "exit.json"
# Not a task: pyexec.network keeps its address leases here (task ids end in -<hex>).
_NOT_TASKS = frozenset({"ipam"})


def default_state_root() -> str:
    """/run/pyexec for root; a directory of the caller's own otherwise."""
    if os.geteuid() == 0:
        return DEFAULT_STATE_ROOT
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "pyexec")
    return os.path.join(tempfile.gettempdir(), f"pyexec-{os.geteuid()}")


def exit_file(state_dir: str) -> str:
    """Where the task's monitor writes its exit record."""
    return os.path.join(state_dir, EXIT_FILE)


def task_json_template(task_id: str, kind: str, cgroup_parent: str,
                       exec_record: Mapping[str, Any]) -> Tuple[str, str, str]:
    """task.json -- json.dumps({"task_id", "kind", "pid", "started_at",
    "cgroup_parent", "exec"}) -- as the text before the pid, between pid and
    started_at, and after: serialised before the clone, so that writing the
    file once the task runs is a format of two numbers (json writes an int or
    a finite float as its repr), not a dump of the exec record, the longest
    part (its environment, its seccomp filter)."""
    dumps = json.dumps
    return (f'{{"task_id": {dumps(task_id)}, "kind": {dumps(kind)}, "pid": ', ', "started_at": ',
            f', "cgroup_parent": {dumps(cgroup_parent)}, "exec": {dumps(exec_record)}}}')


def write_task_json(state_dir: str, template: Tuple[str, str, str], pid: int, started_at: float) -> None:
    """task.json of the task now running as ``pid`` (``template`` from task_json_template)."""
    before_pid, between, after = template
    text = f"{before_pid}{pid!r}{between}{started_at!r}{after}"
    write_atomically(os.path.join(state_dir, STATE_FILE), text.encode())


def write_atomically(path: str, data: bytes) -> None:
    """``data`` as the file ``path``, written to ``path.tmp`` and renamed: a
    reader sees no file or all of it. Plain os calls: a text file object and
    json.dump's pure-Python chunked encoder cost more than the writing."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def read_task_json(state_dir: str) -> Optional[Dict[str, Any]]:
    """The task's task.json, or None when it is missing or unreadable."""
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def state_entries(state_root: str, cgroup_parent: str) -> List[str]:
    """The task ids under ``state_root`` that belong to executors of
    ``cgroup_parent``: a task.json naming another parent is a differently
    configured executor's; a directory without a readable one (a launch in
    progress, a crash before it was written) counts as ours."""
    try:
        names = os.listdir(state_root)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name in _NOT_TASKS:
            continue
        path = os.path.join(state_root, name)
        record = read_task_json(path)
        if record is not None:
            if record.get("cgroup_parent") == cgroup_parent:
                out.append(name)
        elif os.path.isdir(path):
            out.append(name)
    return out


def remove_state_dir(path: str) -> None:
    """``shutil.rmtree(path, ignore_errors=True)``, the short way for what a
    state directory holds once its task ended (task.json, exit.json):
    unlink those and rmdir, without listing it. Anything else in it (the
    .tmp of a writer that died, a directory) fails the rmdir, and rmtree
    removes what is left."""
    try:
        for name in (STATE_FILE, EXIT_FILE):
            try:
                os.unlink(os.path.join(path, name))  # never follows a symlink
            except FileNotFoundError:
                pass
        os.rmdir(path)
        return
    except FileNotFoundError:
        return  # gone already
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)
