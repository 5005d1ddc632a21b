"""The default profile's compiler: rules tried in order in, a classic BPF tree out.

Every profile is compiled by libseccomp (pyexec/seccomp_bpf.py) but pyexec's
default one, whose filter every launch loads: this tree loads in ~2/3 of the
time of libseccomp's program for it (52 vs 75 us, 75 vs 217 instructions),
because it reads rules in order ("these personality values, else EPERM"),
which libseccomp cannot: its program needs 33 denials to say the same
(pyexec/seccomp_default.py). tests/test_seccomp_differential.py shows that
both decide the same, for the default profile and the suite's others.

Syscall numbers are the build's headers' (``syscall_number``); opcodes,
SECCOMP_RET_* values, the offsets of struct seccomp_data, the native
AUDIT_ARCH and the x32 bit come from the cffi module.

What a program decides: a foreign ``seccomp_data.arch`` (say the i386 ABI on
x86_64) kills the process, and so does, on x86_64, a number from the x32 bit
up (but -1, which the kernel answers with ENOSYS), as in libseccomp's
programs: rules are written for native numbers only, so foreign ABIs do not
run at all. For any other number the rules naming it are tried in order: the
first whose argument conditions all hold decides (one without conditions
always does), and the default action when none does.

The program, in order:

1. Load the arch, kill a foreign one, load the number.
2. A binary search on the number. Each number goes to its first rule: a RET
   when that has no conditions, else that rule's checks. Runs of consecutive
   numbers that go to one place are one range (so is all from the x32 bit up),
   and a balanced tree of ``JGE`` (``JEQ`` for a lone number between two runs
   of one place) finds the range in about log2(ranges) instructions. Why a
   tree: when a filter is loaded the kernel runs it for every syscall number
   of the native and the compat ABI (seccomp_cache_prepare, to learn the
   numbers it always allows), so that cost is numbers x instructions per
   number: a linear list of rules made it ~100 us per task.
3. The checks of each rule with conditions, once: 64-bit values compared as
   two 32-bit halves; when they hold, the rule's RET; when they fail, where
   each of its numbers goes next (the next rule naming it, or the default's
   RET), through a search like the one above over its numbers when they do
   not all go to the same place.
4. The RETs, one per action.

A place only one jump goes to sits right there (clone3's ENOSYS and the
checks of personality(2) in the tree where their ranges end). The others come
after the tree, as jumps go forward only: the RETs only the tree goes to, the
checks in profile order (checks only go on to later rules), the RETs that
checks go to.

Jumps go forward only and jt/jf reach 255 instructions; the assembler reaches
a farther target through a ``JA`` (32-bit offset) right after the jump, which
the jumps before it share when it is in their reach.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .native import lib
from .seccomp_bpf import INSN, Cond

_MAX_JUMP = 255                        # jt and jf are 8 bits

_LD_ABS = lib.BPF_LD | lib.BPF_W | lib.BPF_ABS
_AND = lib.BPF_ALU | lib.BPF_AND | lib.BPF_K
_JA = lib.BPF_JMP | lib.BPF_JA
_JEQ = lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K
_JGT, _JGE = lib.BPF_JMP | lib.BPF_JGT | lib.BPF_K, lib.BPF_JMP | lib.BPF_JGE | lib.BPF_K
_JSET = lib.BPF_JMP | lib.BPF_JSET | lib.BPF_K
_RET = lib.BPF_RET | lib.BPF_K
_JUMPS = frozenset({_JA, _JEQ, _JGT, _JGE, _JSET})

_LITTLE = sys.byteorder == "little"
_NR, _ARCH, _ARGS = lib.PX_SECCOMP_NR_OFFSET, lib.PX_SECCOMP_ARCH_OFFSET, lib.PX_SECCOMP_ARGS_OFFSET
_NUMBERS = 1 << 32                     # seccomp_data.nr is 32 bits
_X32 = lib.PX_X32_SYSCALL_BIT           # 0 where there is no x32 ABI


@dataclass(frozen=True)
class Rule:
    """Syscall numbers, argument conditions (all must hold) and the SECCOMP_RET_* value."""
    numbers: Tuple[int, ...]
    conds: Tuple[Cond, ...]
    ret: int


def syscall_number(name: str) -> Optional[int]:
    """This architecture's number of syscall ``name`` (the build's headers); None when it has none."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        return None
    value = getattr(lib, "__NR_" + name, None)
    return None if value is None else int(value)


# -- the assembler ---------------------------------------------------------------------

Target = Union[int, str]  # the n-th next instruction at emission, or a label


class Asm:
    """Emits instructions whose jumps may name labels (forward only); finish()
    reaches a jt/jf target more than 255 instructions away through a JA hop."""

    def __init__(self) -> None:
        self.insns: List[List[Any]] = []   # [code, jt, jf, k]; jt, jf: index of the target or a label
        self.labels: Dict[str, int] = {}
        self._n = 0

    def new_label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def op(self, code: int, k: int = 0, jt: Target = 0, jf: Target = 0) -> None:
        # Relative offsets become indexes now: hops inserted later must not shift them.
        here = len(self.insns)
        jt, jf = (here + 1 + t if isinstance(t, int) else t for t in (jt, jf))
        self.insns.append([code, jt, jf, k & 0xFFFFFFFF])

    def jump(self, target: str) -> None:
        """JA: its 32-bit offset (k) is worked out like the jt of a conditional jump."""
        self.op(_JA, 0, target, target)

    def load(self, offset: int) -> None:
        self.op(_LD_ABS, offset)

    def ret(self, value: int) -> None:
        self.op(_RET, value)

    def finish(self) -> bytes:
        # Laid out last instruction first: whatever a jump goes to is placed by
        # then, so its distance is known, and a hop placed for one jump serves
        # the jumps before it that reach it too.
        after = [0] * len(self.insns)      # how many instructions end up after each one
        nearest: Dict[int, int] = {}       # target -> ``after`` of the last hop placed to it
        out: List[bytes] = []              # the program, last instruction first

        def closest(d: int) -> int:        # ``after`` of d or of its hop, whichever is nearer
            return max(after[d], nearest.get(d, -1))

        for i in reversed(range(len(self.insns))):
            code, jt, jf, k = self.insns[i]
            if code not in _JUMPS:
                jt = jf = 0
            else:
                targets = [t if isinstance(t, int) else self.labels[t] for t in (jt, jf)]
                assert all(i < d < len(self.insns) for d in targets), "a jump goes back or past the end"
                if code == _JA:
                    jt, jf, k = 0, 0, len(out) - after[targets[0]] - 1
                else:
                    far: List[int] = []
                    while True:          # each hop placed moves the jump one further away
                        more = [d for d in dict.fromkeys(targets)
                                if d not in far and len(out) + len(far) - closest(d) - 1 > _MAX_JUMP]
                        if not more:
                            break
                        far += more
                    for d in far:        # the hops go right after the jump
                        nearest[d] = len(out)
                        out.append(INSN.pack(_JA, 0, 0, len(out) - after[d] - 1))
                    jt, jf = (len(out) - closest(d) - 1 for d in targets)
            after[i] = len(out)
            out.append(INSN.pack(code, jt, jf, k))
        return b"".join(reversed(out))


# -- argument checks -------------------------------------------------------------------

def _halves(index: int) -> Tuple[int, int]:
    """Offsets of (high, low) 32-bit half of args[index] in seccomp_data."""
    base = _ARGS + 8 * index
    return (base + 4, base) if _LITTLE else (base, base + 4)


def _emit_cond(asm: Asm, c: Cond, ok: str, fail: str) -> None:
    """Jumps to ``ok`` when the condition holds, to ``fail`` when not."""
    hi_off, lo_off = _halves(c.index)
    hi, lo = c.value >> 32, c.value & 0xFFFFFFFF
    if c.op == "SCMP_CMP_MASKED_EQ":   # (arg & value) == (valueTwo & value), as libseccomp, half by half
        two = c.value_two & c.value
        halves = [(offset, mask, want)
                  for offset, mask, want in ((hi_off, hi, two >> 32), (lo_off, lo, two & 0xFFFFFFFF))
                  if mask or want]      # x & 0 == 0 holds: clone's flags need no high half
        if not halves:
            asm.jump(ok)
        for n, (offset, mask, want) in enumerate(halves):
            asm.load(offset)
            if mask != 0xFFFFFFFF:
                asm.op(_AND, mask)
            asm.op(_JEQ, want, ok if n == len(halves) - 1 else 0, fail)
        return
    asm.load(hi_off)
    if c.op == "SCMP_CMP_EQ":
        asm.op(_JEQ, hi, 0, fail)
        asm.load(lo_off)
        asm.op(_JEQ, lo, ok, fail)
    elif c.op == "SCMP_CMP_NE":
        asm.op(_JEQ, hi, 0, ok)
        asm.load(lo_off)
        asm.op(_JEQ, lo, fail, ok)
    else:
        # Unsigned: the high halves decide unless they are equal, then the low ones.
        greater = c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
        asm.op(_JGT, hi, ok if greater else fail, 0)
        asm.op(_JEQ, hi, 0, fail if greater else ok)
        asm.load(lo_off)
        # GT: lo > v; GE: lo >= v; LT = not GE; LE = not GT.
        jump = _JGT if c.op in ("SCMP_CMP_GT", "SCMP_CMP_LE") else _JGE
        asm.op(jump, lo, *((ok, fail) if greater else (fail, ok)))


def _emit_one_of(asm: Asm, index: int, values: List[int], ok: str, fail: str) -> None:
    """Jumps to ``ok`` when args[index] is one of ``values``, to ``fail`` when not:
    each high half loaded and tested once for all the low halves that go with it."""
    by_high: Dict[int, Dict[int, None]] = {}
    for value in values:
        by_high.setdefault(value >> 32, {})[value & 0xFFFFFFFF] = None
    hi_off, lo_off = _halves(index)
    for n, (hi, lows) in enumerate(by_high.items()):
        other = fail if n == len(by_high) - 1 else asm.new_label()
        asm.load(hi_off)
        asm.op(_JEQ, hi, 0, other)
        asm.load(lo_off)
        for m, lo in enumerate(lows):            # no other high half can match: fail
            asm.op(_JEQ, lo, ok, fail if m == len(lows) - 1 else 0)
        if other != fail:
            asm.label(other)


# -- where numbers go ------------------------------------------------------------------

# A place numbers go: ("ret", SECCOMP_RET_* value), or ("rule", index) for the
# checks of a rule with argument conditions.
Key = Tuple[str, int]
# A run of numbers that go to one place: first and last number, and the place.
# Numbers between two runs (in a search after a rule's checks) are none that
# can get there: any place will do for them.
Span = Tuple[int, int, Key]


def _chains(rules: List[Rule], default: int) -> Dict[int, List[Key]]:
    """Where each number some rule names goes in turn: the rules with checks that
    name it, up to the first without checks (a RET), or else the default's RET."""
    chains: Dict[int, List[Key]] = {}
    for index, rule in enumerate(rules):
        step = ("rule", index) if rule.conds else ("ret", rule.ret)
        for nr in dict.fromkeys(rule.numbers):
            chain = chains.setdefault(nr, [])
            if not chain or chain[-1][0] == "rule":    # rules after a RET never run
                chain.append(step)
    for chain in chains.values():
        if chain[-1][0] == "rule":
            chain.append(("ret", default))
        # Checks whose rule has the action taken when they fail decide nothing
        # (so clone with CAP_SYS_ADMIN is a plain allow, in a range with its neighbours).
        while len(chain) > 1 and rules[chain[-2][1]].ret == chain[-1][1]:
            del chain[-2]
    return chains


def _runs(places: Dict[int, Key]) -> List[Span]:
    """The runs of ``places`` (number -> place) that go to one place, ascending."""
    spans: List[Span] = []
    for nr in sorted(places):
        if spans and spans[-1][2] == places[nr]:
            spans[-1] = (spans[-1][0], nr, places[nr])
        else:
            spans.append((nr, nr, places[nr]))
    return spans


def _all_numbers(first: Dict[int, Key], default: Key, kill: Key) -> List[Span]:
    """The runs of every 32-bit number: ``first`` where given, ``default`` elsewhere,
    but ``kill`` from the x32 bit up, all but -1 (the kernel answers it ENOSYS)."""
    starts: List[Tuple[int, Key]] = []
    following = 0
    for nr in sorted(first):
        if nr > following:
            starts.append((following, default))
        starts.append((nr, first[nr]))
        following = nr + 1
    starts.append((following, default))
    if _X32:
        assert following <= _X32, "a native syscall number with the x32 bit"
        # From the x32 bit up is one range of the search like any other: one test
        # fewer per number than a check of the bit in front of it.
        starts += [(_X32, kill), (_NUMBERS - 1, default)]
    merged: List[Tuple[int, Key]] = []
    for start, key in starts:
        if not merged or merged[-1][1] != key:
            merged.append((start, key))
    ends = [start - 1 for start, _ in merged[1:]] + [_NUMBERS - 1]
    return [(start, end, key) for (start, key), end in zip(merged, ends)]


# -- the program -----------------------------------------------------------------------

def _emit_search(asm: Asm, spans: List[Span], place: Callable[[Key], Tuple[str, bool]],
                 emit: Callable[[Key], None]) -> None:
    """The tree that takes the number in the accumulator to the place of its span.
    ``place(key)`` is its label and whether its code goes right here (``emit``)."""
    def branch(lo: int, hi: int) -> Tuple[str, bool]:
        """The label of the code for spans[lo:hi], and whether it goes in the tree."""
        return place(spans[lo][2]) if hi - lo == 1 else (asm.new_label(), True)

    def decide(lo: int, hi: int) -> None:
        if hi - lo == 1:
            emit(spans[lo][2])
            return
        if hi - lo == 3 and spans[lo][2] == spans[lo + 2][2] and spans[lo + 1][0] == spans[lo + 1][1]:
            # One number amid one place: a single test instead of two levels.
            around, here = place(spans[lo][2])
            assert not here, "a place two spans go to is shared"
            parts = [(lo + 1, lo + 2)]
            branches = [branch(lo + 1, lo + 2)]
            asm.op(_JEQ, spans[lo + 1][0], branches[0][0], around)
        else:
            mid = (lo + hi) // 2
            parts = [(lo, mid), (mid, hi)]
            branches = [branch(lo, mid), branch(mid, hi)]
            asm.op(_JGE, spans[mid][0], branches[1][0], branches[0][0])
        for (sub_lo, sub_hi), (label, here) in zip(parts, branches):
            if here:
                asm.label(label)
                decide(sub_lo, sub_hi)

    decide(0, len(spans))


def _single_eq(conds: Tuple[Cond, ...]) -> Optional[int]:
    """The argument index when the conditions are one SCMP_CMP_EQ."""
    return conds[0].index if len(conds) == 1 and conds[0].op == "SCMP_CMP_EQ" else None


class _Program:
    """Lays out the program (see the module doc): ``jumps`` counts the jumps to
    each place, which says whether it goes right after its one jump or is shared."""

    def __init__(self, rules: List[Rule], default: int) -> None:
        self.asm = Asm()
        self.rules = rules
        self.kill: Key = ("ret", lib.SECCOMP_RET_KILL_PROCESS)
        chains = _chains(rules, default)
        self.spans = _all_numbers({nr: chain[0] for nr, chain in chains.items()}, ("ret", default), self.kill)
        # Where each number goes when the checks of a rule fail: the search after
        # them is over the numbers that get there only.
        after: Dict[int, Dict[int, Key]] = {}
        for nr, chain in chains.items():
            for step, following in zip(chain, chain[1:]):
                after.setdefault(step[1], {})[nr] = following
        self.after = {index: _runs(places) for index, places in after.items()}
        from_checks = Counter(key for spans in self.after.values() for _, _, key in spans)
        from_checks.update(("ret", rules[index].ret) for index in self.after)
        self.from_checks = set(from_checks)
        self.jumps = from_checks + Counter([self.kill] + [key for _, _, key in self.spans])
        self.labels: Dict[Key, str] = {}

    def shared(self, key: Key) -> str:
        if key not in self.labels:
            self.labels[key] = self.asm.new_label()
        return self.labels[key]

    def place(self, key: Key) -> Tuple[str, bool]:
        """The label to jump to ``key`` by, and whether its code goes right after the jump."""
        return (self.asm.new_label(), True) if self.jumps[key] == 1 else (self.shared(key), False)

    def emit(self, key: Key) -> None:
        if key[0] == "ret":
            self.asm.ret(key[1])
        else:
            self.emit_checks(key[1])

    def emit_checks(self, index: int) -> None:
        """A rule's checks: to its action's RET when they hold, on to where each
        number goes next when they do not. They load arguments over the syscall
        number: the search after them loads it again."""
        asm, rule = self.asm, self.rules[index]
        group = [index]
        # Rules with one action, each one EQ on the same argument, that the same
        # numbers reach one after the other, are one "is one of" (Docker's personality values).
        while _single_eq(rule.conds) is not None and len(self.after[group[-1]]) == 1:
            following = self.after[group[-1]][0][2]
            if following[0] != "rule" or self.jumps[following] != 1:
                break
            other = self.rules[following[1]]
            if other.ret != rule.ret or _single_eq(other.conds) != _single_eq(rule.conds):
                break
            group.append(following[1])
        passed, passed_here = self.place(("ret", rule.ret))
        spans = self.after[group[-1]]
        fail, fail_here = self.place(spans[0][2]) if len(spans) == 1 else (asm.new_label(), True)
        if len(group) > 1:
            _emit_one_of(asm, rule.conds[0].index, [self.rules[i].conds[0].value for i in group], passed, fail)
        else:
            for c in rule.conds[:-1]:
                next_cond = asm.new_label()
                _emit_cond(asm, c, next_cond, fail)
                asm.label(next_cond)
            _emit_cond(asm, rule.conds[-1], passed, fail)
        if passed_here:
            asm.label(passed)
            asm.ret(rule.ret)
        if fail_here:
            asm.label(fail)
            if len(spans) == 1:
                self.emit(spans[0][2])
            else:
                asm.load(_NR)
                _emit_search(asm, spans, self.place, self.emit)

    def assemble(self) -> bytes:
        asm = self.asm
        # Foreign ABIs are killed: the rules are for native numbers only.
        asm.load(_ARCH)
        asm.op(_JEQ, lib.PX_AUDIT_ARCH, 0, self.shared(self.kill))
        asm.load(_NR)
        _emit_search(asm, self.spans, self.place, self.emit)
        # The RETs only the tree jumps to next to it; the others after the checks.
        for key in [k for k in self.labels if k[0] == "ret" and k not in self.from_checks]:
            asm.label(self.labels[key])
            self.emit(key)
        done = set()
        while True:                     # checks placed here add only later rules
            waiting = sorted(k for k in self.labels if k[0] == "rule" and k not in done)
            if not waiting:
                break
            done.add(waiting[0])
            asm.label(self.labels[waiting[0]])
            self.emit(waiting[0])
        for key in [k for k in self.labels if k[0] == "ret" and k in self.from_checks]:
            asm.label(self.labels[key])
            self.emit(key)
        return asm.finish()


def assemble(rules: List[Rule], default: int) -> bytes:
    """The program (header, search, checks, RETs) deciding like ``rules`` in order, then ``default``."""
    return _Program(rules, default).assemble()
