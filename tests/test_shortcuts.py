"""The shortcuts pyexec takes at each launch keep their guarantees.

* The mount table cache (pyexec/cgroups/mounts.py) follows real mounts and
  umounts. Each of those scenarios runs in a child process in a private
  mount namespace (``unshare --mount --propagation private``), so the cgroup
  file systems it mounts are never seen by the host or by another test run's
  leak check.
* ``destroy`` removes the directories without listing them first, and must
  still kill what a task left (a process, a sub-cgroup, a process that left
  some hierarchies); ``create`` finds a stale cgroup by its mkdir.
* The mount plan reuses what it read from the host (pyexec/rootfs.py) only
  while the host is unchanged: a new ssh host key is masked at once.

Root only; nothing kernel-side is mocked.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from typing import List

import pytest

from conftest import REPO, sleeper
from pyexec.cgroups import V1Manager
from pyexec.cgroups.v1 import v1_mounts
from pyexec.config import Resources

pytestmark = pytest.mark.needs_root(reason="cgroups and mounts need root")
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
needs_v1 = pytest.mark.skipif("memory" not in v1_mounts(), reason="no cgroup v1 memory hierarchy on this host")
needs_v1_pids = pytest.mark.skipif("pids" not in v1_mounts(),
                                   reason="no cgroup v1 pids hierarchy on this host (a pure cgroup v2 host has none)")

PRELUDE = """
import ctypes, os, subprocess, sys
from pyexec.cgroups import mounts
from pyexec.cgroups.mounts import cgroup_mounts, cgroup_mounts_cached, parse_cgroup_mounts
from pyexec.cgroups.v1 import v1_mounts

def sh(*argv):
    subprocess.run(argv, check=True)

def from_kernel():
    with open("/proc/self/mountinfo") as f:
        return parse_cgroup_mounts(f.read())

def at(path):
    return [m for m in cgroup_mounts() if m.mountpoint == path]
"""


def in_private_namespace(tmp_path, script: str) -> None:
    """Run ``script`` (after PRELUDE) as root in a private mount namespace."""
    code = PRELUDE + textwrap.dedent(script)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code,
                           str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_unshare
def test_mount_table_cache_sees_mounts_and_umounts(tmp_path):
    in_private_namespace(tmp_path, """
        d = sys.argv[1]
        first = cgroup_mounts_cached()
        assert cgroup_mounts_cached() is first           # unchanged table: not read again
        assert list(first) == from_kernel()
        sh("mount", "-t", "cgroup2", "none", d)
        assert [m.fstype for m in at(d)] == ["cgroup2"]
        assert cgroup_mounts() == from_kernel()
        sh("umount", d)
        assert at(d) == [] and cgroup_mounts() == list(first)
        sh("mount", "-t", "tmpfs", "none", d)                # any change re-reads, the same entries come back
        assert cgroup_mounts_cached() is not first and cgroup_mounts() == list(first)
        sh("umount", d)
    """)


@needs_unshare
@needs_v1_pids
def test_v1_mounts_follow_the_table(tmp_path):
    in_private_namespace(tmp_path, """
        d = sys.argv[1]
        before = v1_mounts()
        assert "pids" in before, before                      # the same table as the host's
        sh("umount", before["pids"])
        assert "pids" not in v1_mounts()
        sh("mount", "-t", "cgroup", "-o", "pids", "none", d)
        assert v1_mounts() == {**before, "pids": d}
    """)


@needs_unshare
def test_mount_table_cache_in_a_forked_child(tmp_path):
    """The child must not use the fd it inherited: its poll would take the
    change notice from the parent, which shares that open file."""
    in_private_namespace(tmp_path, """
        d = sys.argv[1]
        cgroup_mounts_cached()
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(go_r, 1)
            ok = len(at(d)) == 1
            os.write(done_w, b"y" if ok else b"n")
            os._exit(0)
        sh("mount", "-t", "cgroup2", "none", d)
        os.write(go_w, b"x")
        assert os.read(done_r, 1) == b"y", "the child did not see the mount"
        os.waitpid(pid, 0)
        assert len(at(d)) == 1, "the parent did not see the mount after its child looked"
        sh("umount", d)
        assert at(d) == []
    """)


@needs_unshare
def test_mount_table_cache_when_its_fd_was_closed_and_reused(tmp_path):
    in_private_namespace(tmp_path, """
        d = sys.argv[1]
        cgroup_mounts_cached()
        fd = mounts._table.fd
        os.close(fd)                                          # a daemon closing every fd, say
        assert os.open("/dev/null", os.O_RDONLY) == fd        # and the number taken by another file
        sh("mount", "-t", "cgroup2", "none", d)
        assert len(at(d)) == 1
        os.close(fd)                                          # the /dev/null one is not ours: still open
        sh("umount", d)
        assert at(d) == []
    """)


@needs_unshare
def test_mount_table_cache_after_changing_mount_namespace(tmp_path):
    """The cached fd watches the namespace it was opened in; after unshare
    the process's table is another one."""
    in_private_namespace(tmp_path, """
        d = sys.argv[1]
        first = cgroup_mounts_cached()
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(0x00020000) == 0, os.strerror(ctypes.get_errno())    # CLONE_NEWNS
        sh("mount", "--make-rprivate", "/")
        sh("mount", "-t", "cgroup2", "none", d)
        assert len(at(d)) == 1
        assert cgroup_mounts() == from_kernel() != list(first)
    """)


# --------------------------------------------------------------------------- create and destroy

@needs_v1_pids
def test_destroy_kills_a_process_in_a_sub_cgroup(cg: str, procs: List[subprocess.Popen]) -> None:
    m = V1Manager("sub", Resources(pids=10), parent=cg)
    m.create()
    p = sleeper(procs)
    m.add_pid(p.pid)
    inner = os.path.join(m.paths["pids"], "inner")
    os.mkdir(inner)
    with open(os.path.join(inner, "cgroup.procs"), "w") as f:
        f.write(str(p.pid))
    m.destroy()
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert not m.exists()


@needs_v1
def test_destroy_kills_a_process_that_left_some_hierarchies(cg: str, procs: List[subprocess.Popen]) -> None:
    """The directories of the hierarchies it left are removed first; the
    one it is still in holds it, so destroy kills it there."""
    m = V1Manager("half", Resources(pids=10), parent=cg)
    m.create()
    p = sleeper(procs)
    m.add_pid(p.pid)
    last = m._dirs()[-1]
    for directory in m._dirs()[:-1]:
        with open(os.path.join(os.path.dirname(os.path.dirname(directory)), "cgroup.procs"), "w") as f:
            f.write(str(p.pid))  # back to the hierarchy's root cgroup
    m.destroy()
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert not os.path.exists(last) and not m.exists()


@needs_v1
def test_create_over_a_stale_cgroup_in_one_hierarchy(cg: str, procs: List[subprocess.Popen]) -> None:
    """A crashed run left the task cgroup in one hierarchy only, with a process:
    create's mkdir there fails, and what it made elsewhere is not left behind."""
    m = V1Manager("stale", Resources(pids=7), parent=cg)
    stale = m._dirs()[-1]
    os.makedirs(stale)
    p = sleeper(procs)
    with open(os.path.join(stale, "cgroup.procs"), "w") as f:
        f.write(str(p.pid))
    m.create()
    try:
        assert p.wait(timeout=5) == -signal.SIGKILL
        assert m.pids() == [] and all(os.path.isdir(d) for d in m._dirs())
        with open(os.path.join(m.paths["pids"], "pids.max")) as f:
            assert f.read().strip() == "7"
    finally:
        m.destroy()


# --------------------------------------------------------------------------- the mount plan

@needs_unshare
def test_mount_plan_masks_a_new_host_key_at_once(tmp_path):
    """/etc/ssh is a fresh tmpfs here (private namespace). What the plan read
    from it is reused once it has not changed for _SETTLE_S seconds (0.2
    here, not 2), and never after a change."""
    in_private_namespace(tmp_path, """
        import time
        from pyexec import ExecCommand, rootfs
        from pyexec.rootfs import _after_pivot, lib, plan_mounts
        rootfs._SETTLE_S = 0.2
        sh("mount", "-t", "tmpfs", "none", "/etc/ssh")
        cmd = ExecCommand(argv=["true"], task_dir=sys.argv[1])

        def masked():
            return {op.target for op in plan_mounts(cmd, "/mirror") if op.kind == lib.PX_OP_MASK}

        def settled_hits():
            time.sleep(0.3)
            before = _after_pivot.cache_info().hits
            first, second = masked(), masked()
            assert _after_pivot.cache_info().hits >= before + 1, "the settled host's ops were not reused"
            assert first == second
            return first

        assert not any("ssh_host" in path for path in settled_hits())
        open("/etc/ssh/ssh_host_new_key", "w").close()
        assert "/etc/ssh/ssh_host_new_key" in masked()          # at once: the directory just changed
        assert "/etc/ssh/ssh_host_new_key" in settled_hits()
        os.rename("/etc/ssh/ssh_host_new_key", "/etc/ssh/ssh_host_other_key")
        os.utime("/etc/ssh", (1, 1))                            # an mtime set back does not hide it
        assert "/etc/ssh/ssh_host_other_key" in masked() and "/etc/ssh/ssh_host_new_key" not in masked()
        paths = settled_hits()
        assert "/etc/ssh/ssh_host_other_key" in paths and "/etc/ssh/ssh_host_new_key" not in paths
    """)
