"""The shim's init-less join (``join_pidfd`` with ``use_init=False``, what
``pyexec-oci exec`` uses) and ``preserve_fds``, through ``shim.spawn``: the
joined task of a pid namespace is a CLONE_PARENT fork, our own child, whose
host pid ``task_pid`` reports; the preserved fds reach the task and a shim
fd among them is refused."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Sequence

import pytest

from pyexec import LaunchError
from pyexec.native import lib
from pyexec.shim import SpawnPlan, abort, finish, spawn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="spawning namespaces needs root")

PATH = "/usr/bin:/bin"


def _plan(argv: Sequence[str], **fields: object) -> SpawnPlan:
    return SpawnPlan(program=argv[0], argv=list(argv), env=[f"PATH={PATH}"], search_path=PATH,
                     **fields)  # type: ignore[arg-type]


def test_joining_a_pid_namespace_forks_our_own_child(tmp_path: Path) -> None:
    target = spawn(_plan(["/bin/sleep", "30"], clone_flags=lib.CLONE_NEWPID | lib.CLONE_NEWUTS, hostname="joined"))
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        finish(target)
        assert target.task_pid == target.pid
        child = spawn(_plan(["/bin/sh", "-c", "echo $(hostname) $$"], join_pidfd=target.pidfd,
                            clone_flags=lib.CLONE_NEWPID | lib.CLONE_NEWUTS, stdio=(-1, out, out)))
        try:
            finish(child)
            task = child.task_pid
            assert task > 0 and task != child.pid
            _, status = os.waitpid(child.pid, 0)  # the intermediate: gone right after its fork
            assert os.waitstatus_to_exitcode(status) == 0
            _, status = os.waitpid(task, 0)  # the task is ours (CLONE_PARENT), not the intermediate's
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            abort(child)
        assert (tmp_path / "out").read_text() == "joined 2\n"
        missing = spawn(_plan(["nosuchprog"], join_pidfd=target.pidfd, clone_flags=lib.CLONE_NEWPID))
        try:
            with pytest.raises(LaunchError) as info:
                finish(missing)
            assert info.value.step == "exec" and info.value.errno == errno.ENOENT
            assert missing.task_pid > 0  # still ours to reap
            os.waitpid(missing.task_pid, 0)
        finally:
            abort(missing)
    finally:
        os.close(out)
        abort(target)


def test_preserved_fds_reach_the_task_and_shim_fds_must_be_above(tmp_path: Path) -> None:
    r, w = os.pipe()  # close-on-exec here: the shim clears the flag in the range
    try:
        count = max(r, w) - 2
        # (Python, not sh: dash redirects only fds 0-9.)
        child = spawn(_plan([sys.executable, "-c", f"import os; os.write({w}, b'kept\\n')"], preserve_fds=count))
        try:
            finish(child)
            _, status = os.waitpid(child.pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            abort(child)
        assert os.read(r, 10) == b"kept\n"
        # A start_fd inside the preserved range would reach the task: refused.
        held = spawn(_plan(["/bin/true"], preserve_fds=count, start_fd=r))
        try:
            with pytest.raises(LaunchError) as info:
                finish(held)
            assert info.value.step == "stdio" and info.value.errno == errno.EBADF
        finally:
            abort(held)
    finally:
        os.close(r)
        os.close(w)
