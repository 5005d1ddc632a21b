"""The reading of seccomp rules that the tests compare programs with: what
parsed rules (pyexec.seccomp_bpf.Rule) mean as libseccomp, and so runc, reads
them, and the syscall numbers and arguments worth trying on a program."""
from __future__ import annotations

from pyexec.native import lib
from support.profiles import ALL_NUMBERS, KILL_PROCESS, NATIVE, REFERENCE, U64, X32, number

GETPPID = int(lib.__NR_getppid)


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


COMMON = {0, 1, 0xFFFFFFFF, 1 << 32, U64}


def argument_vectors(conds, rng, randomly=300):
    """Argument vectors for a syscall whose rules have ``conds``: each condition's
    boundary values alone (the other arguments 0), then ``randomly`` mixes of all
    the boundary values."""
    if not conds:
        return [[0] * 6, [U64] * 6]
    pools = {i: set(COMMON) for i in range(6)}
    for c in conds:
        pools[c.index] |= near(c)
    vectors = [[0] * 6]
    for c in conds:
        for value in sorted(near(c) | COMMON):
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
