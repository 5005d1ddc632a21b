"""find_program on a real file system: search order, separators, the execute bit, failures.

Programs are tiny shell scripts in tmp_path; one test launches a repaired
script through the portable executor to show the repaired file really runs.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from pyexec import ExecCommand, new_executor
from pyexec.errors import LaunchError
from pyexec.executor.lookup import find_program

SCRIPT = "#!/bin/sh\necho {tag}\n"


def make(path: Path, tag: str = "x", mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPT.format(tag=tag))
    os.chmod(path, mode)
    return path


@pytest.fixture
def layout(tmp_path: Path):
    """(task_dir, a PATH directory outside it) with ``prog`` in local/, task_dir and PATH."""
    task = tmp_path / "task"
    bindir = tmp_path / "bin"
    for path in (task / "local" / "prog", task / "prog", bindir / "prog"):
        make(path)
    return task, bindir


def test_order_local_then_task_dir_then_path(layout):
    task, bindir = layout
    assert find_program("prog", str(task), str(bindir)) == str(task / "local" / "prog")
    (task / "local" / "prog").unlink()
    assert find_program("prog", str(task), str(bindir)) == str(task / "prog")
    (task / "prog").unlink()
    assert find_program("prog", str(task), str(bindir)) == str(bindir / "prog")


def test_path_entries_in_order_and_empty_or_relative_ones_skipped(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    make(second / "tool")
    make(first / "tool")
    # "", "." and "relative" would mean the caller's cwd, not the task's: skipped.
    found = find_program("tool", str(tmp_path / "task"), f":.:relative:{first}:{second}")
    assert found == str(first / "tool")


def test_absolute_path_as_is(layout):
    task, bindir = layout
    assert find_program(str(bindir / "prog"), str(task), "") == str(bindir / "prog")
    assert find_program("/bin/sh", str(task), "") == "/bin/sh"


def test_relative_path_with_slash_resolves_under_local_then_task_dir(tmp_path):
    task, bindir = tmp_path / "task", tmp_path / "bin"
    make(task / "bin" / "x")
    make(bindir / "bin" / "x")  # a slash means: never a PATH search
    assert find_program("bin/x", str(task), str(bindir)) == str(task / "bin" / "x")
    make(task / "local" / "bin" / "x")
    assert find_program("bin/x", str(task), str(bindir)) == str(task / "local" / "bin" / "x")
    assert find_program("./bin/x", str(task), str(bindir)) == str(task / "local" / "bin" / "x")


def test_default_and_empty_path():
    assert os.path.basename(find_program("sh", "/nonexistent-task", None)) == "sh"  # pyexec's default PATH
    with pytest.raises(LaunchError) as info:
        find_program("sh", "/nonexistent-task", "")
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("name", ["no-such-program-pyexec", "bin/no-such", "/no/such/program"])
def test_not_found_is_enoent(tmp_path, name):
    with pytest.raises(LaunchError) as info:
        find_program(name, str(tmp_path), "/usr/bin:/bin")
    assert info.value.errno == errno.ENOENT
    assert info.value.step == "exec"
    assert str(info.value) == f"exec {name}: No such file or directory"


def test_directory_is_skipped(layout):
    task, bindir = layout
    (task / "local" / "prog").unlink()
    (task / "local" / "prog").mkdir()
    assert find_program("prog", str(task), str(bindir)) == str(task / "prog")
    (task / "prog").unlink()
    (task / "prog").mkdir()
    assert find_program("prog", str(task), str(bindir)) == str(bindir / "prog")
    with pytest.raises(LaunchError) as info:
        find_program(str(task / "prog"), str(task), "")
    assert info.value.errno == errno.EISDIR


def test_file_in_task_dir_without_execute_bit_is_made_executable(tmp_path):
    task = tmp_path / "task"
    prog = make(task / "local" / "prog", mode=0o644)
    assert find_program("prog", str(task), "") == str(prog)
    assert stat.S_IMODE(prog.stat().st_mode) == 0o755
    owner_only = make(task / "other", mode=0o700)  # has an execute bit: left alone
    find_program("other", str(task), "")
    assert stat.S_IMODE(owner_only.stat().st_mode) == 0o700


def test_host_files_are_never_chmodded(tmp_path):
    task = tmp_path / "task"
    first, second = tmp_path / "a", tmp_path / "b"
    plain = make(first / "tool", mode=0o644)
    make(second / "tool")
    # PATH search: a file without an execute bit is skipped, as execvp does.
    assert find_program("tool", str(task), f"{first}:{second}") == str(second / "tool")
    # An absolute path outside the task directory is returned as is (exec will say EACCES).
    assert find_program(str(plain), str(task), "") == str(plain)
    # A symlink in local/ to a host file: the target is outside, so untouched too.
    (task / "local").mkdir(parents=True)
    (task / "local" / "tool").symlink_to(plain)
    assert find_program("tool", str(task), "") == str(task / "local" / "tool")
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_repaired_script_runs_through_the_portable_executor(tmp_path):
    task = tmp_path / "task"
    make(task / "local" / "hello", tag="repaired", mode=0o644)
    ex = new_executor("portable")
    try:
        ex.launch(ExecCommand(argv=["hello"], task_dir=str(task), name="hello"))
        result = ex.wait(5)
    finally:
        ex.shutdown(grace=0)
    assert result.exit_code == 0
    assert (task / "logs" / "hello.stdout.0").read_text() == "repaired\n"
