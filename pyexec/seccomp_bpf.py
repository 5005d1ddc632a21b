"""Classic BPF programs of seccomp filters, compiled by libseccomp.

pyexec/seccomp.py reads profiles into ``Rule``s; this module hands them to
libseccomp, the compiler runc, crun and Podman use, and returns the program
it exports (``SpawnPlan.seccomp_filter``): for every profile but the default
one, whose filter pyexec/seccomp_tree.py compiles. It runs in the parent: libseccomp
allocates, so the child only loads the program (csrc/seccomp.c). Actions,
comparison ops and architecture tokens are libseccomp's (``SCMP_*`` through
the shim's cffi module, pyexec/_build_shim.py).

What a program decides is what libseccomp makes of the rules, as in runc:

- Rules have no order. A syscall's rule without conditions wins over its
  rules with conditions (the first such rule over later ones); rules with
  conditions are merged into a tree over the arguments, and two of them with
  different actions on the same conditions are refused (ConfigError).
- A rule with the filter's default action changes nothing; libseccomp
  refuses it, so it is skipped.
- MASKED_EQ compares ``arg & value`` with ``valueTwo & value``.
- libseccomp 2.5.4 gets one case wrong: two rules of one syscall that
  compare one argument with the same 64-bit value, one by GE and one by GT
  (or LE and LT), both act as GE (LE) once their other conditions hold
  (tests/test_seccomp.py pins it, strict xfail). runc's filters share it;
  the default profile has no such pair.
- Syscall names are looked up in libseccomp's tables, per architecture of
  the filter: a name it does not know is skipped (debug log), a name an
  architecture lacks is simply absent from that architecture's rules.
- The native architecture is always in the filter, others only when listed.
  A syscall of an ABI the filter lacks kills the process (the i386 ABI on
  x86_64 through ``int $0x80``, x32 numbers there), but -1, which the kernel
  answers with ENOSYS (tracers use it to skip a call), goes to the rules.

Layout: libseccomp's binary tree over the syscall numbers of each
architecture (SCMP_FLTATR_CTL_OPTIMIZE 2). Why: when a filter is loaded the
kernel runs it for every syscall number of the native and the compat ABI to
learn which ones it always allows (seccomp_cache_prepare), so the load costs
numbers x instructions per number; a linear list made that ~100 us per task.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import struct
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from .native import ffi, lib

__all__ = ["MAX_INSNS", "INSN", "OPS", "Cond", "Rule", "CompileError", "instructions", "arch_token",
           "compile_rules"]

log = logging.getLogger(__name__)

MAX_INSNS = int(lib.BPF_MAXINSNS)
INSN = struct.Struct("=HBBI")          # struct px_bpf_insn / struct sock_filter

# The comparison ops of profiles, by their libseccomp names.
OPS = {name: int(getattr(lib, name)) for name in (
    "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ")}


@dataclass(frozen=True)
class Cond:
    """args[index] <op> value (an OPS name; MASKED_EQ: args[index] & value == value_two & value,
    libseccomp masks both sides)."""
    index: int
    op: str
    value: int
    value_two: int


@dataclass(frozen=True)
class Rule:
    """Syscall names, argument conditions (all must hold), the libseccomp action
    (SCMP_ACT_*, with its errno or trace data) and where the profile says so."""
    names: Tuple[str, ...]
    conds: Tuple[Cond, ...]
    action: int
    where: str = ""


class CompileError(Exception):
    """libseccomp refused part of a filter; ``where`` is the profile's JSON path."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def instructions(program: bytes) -> List[Tuple[int, int, int, int]]:
    """(code, jt, jf, k) of every instruction of a compiled program."""
    return [(code, jt, jf, k) for code, jt, jf, k in INSN.iter_unpack(program)]


def arch_token(name: str) -> int:
    """libseccomp's token of an architecture named as in profiles (``SCMP_ARCH_X86_64``);
    0 when it knows no such architecture."""
    if not re.fullmatch(r"SCMP_ARCH_[A-Z0-9_]+", name):
        return 0
    return int(lib.seccomp_arch_resolve_name(name[len("SCMP_ARCH_"):].lower().encode()))


def _check(rc: int, where: str, what: str) -> None:
    if rc == -errno.EEXIST:
        raise CompileError(where, f"{what} conflicts with another rule for it (the same conditions, "
                                  "another action)")
    if rc < 0:
        raise CompileError(where, f"libseccomp refuses {what}: {os.strerror(-rc)}")


def _add(ctx: object, rule: Rule) -> None:
    args = ffi.new("struct scmp_arg_cmp[]", max(1, len(rule.conds)))
    for i, c in enumerate(rule.conds):
        args[i].arg, args[i].op = c.index, OPS[c.op]
        args[i].datum_a, args[i].datum_b = c.value, c.value_two
    for name in rule.names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == lib.__NR_SCMP_ERROR:
            log.debug("seccomp %s: libseccomp knows no syscall %r, skipped", rule.where, name)
            continue
        _check(lib.seccomp_rule_add_array(ctx, rule.action, nr, len(rule.conds), args), rule.where,
               f"the rule for {name}")


def _export(ctx: object) -> bytes:
    fd = os.memfd_create("pyexec-seccomp")
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "seccomp", "the filter")
        size = os.lseek(fd, 0, os.SEEK_CUR)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def compile_rules(rules: Sequence[Rule], default: int, arches: Sequence[Tuple[int, str]] = ()) -> bytes:
    """The program of ``rules`` over ``default`` (both libseccomp actions) for the
    native architecture and ``arches`` ((token, JSON path) pairs); CompileError
    names the rule libseccomp refuses."""
    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise CompileError("seccomp.defaultAction", f"libseccomp refuses {default:#x} as the default action")
    try:
        _check(lib.seccomp_attr_set(ctx, lib.SCMP_FLTATR_ACT_BADARCH, lib.SCMP_ACT_KILL_PROCESS), "seccomp",
               "the bad-arch action")
        _check(lib.seccomp_attr_set(ctx, lib.SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp", "the binary tree")
        for token, where in arches:
            rc = lib.seccomp_arch_add(ctx, token)
            if rc != -errno.EEXIST:        # the native one is there already
                _check(rc, where, "this architecture")
        for rule in rules:
            if rule.action != default:     # libseccomp refuses those: they change nothing
                _add(ctx, rule)
        return _export(ctx)
    finally:
        lib.seccomp_release(ctx)
