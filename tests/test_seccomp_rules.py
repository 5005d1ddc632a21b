"""Whole seccomp programs against what their rules mean: ``Reference``
(support/reference.py) reads the parsed rules as libseccomp (and so runc)
does, and the program libseccomp exports must agree with it, run by the BPF
interpreter (support/bpf.py), for every syscall number of the native ABI (and
the i386 one on x86_64) and for arguments on the boundaries of every
condition: the default profile for several capability sets, and hand-made
profiles. test_seccomp_differential.py holds the default filter's tree to the
same programs.
"""
from __future__ import annotations

import platform
import random

import pytest

from pyexec import seccomp_tree
from pyexec.caps import DEFAULT_CAPABILITIES, parse_capabilities
from pyexec.native import lib
from pyexec.seccomp import _arches as parse_arches  # the parts the programs are made of
from pyexec.seccomp import _rules as parse_rules
from pyexec.seccomp import compile_profile, default_profile, instructions, syscall_number
from pyexec.seccomp_default import ordered_rules
from support.bpf import check_jumps, emulate, execute
from support.profiles import ALLOW, HAND_MADE, KILL_PROCESS, NAMES, NATIVE, arg, errno_ret, number, profile, rule
from support.reference import Reference, argument_vectors, numbers_to_check

GETPPID = syscall_number("getppid")
ALL_CAPS = parse_capabilities(["ALL"])
X32 = lib.PX_X32_SYSCALL_BIT
HEADER = 3                                              # load arch, check it, load nr
on_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 and x32 ABIs are x86_64's")


def default_program(caps=DEFAULT_CAPABILITIES) -> bytes:
    return compile_profile(default_profile(), caps)


def check_against_rules(prof, caps=(), randomly=300) -> bytes:
    """Compile ``prof`` and compare the program with the Reference on every number
    of the native ABI (and the i386 one on x86_64), with arguments around each condition."""
    program = compile_profile(prof, caps)
    check_jumps(program)
    rules, default = parse_rules(prof, frozenset(c.upper() for c in caps), "test")
    ref = Reference(rules, default, (NATIVE,) + tuple(token for token, _ in parse_arches(prof, "test")))
    rng = random.Random(7)
    for arch in [lib.PX_AUDIT_ARCH] + ([lib.SCMP_ARCH_X86] if X32 else []):
        for nr in numbers_to_check():
            conds = [c for r in ref.rules_for(nr, arch) for c in r.conds]
            for args in argument_vectors(conds, rng, randomly):
                if arch == lib.SCMP_ARCH_X86:             # what the kernel passes of a 32-bit ABI
                    args = [a & 0xFFFFFFFF for a in args]
                got = emulate(program, nr, args, arch)
                assert got in ref.decide(nr, args, arch), (hex(arch), nr, NAMES.get(nr), [hex(a) for a in args])
    for arch in (0xC00000B7, 0):                           # aarch64 (or x86_64 there), none
        if arch != lib.PX_AUDIT_ARCH:
            assert emulate(program, GETPPID, arch=arch) == KILL_PROCESS
    return program


# -- multi-arch, and the default profile's tree

@on_x86_64
def test_listed_abis_are_decided_by_their_own_rules():
    prof = profile(rule("getpid", errnoRet=5), rule("personality", errnoRet=6, args=[arg(0, "SCMP_CMP_EQ", 8)]),
                   architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    program = check_against_rules(prof, randomly=20)
    i386 = lib.SCMP_ARCH_X86                               # == AUDIT_ARCH_I386
    assert emulate(program, number("getpid", i386), arch=i386) == errno_ret(5)    # 20, not native 39
    assert emulate(program, number("getpid"), arch=i386) == ALLOW                 # 39 is i386's umask
    assert emulate(program, number("personality", i386), [8], arch=i386) == errno_ret(6)
    assert emulate(program, number("getpid", lib.SCMP_ARCH_X32)) == errno_ret(5)  # x32: the bit
    native_only = compile_profile(profile(rule("getpid", errnoRet=5)))
    assert emulate(native_only, number("getpid", i386), arch=i386) == KILL_PROCESS


def test_the_default_filter_finds_a_number_in_a_few_instructions():
    # What makes loading fast: the kernel runs the filter for every syscall number of
    # the native and the compat ABI to fill its action cache (up to the first argument
    # load). The tree that launches load (seccomp_tree) has ~60 ranges of numbers to
    # search, 6 tests deep (balanced, one level of slack here); libseccomp's binary tree
    # takes about 14, its header (arch, x32, -1) included; a list of the 80 denied calls
    # took up to 90.
    for caps in (DEFAULT_CAPABILITIES, (), ALL_CAPS):
        tree = seccomp_tree.assemble(*ordered_rules(frozenset(caps)))
        steps = [execute(tree, nr).before_args for nr in numbers_to_check()]
        assert max(steps) <= HEADER + 7 + 1 and sum(steps) / len(steps) <= HEADER + 6 + 1, caps
        assert len(instructions(tree)) < 100
        program = default_program(caps)
        steps = [execute(program, nr).before_args for nr in numbers_to_check()]
        assert max(steps) <= 16 and sum(steps) / len(steps) <= 14.5, caps
        assert len(instructions(program)) < 260


# -- the programs decide like their rules ----------------------------------------------------

@pytest.mark.parametrize("caps", [DEFAULT_CAPABILITIES, (), DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN",),
                                  ("CAP_SYS_PTRACE", "CAP_SYS_NICE"), ALL_CAPS],
                         ids=["docker", "none", "sys_admin", "ptrace_nice", "all"])
def test_the_default_profile_decides_like_its_rules(caps):
    check_against_rules(default_profile(), caps, randomly=60)


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_hand_made_profiles_decide_like_their_rules(name):
    check_against_rules(HAND_MADE[name], randomly=100)
