"""``struct px_config`` is declared once, in csrc/pyexec.h, and pyexec/shim.py
fills it from cffi's view of that declaration.

These tests fail when a field is added on one side only: a C field that
``_fill`` neither copies from the ``SpawnPlan`` field of its name nor lists in
``shim._CONVERTED``; a ``_CONVERTED`` entry the header lacks or ``_fill`` never
sets; a field of ``SpawnPlan``, ``MonitorPlan``, ``Credentials``,
``CapabilitySets`` or ``MountOp`` that ``_fill`` never reads. They watch
``_fill`` set and read attributes on real cffi structs (through recording
wrappers), so nothing is launched and no root is needed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Set, Tuple

import pytest

from pyexec import shim
from pyexec.native import ffi, lib
from pyexec.rootfs import MountOp
from pyexec.seccomp_bpf import INSN

C_FIELDS = [name for name, _ in ffi.typeof("struct px_config").fields]
GENERIC = set(shim._COPIED) | set(shim._STRINGS)
CONVERTED = set(shim._CONVERTED)
PLAN_TYPES = (shim.SpawnPlan, shim.MonitorPlan, shim.Credentials, shim.CapabilitySets, MountOp)


class Written:
    """A struct px_config * that records the fields assigned to it (the
    assignment still goes to the real struct, so cffi checks every value)."""

    def __init__(self) -> None:
        object.__setattr__(self, "cdata", ffi.new("struct px_config *"))
        object.__setattr__(self, "names", set())

    def __setattr__(self, name: str, value: Any) -> None:
        self.names.add(name)
        setattr(self.cdata, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cdata, name)


class Read:
    """A plan (or a part of it) that records which of its fields are read."""

    def __init__(self, obj: Any, reads: Set[Tuple[str, str]]) -> None:
        object.__setattr__(self, "obj", obj)
        object.__setattr__(self, "reads", reads)

    def __getattr__(self, name: str) -> Any:
        self.reads.add((type(self.obj).__name__, name))
        return wrap(getattr(self.obj, name), self.reads)


def wrap(value: Any, reads: Set[Tuple[str, str]]) -> Any:
    if isinstance(value, PLAN_TYPES):
        return Read(value, reads)
    if isinstance(value, (list, tuple)) and any(isinstance(v, PLAN_TYPES) for v in value):
        return [wrap(v, reads) for v in value]
    return value


def plans() -> List[shim.SpawnPlan]:
    """Plans that take every branch of _fill between them."""
    allow = INSN.pack(lib.BPF_RET | lib.BPF_K, 0, 0, lib.SECCOMP_RET_ALLOW)
    full = shim.SpawnPlan(
        program="/bin/true", argv=["/bin/true", "x"], env=["A=b"], search_path="/bin",
        clone_flags=lib.CLONE_NEWNS | lib.CLONE_NEWPID, use_init=True, subreaper=True,
        monitor=shim.MonitorPlan(exe_fd=3, state_dir_fd=4, log_dir_fd=5, stdout_fd=6, stderr_fd=7,
                                 lifeline_fd=8, log_name="t", log_max_size=4096, log_max_files=2),
        wait_for_parent=True, hold_task=True, cgroup_fd=9, place_paths=["/cg/a/cgroup.procs"],
        hostname="box", loopback_up=True, make_private=True,
        mounts=[MountOp(lib.PX_OP_BIND, "/t", source="/s", fstype="none", flags=lib.MS_RDONLY, data="d",
                        bind_flags=lib.PX_BIND_RDONLY)],
        rlimits=[(7, 10, 20, "nofile")],
        credentials=shim.Credentials(1000, 1000, (1000, 27)),
        capabilities=shim.CapabilitySets(1, 2, 4, 8, 16, 40),
        no_new_privs=False, seccomp_filter=allow, join_pidfd=10, set_ctty=True,
        join_namespaces=[(11, lib.CLONE_NEWNET), (12, lib.CLONE_NEWPID)], domainname="example.org",
        sysctls=[("kernel.shmmax", "4096")], oom_score_adj=-5, stdio=(0, 1, 2),
        console_socket_fd=13, console_rows=24, console_cols=80, personality=lib.PER_LINUX32, umask=0o27,
        start_fd=14, cwd="/")
    bare = shim.SpawnPlan(program="true", argv=["true"], env=[], search_path="/usr/bin:/bin")
    return [full, bare]


def fill(plan: Any) -> Written:
    cfg = Written()
    shim._fill_config(cfg, plan, shim._Keep())
    return cfg


def test_every_c_field_is_filled_one_way() -> None:
    unfilled = [name for name in C_FIELDS if name not in GENERIC and name not in CONVERTED]
    assert not unfilled, (f"struct px_config fields {unfilled} (csrc/pyexec.h) have no SpawnPlan field of "
                          "their name and are not in shim._CONVERTED: add the plan field, or fill them in "
                          "_fill_config and list them in _CONVERTED")
    unknown = sorted(CONVERTED - set(C_FIELDS))
    assert not unknown, f"shim._CONVERTED lists {unknown}, which struct px_config does not have"
    assert not GENERIC & CONVERTED


def test_fill_sets_every_field_and_only_listed_ones() -> None:
    written: Set[str] = set()
    for plan in plans():
        written |= fill(plan).names
    assert written <= GENERIC | CONVERTED, f"_fill sets {sorted(written - GENERIC - CONVERTED)} unlisted"
    assert set(C_FIELDS) <= written, f"_fill never sets {sorted(set(C_FIELDS) - written)}"


def test_every_plan_field_is_read() -> None:
    reads: Set[Tuple[str, str]] = set()
    for plan in plans():
        shim._fill_config(Written(), wrap(plan, reads), shim._Keep())
    unread = [(cls.__name__, f.name) for cls in PLAN_TYPES for f in dataclasses.fields(cls)
              if (cls.__name__, f.name) not in reads]
    assert not unread, f"_fill never reads {unread}: fill the C field it is for, or drop it"


def test_generic_fields_are_copied_as_they_are() -> None:
    plan = plans()[0]
    cfg = fill(plan).cdata
    for name in shim._COPIED:
        value, wanted = getattr(cfg, name), getattr(plan, name)
        if isinstance(wanted, tuple):  # an array field
            value, wanted = list(value), list(wanted)
        assert value == wanted, name
    for name in shim._STRINGS:
        assert ffi.string(getattr(cfg, name)).decode() == getattr(plan, name), name
    assert cfg.use_init == 1 and cfg.no_new_privs == 0  # bools became ints


@pytest.mark.parametrize("struct, names", [
    ("struct px_mount_op", [f.name for f in dataclasses.fields(MountOp)]),
    ("struct px_rlimit", ["resource", "soft", "hard", "name"]),  # the order of SpawnPlan.rlimits' tuples
])
def test_the_plan_items_match_their_structs(struct: str, names: List[str]) -> None:
    assert sorted(name for name, _ in ffi.typeof(struct).fields) == sorted(names)


def test_the_oci_fields_are_converted_into_their_structs() -> None:
    plan = plans()[0]
    cfg = fill(plan).cdata
    joins = [(cfg.join_namespaces[i].fd, cfg.join_namespaces[i].type) for i in range(cfg.n_join_namespaces)]
    assert joins == list(plan.join_namespaces)
    sysctls = [(ffi.string(cfg.sysctls[i].key).decode(), ffi.string(cfg.sysctls[i].value).decode())
               for i in range(cfg.n_sysctls)]
    assert sysctls == list(plan.sysctls)
    assert (cfg.set_personality, cfg.personality, cfg.set_umask, cfg.umask) == (1, lib.PER_LINUX32, 1, 0o27)
    bare = fill(plans()[1]).cdata
    assert (bare.n_join_namespaces, bare.n_sysctls, bare.set_personality, bare.set_umask) == (0, 0, 0, 0)
    assert (bare.start_fd, bare.console_socket_fd, bare.domainname) == (-1, -1, ffi.NULL)
