"""The per-process caches of pyexec.cgroups follow the kernel when it changes.

The mount table cache (pyexec/cgroups/mounts.py) is checked against real
mounts and umounts. Each scenario runs in a child process in a private mount
namespace (``unshare --mount --propagation private``), so the cgroup file
systems it mounts and unmounts are never seen by the host or by another test
run's leak check. Root only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux"),
]

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


def test_v1_mounts_follow_the_table(tmp_path):
    in_private_namespace(tmp_path, """
        d = sys.argv[1]
        before = v1_mounts()
        if "pids" not in before:
            sys.exit(0)                                      # no v1 pids hierarchy on this host
        sh("umount", before["pids"])
        assert "pids" not in v1_mounts()
        sh("mount", "-t", "cgroup", "-o", "pids", "none", d)
        assert v1_mounts() == {**before, "pids": d}
    """)


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
