"""Seccomp: the BPF generator (checked by a small BPF interpreter, support/bpf.py),
the default profile and JSON profiles, in real container tasks (root only).

The interpreter runs a compiled program over a hand-made struct seccomp_data,
so argument comparisons, the arch / x32 checks and rule order are checked for
every combination, and the kernel tests show the same programs load and act.
The programs search the syscall number in a tree; ``decide`` says what the
parsed rules, tried in order, decide, and the programs must agree with it
for every number and for arguments on every condition's boundaries.
"""
from __future__ import annotations

import errno
import json
import math
import os
import platform
import random
import signal
import sys

import pytest

from pyexec import Isolation
from pyexec.caps import DEFAULT_CAPABILITIES, parse_capabilities
from pyexec.errors import ConfigError
from pyexec.native import lib
from pyexec.seccomp import (MAX_INSNS, compile_profile, default_profile, filter_for, instructions,
                            load_profile, syscall_number)
from pyexec.seccomp import _rules as parse_rules  # the rules the programs are made of
from support.bpf import JA, JEQ, JGE, LD, RET, check_jumps, emulate, execute

PY = "/usr/bin/python3"
needs_python = pytest.mark.skipif(not os.path.exists(PY), reason="needs /usr/bin/python3 (seen through /usr)")

ALLOW = lib.SECCOMP_RET_ALLOW
KILL_PROCESS = lib.SECCOMP_RET_KILL_PROCESS
HEADER = 3                                      # load arch, check it, load nr
X32 = lib.PX_X32_SYSCALL_BIT
GETPPID = syscall_number("getppid")
GETCWD = syscall_number("getcwd")
U64 = (1 << 64) - 1
ALL_NUMBERS = sorted({int(getattr(lib, n)) for n in dir(lib) if n.startswith("__NR_")})


def errno_ret(err: int) -> int:
    return lib.SECCOMP_RET_ERRNO | err


def profile(*rules, default="SCMP_ACT_ALLOW", **extra) -> dict:
    return {"defaultAction": default, "syscalls": list(rules), **extra}


def rule(names, action="SCMP_ACT_ERRNO", **fields) -> dict:
    return {"names": [names] if isinstance(names, str) else list(names), "action": action, **fields}


def arg(index, op, value, value_two=0) -> dict:
    return {"index": index, "op": op, "value": value, "valueTwo": value_two}


# -- the compiler ----------------------------------------------------------------------------

def test_offsets_are_the_kernel_layout():
    assert (lib.PX_SECCOMP_NR_OFFSET, lib.PX_SECCOMP_ARCH_OFFSET, lib.PX_SECCOMP_ARGS_OFFSET) == (0, 4, 16)


def test_tiny_profile_is_header_search_and_one_ret_per_action():
    program = compile_profile(profile(rule("getcwd", errnoRet=1)))
    insns = instructions(program)
    jf = insns[1][2]
    assert insns[:HEADER] == [(LD, 0, 0, lib.PX_SECCOMP_ARCH_OFFSET), (JEQ, 0, jf, lib.PX_AUDIT_ARCH),
                              (LD, 0, 0, lib.PX_SECCOMP_NR_OFFSET)]
    assert insns[2 + jf] == (RET, 0, 0, KILL_PROCESS)                              # the foreign arch
    assert {code for code, _, _, _ in insns[HEADER:]} == {JEQ, JGE, RET}
    rets = [k for code, _, _, k in insns if code == RET]
    assert sorted(rets) == sorted([KILL_PROCESS, errno_ret(1), ALLOW])              # each once
    assert (JEQ, 0, GETCWD) in [(c, jt, k) for c, jt, _, k in insns]                # one number: one test
    assert emulate(program, GETCWD) == errno_ret(1)
    assert emulate(program, GETPPID) == ALLOW
    if X32:                                         # 0..x32, getcwd, the x32 halves and -1
        assert len(insns) == HEADER + 5 + 3


def test_foreign_arch_is_killed():
    program = compile_profile(profile())
    insns = instructions(program)
    assert insns[0] == (lib.BPF_LD | lib.BPF_W | lib.BPF_ABS, 0, 0, lib.PX_SECCOMP_ARCH_OFFSET)
    assert insns[1][0] == lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K and insns[1][3] == lib.PX_AUDIT_ARCH
    assert emulate(program, GETPPID, arch=0x40000003) == KILL_PROCESS          # AUDIT_ARCH_I386
    assert emulate(program, GETPPID) == ALLOW


@pytest.mark.skipif(not X32, reason="no x32 ABI on this architecture")
def test_x32_numbers_are_killed_but_minus_one_is_not():
    program = compile_profile(profile(rule("getcwd")))
    for nr in (X32 | GETPPID, X32 | GETCWD, X32, 2 * X32 - 1, 3 * X32, 0xFFFFFFFE):
        assert emulate(program, nr) == KILL_PROCESS, hex(nr)
    assert emulate(program, -1) == ALLOW                  # the kernel answers it with ENOSYS
    for nr in (X32 - 1, 2 * X32, 3 * X32 - 1):             # no x32 bit: the default
        assert emulate(program, nr) == ALLOW, hex(nr)
    killing = compile_profile(profile(rule("getcwd", "SCMP_ACT_ALLOW"), default="SCMP_ACT_KILL_PROCESS"))
    assert emulate(killing, -1) == KILL_PROCESS and emulate(killing, GETCWD) == ALLOW


VALUES = [0, 1, 5, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 32) + 5, 0x1FFFFFFFF, 2 << 32,
          1 << 63, U64 - 1, U64]
REFERENCE = {
    "SCMP_CMP_EQ": lambda a, v, v2: a == v,
    "SCMP_CMP_NE": lambda a, v, v2: a != v,
    "SCMP_CMP_LT": lambda a, v, v2: a < v,
    "SCMP_CMP_LE": lambda a, v, v2: a <= v,
    "SCMP_CMP_GT": lambda a, v, v2: a > v,
    "SCMP_CMP_GE": lambda a, v, v2: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, v, v2: a & v == v2,
}


@pytest.mark.parametrize("op", sorted(REFERENCE))
@pytest.mark.parametrize("index", [0, 5])
def test_64_bit_comparisons_against_python(op, index):
    for value in VALUES:
        value_two = value & 0xF0000000F if op == "SCMP_CMP_MASKED_EQ" else 0
        program = compile_profile(profile(rule("getppid", errnoRet=7, args=[arg(index, op, value, value_two)])))
        for a in VALUES + [value_two]:
            args = [0] * 6
            args[index] = a
            want = errno_ret(7) if REFERENCE[op](a, value, value_two) else ALLOW
            assert emulate(program, GETPPID, args) == want, (op, hex(a), hex(value))


def test_conditions_on_different_args_are_anded():
    program = compile_profile(profile(rule("getppid", args=[arg(0, "SCMP_CMP_EQ", 1), arg(1, "SCMP_CMP_GT", 1 << 40)])))
    assert emulate(program, GETPPID, [1, (1 << 40) + 1]) == errno_ret(errno.EPERM)
    assert emulate(program, GETPPID, [1, 1 << 40]) == ALLOW
    assert emulate(program, GETPPID, [2, 1 << 41]) == ALLOW


def test_one_index_twice_means_either_condition():
    # runc's reading: such conditions become separate rules (OR).
    program = compile_profile(profile(rule("getppid", args=[arg(0, "SCMP_CMP_EQ", 3), arg(0, "SCMP_CMP_EQ", 1 << 33)])))
    assert emulate(program, GETPPID, [3]) == errno_ret(errno.EPERM)
    assert emulate(program, GETPPID, [1 << 33]) == errno_ret(errno.EPERM)
    assert emulate(program, GETPPID, [4]) == ALLOW


def test_first_matching_rule_wins_and_failed_args_fall_through():
    program = compile_profile(profile(
        rule("getppid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_LT", 10)]),
        rule(["getcwd", "getppid"], errnoRet=5),
        rule("getppid", errnoRet=6),
        default="SCMP_ACT_KILL_PROCESS"))
    assert emulate(program, GETPPID, [3]) == ALLOW
    assert emulate(program, GETPPID, [1 << 32]) == errno_ret(5)
    assert emulate(program, GETCWD) == errno_ret(5)
    assert emulate(program, syscall_number("getpid")) == KILL_PROCESS


def test_actions_and_errno_defaults():
    names = ["getpid", "getppid", "getuid", "getgid", "geteuid", "getegid", "gettid"]
    actions = ["SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
               "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_ERRNO"]
    program = compile_profile(profile(*(rule(n, a) for n, a in zip(names, actions)),
                                      default="SCMP_ACT_ERRNO", defaultErrnoRet=errno.ENOSYS))
    want = [ALLOW, lib.SECCOMP_RET_KILL_THREAD, lib.SECCOMP_RET_KILL_THREAD, KILL_PROCESS,
            lib.SECCOMP_RET_TRAP, lib.SECCOMP_RET_LOG, errno_ret(errno.EPERM)]
    assert [emulate(program, syscall_number(n)) for n in names] == want
    assert emulate(program, GETCWD) == errno_ret(errno.ENOSYS)
    traced = compile_profile(profile(rule("getpid", "SCMP_ACT_TRACE", errnoRet=42)))
    assert emulate(traced, syscall_number("getpid")) == lib.SECCOMP_RET_TRACE | 42


def test_names_this_arch_lacks_are_skipped():
    program = compile_profile(profile(rule(["no_such_call", "getcwd", "_llseek"]), rule(["only_elsewhere"])))
    assert program == compile_profile(profile(rule("getcwd")))
    assert emulate(program, GETCWD) == errno_ret(errno.EPERM)


def test_jumps_stay_short_in_a_300_rule_profile():
    rules = [rule("getppid", errnoRet=i + 1, args=[arg(0, "SCMP_CMP_EQ", i * 0x100000001)]) for i in range(300)]
    program = compile_profile(profile(*rules))
    insns = instructions(program)
    assert len(insns) > 1000                              # far more than one 8-bit jump reaches
    # Every jump (8-bit jt/jf, or a JA hop's 32-bit k) lands inside the program.
    for pos, (code, jt, jf, k) in enumerate(insns):
        if code & 0x07 == lib.BPF_JMP:
            reach = k if code == lib.BPF_JMP | lib.BPF_JA else max(jt, jf)
            assert pos + 1 + reach < len(insns), (pos, code, jt, jf, k)
    for i in (0, 1, 150, 299):
        assert emulate(program, GETPPID, [i * 0x100000001]) == errno_ret(i + 1)
    assert emulate(program, GETPPID, [7]) == ALLOW


def test_a_rule_with_every_syscall():
    names = [n[len("__NR_"):] for n in dir(lib) if n.startswith("__NR_")]
    program = compile_profile(profile(rule(names, "SCMP_ACT_ALLOW"), default="SCMP_ACT_ERRNO"))
    assert len(names) > 255
    for name in names:
        assert emulate(program, syscall_number(name)) == ALLOW
    assert emulate(program, 4000) == errno_ret(errno.EPERM)
    assert len(instructions(program)) < 64               # a few ranges (the holes in the numbering)


# -- Docker's format ------------------------------------------------------------------------

GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def test_docker_includes_and_excludes():
    prof = profile(
        rule("getpid", includes={"caps": ["CAP_SYS_ADMIN"]}),
        rule("getppid", excludes={"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}),
        rule("getuid", includes={"arches": [GOARCH]}),
        rule("getgid", excludes={"arches": [GOARCH]}),
        rule("geteuid", includes={"minKernel": "3.0"}),
        rule("getegid", includes={"minKernel": "999.0"}),
        archMap=[{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}])
    denied = errno_ret(errno.EPERM)

    def outcome(caps):
        program = compile_profile(prof, caps)
        return [emulate(program, syscall_number(n)) == denied
                for n in ("getpid", "getppid", "getuid", "getgid", "geteuid", "getegid")]
    assert outcome(DEFAULT_CAPABILITIES) == [False, True, True, False, True, False]
    assert outcome(["CAP_SYS_ADMIN"]) == [True, False, True, False, True, False]
    assert outcome(["CAP_BPF"]) == [False, False, True, False, True, False]


# -- the default profile ---------------------------------------------------------------------

def default_program(caps=DEFAULT_CAPABILITIES) -> bytes:
    return compile_profile(default_profile(), caps)


NEW_NS = lib.CLONE_NEWUSER
SIGCHLD = signal.SIGCHLD


def test_default_profile_denies_escapes_and_allows_the_rest():
    program = default_program()
    eperm = errno_ret(errno.EPERM)
    for name in ("kexec_load", "open_by_handle_at", "init_module", "finit_module", "bpf", "perf_event_open",
                 "keyctl", "add_key", "ptrace", "mount", "umount2", "unshare", "setns", "pivot_root",
                 "fsopen", "open_tree", "move_mount", "io_uring_setup", "userfaultfd", "reboot", "swapon",
                 "settimeofday", "clock_settime", "syslog", "iopl", "mbind", "acct"):
        if syscall_number(name) is not None:
            assert emulate(program, syscall_number(name)) == eperm, name
    for name in ("read", "write", "openat", "execve", "mmap", "getcwd", "chroot", "setuid", "capset",
                 "prctl", "close_range", "rt_sigaction", "wait4", "clock_gettime", "adjtimex"):
        assert emulate(program, syscall_number(name)) == ALLOW, name
    clone = syscall_number("clone")
    assert emulate(program, clone, [SIGCHLD]) == ALLOW                                  # fork
    assert emulate(program, clone, [0x3D0F00]) == ALLOW                                 # pthread_create
    for flag in ("CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWCGROUP"):
        assert emulate(program, clone, [getattr(lib, flag) | SIGCHLD]) == eperm, flag
    assert emulate(program, syscall_number("clone3")) == errno_ret(errno.ENOSYS)
    personality = syscall_number("personality")
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert emulate(program, personality, [persona]) == ALLOW
    assert emulate(program, personality, [0x0040000]) == eperm                          # ADDR_NO_RANDOMIZE


def test_default_profile_follows_the_capabilities():
    admin = default_program(DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN",))
    for name in ("mount", "unshare", "setns", "bpf", "perf_event_open", "clone3", "syslog"):
        assert emulate(admin, syscall_number(name)) == ALLOW, name
    assert emulate(admin, syscall_number("clone"), [NEW_NS]) == ALLOW
    assert emulate(admin, syscall_number("kexec_load")) == errno_ret(errno.EPERM)       # never
    assert emulate(admin, syscall_number("keyctl")) == errno_ret(errno.EPERM)
    ptrace = default_program(("CAP_SYS_PTRACE",))
    assert emulate(ptrace, syscall_number("ptrace")) == ALLOW
    assert emulate(ptrace, syscall_number("mount")) == errno_ret(errno.EPERM)
    no_chroot = default_program(())
    assert emulate(no_chroot, syscall_number("chroot")) == errno_ret(errno.EPERM)


def test_filter_for():
    assert filter_for(Isolation(seccomp=None), DEFAULT_CAPABILITIES) is None
    assert filter_for(Isolation(), DEFAULT_CAPABILITIES) == default_program()


# -- the search decides like the rules, tried in order ---------------------------------------

NAMES = {int(getattr(lib, n)): n[len("__NR_"):] for n in dir(lib) if n.startswith("__NR_")}


def decide(rules, default, nr, args=(), arch=None) -> int:
    """The reference: what the rules decide tried one after the other, as the linear
    program of earlier versions did (foreign arch and x32 numbers killed, -1 not;
    then the first rule that names the number and whose conditions all hold)."""
    if arch is not None and arch != lib.PX_AUDIT_ARCH:
        return KILL_PROCESS
    nr &= 0xFFFFFFFF
    if X32 and nr & X32 and nr != 0xFFFFFFFF:
        return KILL_PROCESS
    args = list(args) + [0] * (6 - len(args))
    for r in rules:
        if nr in r.numbers and all(REFERENCE[c.op](args[c.index], c.value, c.value_two) for c in r.conds):
            return r.ret
    return default


def numbers_to_check(rules):
    top = max(ALL_NUMBERS + [n for r in rules for n in r.numbers])
    extra = {1000, 4095, 4096, 0xFFFF, 0x3FFFFFFF, 0x7FFFFFFF, 0x80000000, 0xBFFFFFFF, 0xC0000000,
             0xFFFFFFFE, 0xFFFFFFFF}
    if X32:
        extra |= {X32, X32 | 1, X32 | GETPPID, 2 * X32 - 1, 3 * X32 - 1, 3 * X32}
    return list(range(top + 3)) + sorted(extra)


def near(c) -> set:
    """Argument values on the boundaries of condition ``c``."""
    values = {c.value + d for d in (-1, 0, 1)} | {c.value ^ 1 << 32, c.value ^ 1 << 63}
    if c.op == "SCMP_CMP_MASKED_EQ":
        outside = ~c.value & U64
        values |= {c.value_two, c.value_two | outside, c.value_two ^ (c.value & -c.value),
                   c.value_two ^ (c.value & -c.value) << 32 & U64}
    return {v & U64 for v in values}


def satisfying(r):
    """Arguments for which all of rule ``r``'s conditions hold (None when there are none)."""
    args = [0] * 6
    for c in r.conds:
        value = {"SCMP_CMP_EQ": c.value, "SCMP_CMP_NE": c.value ^ 1, "SCMP_CMP_LE": c.value,
                 "SCMP_CMP_GE": c.value, "SCMP_CMP_MASKED_EQ": c.value_two,
                 "SCMP_CMP_LT": c.value - 1 if c.value else None,
                 "SCMP_CMP_GT": c.value + 1 if c.value < U64 else None}[c.op]
        if value is None or not REFERENCE[c.op](value, c.value, c.value_two):
            return None
        args[c.index] = value
    return args


def argument_vectors(rules, nr, rng, randomly=300):
    naming = [r for r in rules if nr in r.numbers]
    conds = [c for r in naming for c in r.conds]
    if not conds:
        return [[0] * 6, [U64] * 6]
    common = {0, 1, 0xFFFFFFFF, 1 << 32, U64}
    pools = {i: set(common) for i in range(6)}
    for c in conds:
        pools[c.index] |= near(c)
    vectors = [[0] * 6]
    # Each rule's conditions holding, then each of them moved over its boundaries
    # while the others still hold.
    for r in naming:
        base = satisfying(r)
        if base is not None:
            vectors.append(base)
            for c in r.conds:
                for value in sorted(near(c) | common):
                    vectors.append(base[:c.index] + [value] + base[c.index + 1:])
    ordered = {i: sorted(pool) for i, pool in pools.items()}
    vectors += [[rng.choice(ordered[i]) for i in range(6)] for _ in range(randomly)]
    return vectors


def check_against_rules(prof, caps=(), randomly=300) -> bytes:
    program = compile_profile(prof, caps)
    check_jumps(program)
    rules, default = parse_rules(prof, frozenset(c.upper() for c in caps), "test")
    rng = random.Random(7)
    for nr in numbers_to_check(rules):
        for args in argument_vectors(rules, nr, rng, randomly):
            want = decide(rules, default, nr, args)
            assert emulate(program, nr, args) == want, (nr, NAMES.get(nr), [hex(a) for a in args])
    for arch in (0x40000003, 0xC00000B7, 0):              # i386, aarch64, none
        for nr in (0, GETPPID, 0xFFFFFFFF):
            assert emulate(program, nr, arch=arch) == KILL_PROCESS
    return program


ALL_CAPS = parse_capabilities(["ALL"])


@pytest.mark.parametrize("caps", [DEFAULT_CAPABILITIES, (), DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN",),
                                  ("CAP_SYS_PTRACE", "CAP_SYS_NICE"), ALL_CAPS],
                         ids=["docker", "none", "sys_admin", "ptrace_nice", "all"])
def test_the_default_profile_decides_like_its_rules(caps):
    check_against_rules(default_profile(), caps)


PIVOT = (1 << 32) + 5
HAND_MADE = {
    "first match wins": profile(
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
        rule(["getppid", "getpid"], "SCMP_ACT_KILL_THREAD"),
        rule("getppid", errnoRet=99),                                         # never reached
        default="SCMP_ACT_ERRNO", defaultErrnoRet=errno.ENOSYS),
    "runs of EQ values": profile(
        *[rule("personality", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", v)])
          for v in (0, 8, 1 << 32, (1 << 32) + 8, U64, 5, 8)],
        rule("personality", errnoRet=9, args=[arg(0, "SCMP_CMP_EQ", 7)]),
        *[rule("personality", "SCMP_ACT_ALLOW", args=[arg(1, "SCMP_CMP_EQ", v)]) for v in (3, 4 << 32)],
        rule("personality", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 0x99)]),
        rule("personality", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 0x98), arg(1, "SCMP_CMP_EQ", 1)]),
        rule("personality", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 0x97)]),
        rule("personality", errnoRet=1)),
    "a check that numbers leave for different places": profile(
        rule(["getpid", "getuid", "getgid"], "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 1)]),
        rule("getpid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 2)]),
        rule("getuid", errnoRet=3),
        rule(["getgid", "getpid"], "SCMP_ACT_TRAP", args=[arg(1, "SCMP_CMP_NE", 2)]),
        default="SCMP_ACT_ERRNO", defaultErrnoRet=4),
    "masks": profile(
        rule("getpid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_MASKED_EQ", 0, 0)]),           # always holds
        rule("getuid", errnoRet=2, args=[arg(1, "SCMP_CMP_MASKED_EQ", 0xFF, 0x100)]),           # never holds
        rule("getuid", errnoRet=6, args=[arg(1, "SCMP_CMP_MASKED_EQ", 0xFF, 1 << 32)]),         # nor this
        rule("getuid", errnoRet=7, args=[arg(2, "SCMP_CMP_MASKED_EQ", 0xFF << 32, 1)]),         # nor this
        rule("getgid", errnoRet=3, args=[arg(2, "SCMP_CMP_MASKED_EQ", U64, 1 << 40)]),          # whole value
        rule("geteuid", errnoRet=4, args=[arg(3, "SCMP_CMP_MASKED_EQ", 0xFFFF << 32, 7 << 32)]),  # high half
        rule("getegid", errnoRet=5, args=[arg(4, "SCMP_CMP_MASKED_EQ", 0xFFFF << 32, 0)]),
        rule(["getpid", "getuid", "getgid", "geteuid", "getegid"], "SCMP_ACT_KILL_THREAD")),
    "checks that change nothing": profile(
        rule("getppid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_EQ", 1)]),
        rule("getpid", errnoRet=1, args=[arg(0, "SCMP_CMP_EQ", 1)]), rule("getpid", errnoRet=1)),
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
    check_against_rules(HAND_MADE[name])


def scattered_profile():
    """Every other syscall denied, each with an errno of its own (every fifth first
    for some arguments): far more ranges than an 8-bit jump reaches across."""
    rules = []
    for i, nr in enumerate(ALL_NUMBERS[::2]):
        if i % 5 == 0:
            rules.append(rule(NAMES[nr], errnoRet=500 + i, args=[arg(1, "SCMP_CMP_EQ", i << 32 | i)]))
        rules.append(rule(NAMES[nr], errnoRet=1 + i))
    return profile(*rules)


def test_jumps_beyond_255_go_through_shared_hops():
    checks = [rule("getppid", errnoRet=i + 1, args=[arg(0, "SCMP_CMP_EQ", i * 0x100000001)]) for i in range(100)]
    levels = math.ceil(math.log2(2 * len(ALL_NUMBERS) + 8))       # ranges: every other number, x32
    for prof in (scattered_profile(), profile(*checks, *[rule(NAMES[nr]) for nr in ALL_NUMBERS[::2]])):
        program = check_against_rules(prof)
        codes = [code for code, _, _, _ in instructions(program)]
        assert len(codes) > 600 and JA in codes
        assert codes.count(JA) <= 16                   # shared, not one per far jump
        # At most a hop per level of the tree: still logarithmic.
        assert max(execute(program, nr)[2] for nr in numbers_to_check([])) <= HEADER + 2 * levels + 1


def test_overlapping_rules_with_checks_stay_as_small_as_a_list_of_them():
    # Each number's rules with checks differ: checks are not copied per number, a
    # rule's checks are emitted once and a failed one searches where its numbers go next.
    rng = random.Random(5)
    rules = [rule([NAMES[nr] for nr in sorted(rng.sample(ALL_NUMBERS, 150))], errnoRet=1 + i % 3,
                  args=[arg(i % 6, "SCMP_CMP_EQ", i)]) for i in range(8)]
    program = check_against_rules(profile(*rules), randomly=40)
    assert len(instructions(program)) < 8 * (150 + 7)     # a JEQ per name and the checks, rule after rule


def test_the_default_filter_finds_a_number_in_a_few_instructions():
    # What makes loading fast: the kernel runs the filter for every syscall number of
    # the native and the compat ABI to fill its action cache. The default profile has
    # about 60 ranges of numbers: its search is 6 tests deep (balanced, one level of
    # slack here); rule after rule, it took more than 70 instructions for some numbers.
    for caps in (DEFAULT_CAPABILITIES, (), ALL_CAPS):
        program = default_program(caps)
        steps = [execute(program, nr)[2] for nr in numbers_to_check([])]
        assert max(steps) <= HEADER + 7 + 1, caps
        assert sum(steps) / len(steps) <= HEADER + 6 + 1, caps
        assert len(instructions(program)) < 100


# -- bad profiles ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad, reason", [
    ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown action 'SCMP_ACT_NOPE'"),
    (profile(rule("getcwd", "SCMP_ACT_WHATEVER")), r"syscalls\[0\]: unknown action"),
    (profile(rule("getcwd", args=[arg(0, "SCMP_CMP_ABOUT", 1)])), "unknown comparison op 'SCMP_CMP_ABOUT'"),
    (profile(rule("getcwd", args=[arg(6, "SCMP_CMP_EQ", 1)])), "argument index 6 is not 0..5"),
    (profile(rule("getcwd", args=[arg(0, "SCMP_CMP_EQ", -1)])), "is not an unsigned 64-bit integer"),
    (profile(rule("getcwd", errnoRet=70000)), "errnoRet 70000 is not an errno number"),
    (profile(rule("getcwd", "SCMP_ACT_NOTIFY")), "SCMP_ACT_NOTIFY needs a seccomp agent"),
    (profile({"action": "SCMP_ACT_ALLOW"}), "names must be a non-empty list"),
    (profile(rule("getcwd", includes={"minKernel": "six"})), "minKernel 'six'"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_profiles_name_the_problem(bad, reason):
    with pytest.raises(ConfigError, match=reason) as info:
        compile_profile(bad, source="/p.json")
    assert info.value.field == "seccomp" and info.value.value == "/p.json"


def test_too_many_instructions():
    rules = [rule("getppid", args=[arg(i, "SCMP_CMP_GT", n) for i in range(6)]) for n in range(200)]
    with pytest.raises(ConfigError, match=rf"compiles to \d+ BPF instructions, more than the kernel's limit of {MAX_INSNS}"):
        compile_profile(profile(*rules))


def test_profile_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_profile(str(path))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_profile(str(tmp_path / "missing.json"))
    path.write_text(json.dumps(profile(rule("getcwd"))))
    assert load_profile(str(path))["syscalls"][0]["names"] == ["getcwd"]


# -- in real container tasks -----------------------------------------------------------------

def py(script: str, *args: str):
    return [PY, "-c", script, *args]


SYSCALL = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return r, ctypes.get_errno()
"""


def write_profile(tmp_path, prof, name="profile.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(prof))
    return str(path)


@pytest.mark.needs_root
@needs_python
def test_default_profile_blocks_the_escape_syscalls(run):
    names = ["open_by_handle_at", "init_module", "finit_module", "kexec_load", "bpf", "keyctl", "add_key",
             "perf_event_open", "ptrace", "setns", "unshare", "mount", "io_uring_setup"]
    numbers = {n: syscall_number(n) for n in names}
    script = SYSCALL + "print(json.dumps({n: call(nr, 0, 0, 0, 0, 0) for n, nr in json.loads(sys.argv[1]).items()}))"
    result, out, err = run(py(script, json.dumps(numbers)))
    assert result.exit_code == 0, err
    assert json.loads(out) == {n: [-1, errno.EPERM] for n in names}


@pytest.mark.needs_root
def test_default_profile_blocks_namespaces_and_mounts(run):
    result, out, err = run(["sh", "-c", "unshare -U true; echo U=$?; unshare -Ur unshare -m true; echo Ur=$?; "
                            "unshare -m true; echo m=$?; mount -t tmpfs x /tmp; echo mount=$?"])
    assert out.split() == ["U=1", "Ur=1", "m=1", "mount=32"], err
    assert err.count("unshare failed: Operation not permitted") == 3


@pytest.mark.needs_root
def test_without_seccomp_a_user_namespace_regains_capabilities(run):
    # The escape the default profile is there for: new user namespace, then full caps in it.
    result, out, err = run(["sh", "-c", "unshare -Ur unshare -m true; echo Ur=$?"],
                           isolation=Isolation(seccomp=None))
    assert out.split() == ["Ur=0"], err


@pytest.mark.needs_root
@needs_python
def test_plain_programs_threads_and_fork_work(run):
    script = ("import os, threading; t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
              "pid = os.fork()\n"
              "if pid == 0: os._exit(7)\n"
              "print('child', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    result, out, err = run(["sh", "-c", f"ls / >/dev/null && cat /proc/self/status >/dev/null && date >/dev/null "
                                        f"&& {PY} -c \"$0\"", script])
    assert result.exit_code == 0, err
    assert out.split("\n")[:2] == ["thread", "child 7"]


@pytest.mark.needs_root
@needs_python
@pytest.mark.parametrize("seccomp, want", [("default", errno.ENOSYS), (None, errno.EINVAL)])
def test_clone3_says_enosys_so_glibc_falls_back(run, seccomp, want):
    script = SYSCALL + f"print(*call({syscall_number('clone3')}, 0, 0))"
    result, out, err = run(py(script), isolation=Isolation(seccomp=seccomp))
    assert out.split() == ["-1", str(want)], err


@pytest.mark.needs_root
@needs_python
def test_default_filter_also_without_no_new_privs(run):
    # Loaded before the capabilities drop then: the kernel wants CAP_SYS_ADMIN without no_new_privs.
    script = SYSCALL + f"print(*call({syscall_number('keyctl')}, 0, 0))"
    for user in (None, "nobody"):
        result, out, err = run(py(script), user=user, isolation=Isolation(no_new_privs=False))
        assert out.split() == ["-1", str(errno.EPERM)], err


@pytest.mark.needs_root
@needs_python
def test_an_oci_profile_file(run, tmp_path):
    path = write_profile(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                    "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
    result, out, err = run(py("import os; os.getcwd()"), isolation=Isolation(seccomp=path))
    assert result.exit_code == 1 and "PermissionError: [Errno 1]" in err
    result, out, err = run(["sh", "-c", "unshare -U true && echo unshared"], isolation=Isolation(seccomp=path))
    assert out.strip() == "unshared"                      # the file replaces the default profile


@pytest.mark.needs_root
@needs_python
def test_a_docker_profile_file_with_includes_caps(run, tmp_path):
    path = write_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": [n[len("__NR_"):] for n in dir(lib) if n.startswith("__NR_") and n != "__NR_getcwd"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_NICE"]}},
        ]})
    probe = py("import os; print(os.getcwd())")
    result, out, err = run(probe, isolation=Isolation(seccomp=path))
    assert result.exit_code == 1 and "PermissionError: [Errno 1]" in err
    result, out, err = run(probe, isolation=Isolation(seccomp=path, capabilities=DEFAULT_CAPABILITIES + ("CAP_SYS_NICE",)))
    assert (result.exit_code, out) == (0, "/\n"), err


@pytest.mark.needs_root
@needs_python
def test_64_bit_comparisons_in_the_kernel(run, tmp_path):
    # getppid ignores its arguments, and the filter sees them: arg1 picks the op, arg0 is compared.
    ops = sorted(REFERENCE)
    pivot, mask_want = (1 << 32) + 5, 5
    rules = [rule("getppid", errnoRet=100 + k, args=[arg(1, "SCMP_CMP_EQ", k), arg(0, op, pivot, mask_want)])
             for k, op in enumerate(ops)]
    path = write_profile(tmp_path, profile(*rules))
    script = SYSCALL + (f"print(json.dumps([[call({GETPPID}, a, k)[1] for a in json.loads(sys.argv[1])] "
                        f"for k in range({len(ops)})]))")
    result, out, err = run(py(script, json.dumps(VALUES)), isolation=Isolation(seccomp=path))
    assert result.exit_code == 0, err
    got = json.loads(out)
    for k, op in enumerate(ops):
        want = [100 + k if REFERENCE[op](a, pivot, mask_want) else 0 for a in VALUES]
        assert got[k] == want, op


@pytest.mark.needs_root
@needs_python
def test_a_300_rule_profile_loads_and_works(run, tmp_path):
    rules = [rule("getppid", errnoRet=i + 1, args=[arg(0, "SCMP_CMP_EQ", i * 0x100000001)]) for i in range(300)]
    path = write_profile(tmp_path, profile(*rules, rule("getppid", errnoRet=errno.EACCES)))
    values = [i * 0x100000001 for i in (0, 1, 150, 299)] + [7]
    script = SYSCALL + f"print(*[call({GETPPID}, a)[1] for a in {values}])"
    result, out, err = run(py(script), isolation=Isolation(seccomp=path))
    assert out.split() == ["1", "2", "151", "300", str(errno.EACCES)], err


@pytest.mark.needs_root
@needs_python
def test_a_profile_with_hops_loads_and_works(run, tmp_path):
    # Hundreds of ranges and JA hops, in the kernel. The rules hold only for a sixth
    # argument no call of the task passes, so the task runs; the probes pass it and
    # get their errno without the call being made.
    magic = 0x5EC0_0000_0000_0001
    probes = [syscall_number(n) for n in ("getppid", "getpid", "getuid", "getgid", "gettid", "getcwd")]
    numbers = sorted(set(ALL_NUMBERS[::2]) | set(probes))
    prof = profile(*[rule(NAMES[nr], errnoRet=1 + nr % 100, args=[arg(5, "SCMP_CMP_EQ", magic)]) for nr in numbers])
    assert JA in [code for code, _, _, _ in instructions(compile_profile(prof))]
    script = SYSCALL + (f"print(*[call(nr, 0, 0, 0, 0, 0, {magic})[1] for nr in {probes}]); "
                        f"print(call({GETPPID})[0] > 0)")
    result, out, err = run(py(script), isolation=Isolation(seccomp=write_profile(tmp_path, prof)))
    assert out.split() == [str(1 + nr % 100) for nr in probes] + ["True"], err


@pytest.mark.needs_root
@needs_python
@pytest.mark.skipif(not lib.PX_X32_SYSCALL_BIT, reason="no x32 ABI on this architecture")
def test_x32_syscall_numbers_kill_the_task(run):
    script = SYSCALL + f"print(*call(-1)); sys.stdout.flush(); call({lib.PX_X32_SYSCALL_BIT | GETPPID})"
    result, out, err = run(py(script), isolation=Isolation(rlimits={"core": (0, 0)}))
    assert out.split() == ["-1", str(errno.ENOSYS)]
    assert result.signal == signal.SIGSYS


@pytest.mark.needs_root
@needs_python
@pytest.mark.skipif(platform.machine() != "x86_64", reason="i386 int 0x80 is x86_64's foreign ABI")
def test_the_i386_abi_kills_the_task(run):
    # mov eax, 20 (i386 getpid); int 0x80; ret — from an executable page.
    script = ("import ctypes, mmap, sys\n"
              "page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
              "page.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))\n"
              "addr = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
              "print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)()); sys.stdout.flush()\n")
    result, out, err = run(py(script), isolation=Isolation(seccomp=None))
    assert result.exit_code == 0 and out.strip() == "2", err          # the task's pid, through the i386 ABI
    result, out, err = run(py(script), isolation=Isolation(rlimits={"core": (0, 0)}))
    assert result.signal == signal.SIGSYS and out == ""


@pytest.mark.needs_root
@needs_python
def test_kill_process_action(run, tmp_path):
    path = write_profile(tmp_path, profile(rule("getppid", "SCMP_ACT_KILL_PROCESS")))
    result, out, err = run(py("import os; print('before', flush=True); os.getppid(); print('after')"),
                           isolation=Isolation(seccomp=path, rlimits={"core": (0, 0)}))
    assert out == "before\n" and result.signal == signal.SIGSYS


@pytest.mark.needs_root
@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not JSON"),
    (json.dumps(profile(rule("getcwd", "SCMP_ACT_BOGUS"))), "unknown action 'SCMP_ACT_BOGUS'"),
    (json.dumps(profile(rule("getcwd", args=[arg(0, "SCMP_CMP_SOMETIMES", 1)]))), "unknown comparison op"),
    (json.dumps(profile(*[rule("getppid", args=[arg(i, "SCMP_CMP_LT", n) for i in range(6)]) for n in range(200)])),
     "more than the kernel's limit"),
])
def test_bad_profile_files_fail_before_anything_exists(run, tmp_path, task_dir, content, reason):
    path = write_profile(tmp_path, {}, "bad.json")
    with open(path, "w") as f:
        f.write(content)
    with pytest.raises(ConfigError, match=reason) as info:
        run(["true"], isolation=Isolation(seccomp=path))
    assert info.value.field == "seccomp" and info.value.value == path
    assert list(task_dir.iterdir()) == []
    assert not any(p.name.endswith((".stdout", ".stderr")) for p in tmp_path.iterdir())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
