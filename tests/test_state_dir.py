"""A task's state directory (pyexec/executor/linux.py): task.json is written
whole or not at all, and teardown removes the directory whatever it holds,
never following a link out of it. Plain files in a temporary directory."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pyexec.executor.state import remove_state_dir, write_atomically


def test_write_atomically_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    write_atomically(str(path), json.dumps({"pid": 1}).encode())
    write_atomically(str(path), json.dumps({"pid": 2, "big": "x" * 200000}).encode())
    assert json.loads(path.read_text())["pid"] == 2
    assert os.listdir(tmp_path) == ["task.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_remove_state_dir_with_the_usual_files(tmp_path: Path) -> None:
    state = tmp_path / "task-0123456789ab"
    state.mkdir()
    for name in ("task.json", "exit.json", "exit.json.tmp"):
        (state / name).write_text("{}")
    remove_state_dir(str(state))
    assert not state.exists()
    remove_state_dir(str(state))  # gone already: nothing to do


def test_remove_state_dir_with_directories_and_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    state = tmp_path / "state"
    (state / "root" / "deeper").mkdir(parents=True)
    (state / "root" / "deeper" / "f").write_text("x")
    (state / "task.json").write_text("{}")
    (state / "link-to-dir").symlink_to(outside)
    (state / "link-to-file").symlink_to(outside / "keep")
    remove_state_dir(str(state))
    assert not state.exists()
    assert (outside / "keep").read_text() == "keep"  # links were removed, not followed


def test_task_json_is_json_dumps_of_the_record() -> None:
    """task.json is made of a template serialised before the clone; the text
    must be what json.dumps of the record gives, byte for byte."""
    from pyexec.executor.state import task_json_template
    record = {"version": 1, "env": {"A": 'quote " and \\ and \u00e9', "PATH": "/bin"}, "uid_map": None,
              "rlimits": [[7, 1024, 4096, "nofile"]], "seccomp_filter": "AAAA+/==", "set_caps": True}
    for parent, pid, started_at in (("pyexec", 1, 1764000000.123456), ('we"ird/\u00fc', 4194304, 0.1),
                                    ("a/b", 2 ** 31 - 1, 1e22)):
        before_pid, between, after = task_json_template("web-0123456789ab", "container", parent, record)
        expected = json.dumps({"task_id": "web-0123456789ab", "kind": "container", "pid": pid,
                               "started_at": started_at, "cgroup_parent": parent, "exec": record})
        assert f"{before_pid}{pid!r}{between}{started_at!r}{after}" == expected
