"""A classic-BPF interpreter, as far as seccomp filters go, for tests/test_seccomp.py.

Owns running a compiled seccomp program (the bytes of its ``struct
sock_filter`` array) over a hand-made ``struct seccomp_data`` the way the
kernel does, and the checks the kernel makes before it takes a program. It
decodes the bytes itself rather than through pyexec.seccomp_bpf, so the
generator is checked against something it does not share; only the
constants (opcodes, offsets, the native audit arch) come from the kernel
headers, through the shim's cffi module.
"""
from __future__ import annotations

import functools
import struct
from typing import List, NamedTuple, Optional, Sequence, Tuple

from pyexec.native import lib

Insn = Tuple[int, int, int, int]            # (code, jt, jf, k)

SOCK_FILTER = struct.Struct("=HBBI")         # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
SECCOMP_DATA = struct.Struct("=IIQ6Q")       # struct seccomp_data: nr, arch, instruction_pointer, args[6]
MAX_INSNS = int(lib.BPF_MAXINSNS)            # the kernel refuses longer programs

# The instructions a seccomp program is made of.
LD = lib.BPF_LD | lib.BPF_W | lib.BPF_ABS     # load a 32-bit word of seccomp_data
AND = lib.BPF_ALU | lib.BPF_AND | lib.BPF_K
JA = lib.BPF_JMP | lib.BPF_JA                 # k: a 32-bit forward offset
JEQ = lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K
JGT = lib.BPF_JMP | lib.BPF_JGT | lib.BPF_K
JGE = lib.BPF_JMP | lib.BPF_JGE | lib.BPF_K
JSET = lib.BPF_JMP | lib.BPF_JSET | lib.BPF_K
RET = lib.BPF_RET | lib.BPF_K
OPCODES = frozenset({LD, AND, JA, JEQ, JGT, JGE, JSET, RET})


class Run(NamedTuple):
    """What running a program for one syscall gave."""

    ret: int                                # the filter's return value (SECCOMP_RET_* | data)
    executed: int                           # instructions executed
    before_args: int                        # those executed before the first argument load (or all):
                                            # what the kernel runs per number to fill its action cache


@functools.lru_cache(maxsize=8)
def decode(program: bytes) -> List[Insn]:
    """The (code, jt, jf, k) instructions of ``program``: a length the kernel takes, ending in a RET."""
    assert len(program) % SOCK_FILTER.size == 0, len(program)
    insns: List[Insn] = [(code, jt, jf, k) for code, jt, jf, k in SOCK_FILTER.iter_unpack(program)]
    assert 0 < len(insns) <= MAX_INSNS
    assert insns[-1][0] == RET
    return insns


def execute(program: bytes, nr: int, args: Sequence[int] = (), arch: Optional[int] = None) -> Run:
    """What the kernel's filter would return for this syscall (checked like the kernel
    does), with the instructions it took. ``arch`` defaults to the native AUDIT_ARCH."""
    full = list(args) + [0] * (6 - len(args))
    data = SECCOMP_DATA.pack(nr & 0xFFFFFFFF, lib.PX_AUDIT_ARCH if arch is None else arch, 0, *full)
    insns = decode(program)
    pc, acc, executed, before_args = 0, 0, 0, None
    while True:
        code, jt, jf, k = insns[pc]
        executed += 1
        if code == LD:
            assert k % 4 == 0 and k + 4 <= len(data)
            if k >= lib.PX_SECCOMP_ARGS_OFFSET and before_args is None:
                before_args = executed - 1
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == AND:
            acc &= k
            pc += 1
        elif code == JA:
            pc += 1 + k
        elif code & 0x07 == lib.BPF_JMP:
            test = {lib.BPF_JEQ: acc == k, lib.BPF_JGT: acc > k, lib.BPF_JGE: acc >= k,
                    lib.BPF_JSET: acc & k != 0}[code & 0xF0]
            pc += 1 + (jt if test else jf)
        elif code == RET:
            return Run(k, executed, executed if before_args is None else before_args)
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")
        assert pc < len(insns), "jumped past the end"


def emulate(program: bytes, nr: int, args: Sequence[int] = (), arch: Optional[int] = None) -> int:
    """Just the filter's return value for this syscall."""
    return execute(program, nr, args, arch).ret


def check_jumps(program: bytes) -> None:
    """What the kernel checks before it takes a program (bpf_check_classic,
    seccomp_check_filter): known instructions only, every jump lands inside."""
    insns = decode(program)
    for pc, (code, jt, jf, k) in enumerate(insns):
        assert code in OPCODES, pc
        if code == JA:
            assert pc + 1 + k < len(insns), pc
        elif code & 0x07 == lib.BPF_JMP:
            assert pc + 1 + max(jt, jf) < len(insns), pc
