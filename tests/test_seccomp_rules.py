"""Whole seccomp programs against what their rules mean: ``Reference`` reads
the parsed rules as libseccomp (and so runc) does, and the program that
libseccomp exports must agree with it, run by the BPF interpreter
(support/bpf.py), for every syscall number of the native ABI (and the i386 one
on x86_64) and for arguments on the boundaries of every condition: the default
profile for several capability sets, and hand-made profiles.
"""
from __future__ import annotations

import errno
import platform
import random

import pytest

from pyexec.caps import DEFAULT_CAPABILITIES, parse_capabilities
from pyexec.native import lib
from pyexec.seccomp import _arches as parse_arches  # the parts the programs are made of
from pyexec.seccomp import _rules as parse_rules
from pyexec.seccomp import compile_profile, default_profile, instructions, syscall_number
from support.bpf import check_jumps, emulate, execute
from support.profiles import (
    ALL_NUMBERS,
    ALLOW,
    KILL_PROCESS,
    NAMES,
    NATIVE,
    REFERENCE,
    U64,
    X32,
    arg,
    errno_ret,
    number,
    profile,
    rule,
)

GETPPID = syscall_number("getppid")
ALL_CAPS = parse_capabilities(["ALL"])
on_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 and x32 ABIs are x86_64's")


def default_program(caps=DEFAULT_CAPABILITIES) -> bytes:
    return compile_profile(default_profile(), caps)


# -- the reference ---------------------------------------------------------------------------

class Reference:
    """What ``rules`` over ``default`` mean as libseccomp reads them (pyexec/seccomp_bpf.py):
    a foreign ABI is killed, and x32 numbers in a filter without x32 (not -1); a rule
    without conditions beats those with (the first such rule); of the others, the one
    whose conditions hold: ``decide`` gives the set of the actions that may come out
    (two that hold with different actions: libseccomp picks one)."""

    def __init__(self, rules, default, arches=(NATIVE,)) -> None:
        self.default, self.arches = default, arches
        self.naming = {}                  # (libseccomp arch, number) -> the rules naming it, in order
        for table in arches:
            for r in rules:
                for nr in {number(n, table) for n in r.names} - {-1}:
                    if nr >= 0 and r.action != default:
                        self.naming.setdefault((table, nr), []).append(r)

    def table(self, nr, arch):
        table = {lib.PX_AUDIT_ARCH: NATIVE, lib.SCMP_ARCH_X86: lib.SCMP_ARCH_X86}.get(arch)
        if X32 and table == NATIVE and nr >= X32 and nr != 0xFFFFFFFF:
            return lib.SCMP_ARCH_X32
        return table

    def rules_for(self, nr, arch):
        return self.naming.get((self.table(nr & 0xFFFFFFFF, arch), nr & 0xFFFFFFFF), [])

    def decide(self, nr, args=(), arch=None) -> set:
        arch = lib.PX_AUDIT_ARCH if arch is None else arch
        table = self.table(nr & 0xFFFFFFFF, arch)
        if table not in self.arches:
            return {KILL_PROCESS}
        # A 32-bit ABI's arguments are 32 bits, and libseccomp compares that much.
        width = 0xFFFFFFFF if table == lib.SCMP_ARCH_X86 else U64
        args = [a & width for a in args] + [0] * (6 - len(args))
        naming = self.rules_for(nr, arch)
        unconditional = [r.action for r in naming if not r.conds]
        if unconditional:
            return {unconditional[0]}
        return {r.action for r in naming if all(REFERENCE[c.op](args[c.index], c.value & width, c.value_two & width)
                                                for c in r.conds)} or {self.default}


def near(c) -> set:
    """Argument values on the boundaries of condition ``c``."""
    values = {c.value + d for d in (-1, 0, 1)} | {c.value ^ 1 << 32, c.value ^ 1 << 63}
    if c.op == "SCMP_CMP_MASKED_EQ":
        outside = ~c.value & U64
        values |= {c.value_two, c.value_two | outside, c.value_two ^ (c.value & -c.value),
                   c.value_two ^ (c.value & -c.value) << 32 & U64}
    return {v & U64 for v in values}


def argument_vectors(conds, rng, randomly=300):
    if not conds:
        return [[0] * 6, [U64] * 6]
    pools = {i: {0, 1, 0xFFFFFFFF, 1 << 32, U64} for i in range(6)}
    for c in conds:
        pools[c.index] |= near(c)
    vectors = [[0] * 6]
    for c in conds:                        # each boundary alone, then at random
        for value in sorted(pools[c.index]):
            vectors.append([value if i == c.index else 0 for i in range(6)])
    ordered = {i: sorted(pool) for i, pool in pools.items()}
    vectors += [[rng.choice(ordered[i]) for i in range(6)] for _ in range(randomly)]
    return vectors


def numbers_to_check():
    top = max(ALL_NUMBERS)
    extra = {1000, 4095, 4096, 0xFFFF, 0x3FFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF}
    if X32:
        extra |= {X32, X32 | 1, X32 | GETPPID, 2 * X32 - 1, 3 * X32}
    return list(range(top + 3)) + sorted(extra)


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
    # load). libseccomp's binary tree (optimization level 2) takes about 14 here, the
    # header (arch, x32, -1) included; a list of the 80 denied calls took up to 90.
    for caps in (DEFAULT_CAPABILITIES, (), ALL_CAPS):
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


PIVOT = (1 << 32) + 5
HAND_MADE = {
    "a plain rule beats conditions": profile(
        rule("getppid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_LT", 10)]),
        rule(["getcwd", "getppid"], errnoRet=5),
        rule("getppid", errnoRet=6),
        default="SCMP_ACT_KILL_PROCESS"),
    "every op, one call in many rules": profile(
        *[rule(["getppid", "gettid"] if k % 2 else "getppid", errnoRet=10 + k, args=[arg(k % 6, op, PIVOT, 5)])
          for k, op in enumerate(sorted(REFERENCE))],
        rule(["gettid", "getppid"], "SCMP_ACT_TRAP",
             args=[arg(0, "SCMP_CMP_GE", 1 << 32), arg(3, "SCMP_CMP_MASKED_EQ", 0xF0F000F0F0, 0x10)]),
        rule("getppid", "SCMP_ACT_LOG", args=[arg(2, "SCMP_CMP_GT", 100), arg(2, "SCMP_CMP_LT", 5)]),  # OR
        rule("getppid", "SCMP_ACT_ALLOW", args=[arg(4, "SCMP_CMP_NE", 0), arg(5, "SCMP_CMP_LE", 1 << 40)]),
        rule(["getpid"], "SCMP_ACT_KILL_THREAD"),
        default="SCMP_ACT_ERRNO", defaultErrnoRet=errno.ENOSYS),
    "runs of EQ values": profile(
        *[rule("personality", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", v)])
          for v in (0, 8, 1 << 32, (1 << 32) + 8, U64, 5, 8)],
        rule("personality", errnoRet=9, args=[arg(0, "SCMP_CMP_EQ", 7)]),
        *[rule("personality", "SCMP_ACT_ALLOW", args=[arg(1, "SCMP_CMP_EQ", v)]) for v in (3, 4 << 32)],
        rule("personality", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 0x98), arg(1, "SCMP_CMP_EQ", 1)]),
        default="SCMP_ACT_ERRNO", defaultErrnoRet=1),
    "masks": profile(
        rule("getpid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_MASKED_EQ", 0, 0)]),           # always holds
        # valueTwo outside the mask: libseccomp masks it too, so these hold for a low byte 0.
        rule("getuid", errnoRet=2, args=[arg(1, "SCMP_CMP_MASKED_EQ", 0xFF, 0x100)]),
        rule("getresuid", errnoRet=6, args=[arg(1, "SCMP_CMP_MASKED_EQ", 0xFF, 1 << 32)]),
        rule("getgid", errnoRet=3, args=[arg(2, "SCMP_CMP_MASKED_EQ", U64, 1 << 40)]),          # whole value
        rule("geteuid", errnoRet=4, args=[arg(3, "SCMP_CMP_MASKED_EQ", 0xFFFF << 32, 7 << 32)]),  # high half
        rule("getegid", errnoRet=5, args=[arg(4, "SCMP_CMP_MASKED_EQ", 0xFFFF << 32, 0)]),
        default="SCMP_ACT_KILL_THREAD"),
    "kill by default": profile(
        rule([NAMES[n] for n in ALL_NUMBERS[:40]], "SCMP_ACT_ALLOW"),
        rule("clone", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_MASKED_EQ", 0x10000000, 0)]),
        default="SCMP_ACT_KILL_PROCESS"),
    "empty": profile(),
    "runs of neighbours": profile(
        rule([NAMES[n] for n in ALL_NUMBERS[10:30] if n % 3], errnoRet=1),
        rule([NAMES[n] for n in ALL_NUMBERS[20:40]], errnoRet=2),
        rule([NAMES[n] for n in ALL_NUMBERS[35:45]], "SCMP_ACT_ALLOW", args=[arg(1, "SCMP_CMP_GT", 9)]),
        rule([NAMES[n] for n in ALL_NUMBERS[40:50]], errnoRet=1),
        default="SCMP_ACT_TRAP"),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_hand_made_profiles_decide_like_their_rules(name):
    check_against_rules(HAND_MADE[name], randomly=100)
