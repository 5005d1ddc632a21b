"""The default filter's tree (pyexec/seccomp_tree.py: what launches load)
against libseccomp's programs, decision by decision, both run by the BPF
interpreter (support/bpf.py) over every syscall number and arguments on the
boundaries of every condition:

- the default profile, for several capability sets: the tree compiles its
  rules in order (seccomp_default.ordered_rules), libseccomp its OCI form
  (default_profile), and the two must decide the same everywhere;
- every other profile of the suite (support/profiles.py's, the kernel tests'):
  the tree compiles the parsed rules in the order libseccomp reads them (its
  refused rules dropped, plain rules before those with conditions), and the
  two must decide the same wherever that reading has one answer (Reference).
"""
from __future__ import annotations

import random

import pytest

from pyexec import Isolation, seccomp_tree
from pyexec.caps import DEFAULT_CAPABILITIES, parse_capabilities
from pyexec.native import lib
from pyexec.seccomp import _rules as parse_rules  # the rules both are compiled from
from pyexec.seccomp import compile_profile, default_profile, filter_for, syscall_number
from pyexec.seccomp_default import ordered_rules
from support.bpf import check_jumps, emulate
from support.profiles import (
    HAND_MADE,
    KILL_PROCESS,
    comparisons_profile,
    long_jumps_profile,
    number,
    profile,
    rule,
    three_hundred_rules,
)
from support.reference import Reference, argument_vectors, numbers_to_check

CAPS = {"docker": DEFAULT_CAPABILITIES, "none": (), "sys_admin": DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN",),
        "ptrace_nice": ("CAP_SYS_PTRACE", "CAP_SYS_NICE"), "all": parse_capabilities(["ALL"])}
FOREIGN = (0x40000003, 0xC00000B7, 0)                  # i386, aarch64, none
PERSONAS = (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)


def personality_values():
    rng = random.Random(11)
    values = {1 << b for b in range(64)} | {(1 << a) | (1 << b) for a in range(32) for b in range(32)}
    values |= {0xFFFFFFFF ^ (1 << b) for b in range(32)} | {v | 1 << 32 for v in PERSONAS} | set(PERSONAS)
    return sorted(values | {rng.getrandbits(32) for _ in range(500)})


def same_everywhere(tree, program, conds_of, randomly=60):
    rng = random.Random(5)
    for nr in numbers_to_check():
        for args in argument_vectors(conds_of(nr), rng, randomly):
            assert emulate(tree, nr, args) == emulate(program, nr, args), (nr, [hex(a) for a in args])
    for arch in FOREIGN:
        if arch != lib.PX_AUDIT_ARCH:
            for nr in (0, syscall_number("getppid"), 0xFFFFFFFF):
                assert emulate(tree, nr, arch=arch) == emulate(program, nr, arch=arch) == KILL_PROCESS


@pytest.mark.parametrize("caps", list(CAPS.values()), ids=list(CAPS))
def test_the_default_filter_decides_as_libseccomps_program(caps):
    caps = frozenset(caps)
    tree = filter_for(Isolation(), caps)
    assert tree == seccomp_tree.assemble(*ordered_rules(caps))
    check_jumps(tree)
    program = compile_profile(default_profile(), caps)
    ordered, _ = ordered_rules(caps)
    oci, _ = parse_rules(default_profile(), caps, "default")
    conds = {}
    for r in ordered:
        for nr in r.numbers:
            conds.setdefault(nr, []).extend(r.conds)
    for r in oci:
        for name in r.names:
            conds.setdefault(number(name), []).extend(r.conds)
    same_everywhere(tree, program, lambda nr: conds.get(nr, []))
    personality = syscall_number("personality")
    for value in personality_values():
        assert emulate(tree, personality, [value]) == emulate(program, personality, [value]), hex(value)


def tree_of(prof):
    """The tree of ``prof``'s rules in the order libseccomp reads them: the rules it
    refuses (the default's action) dropped, plain rules first (the first plain rule
    wins), then those with conditions; names numbered by libseccomp's tables."""
    rules, default = parse_rules(prof, frozenset(), "test")
    kept = [r for r in rules if r.action != default]
    tree_rules = []
    for r in [r for r in kept if not r.conds] + [r for r in kept if r.conds]:
        numbers = tuple(nr for nr in map(number, r.names) if nr >= 0)
        if numbers:
            tree_rules.append(seccomp_tree.Rule(numbers, r.conds, r.action))
    return seccomp_tree.assemble(tree_rules, default), Reference(rules, default)


SUITE = {**{f"hand-made: {name}": prof for name, prof in HAND_MADE.items()},
         "64-bit comparisons": comparisons_profile(), "300 rules": three_hundred_rules(),
         "long jumps": long_jumps_profile(), "empty": profile(),
         "one index twice": profile(rule("getppid", args=[{"index": 0, "op": "SCMP_CMP_EQ", "value": 3},
                                                          {"index": 0, "op": "SCMP_CMP_GT", "value": 1 << 40}]))}


@pytest.mark.parametrize("name", sorted(SUITE))
def test_the_suites_profiles_are_decided_the_same_by_both(name):
    prof = SUITE[name]
    tree, ref = tree_of(prof)
    program = compile_profile(prof)
    check_jumps(tree)
    rng = random.Random(9)
    compared = 0
    for nr in numbers_to_check():
        conds = [c for r in ref.rules_for(nr, lib.PX_AUDIT_ARCH) for c in r.conds]
        for args in argument_vectors(conds, rng, 40):
            if len(ref.decide(nr, args)) == 1:            # one answer: both must give it
                assert emulate(tree, nr, args) == emulate(program, nr, args), (nr, [hex(a) for a in args])
                compared += 1
    assert compared > len(numbers_to_check())
