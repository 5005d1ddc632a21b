"""Seccomp profiles for the tests (tests/test_seccomp*.py): small builders of
the JSON, Python's reading of each comparison op, the syscall numbers of this
machine (the headers') and of libseccomp's tables, and the script tasks use to
make raw syscalls and report what they got."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any, Callable, Dict, List

from pyexec.native import lib

U64 = (1 << 64) - 1
PY = "/usr/bin/python3"
ALLOW = lib.SECCOMP_RET_ALLOW
KILL_PROCESS = lib.SECCOMP_RET_KILL_PROCESS
X32 = lib.PX_X32_SYSCALL_BIT
NATIVE = int(lib.seccomp_arch_native())
ALL_NUMBERS = sorted({int(getattr(lib, n)) for n in dir(lib) if n.startswith("__NR_")})
NAMES = {int(getattr(lib, n)): n[len("__NR_"):] for n in dir(lib) if n.startswith("__NR_")}

# What each op means, for 64-bit argument a, value v and valueTwo v2. MASKED_EQ as
# libseccomp (and so runc) has it: valueTwo is masked too.
REFERENCE: Dict[str, Callable[[int, int, int], bool]] = {
    "SCMP_CMP_EQ": lambda a, v, v2: a == v,
    "SCMP_CMP_NE": lambda a, v, v2: a != v,
    "SCMP_CMP_LT": lambda a, v, v2: a < v,
    "SCMP_CMP_LE": lambda a, v, v2: a <= v,
    "SCMP_CMP_GT": lambda a, v, v2: a > v,
    "SCMP_CMP_GE": lambda a, v, v2: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, v, v2: a & v == v2 & v,
}
# Arguments on the edges of 32 and 64 bits.
VALUES = [0, 1, 5, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 32) + 5, 0x1FFFFFFFF, 2 << 32,
          1 << 63, U64 - 1, U64]


def profile(*rules: Dict[str, Any], default: str = "SCMP_ACT_ALLOW", **extra: Any) -> Dict[str, Any]:
    return {"defaultAction": default, "syscalls": list(rules), **extra}


def rule(names: Any, action: str = "SCMP_ACT_ERRNO", **fields: Any) -> Dict[str, Any]:
    return {"names": [names] if isinstance(names, str) else list(names), "action": action, **fields}


def arg(index: int, op: str, value: int, value_two: int = 0) -> Dict[str, Any]:
    return {"index": index, "op": op, "value": value, "valueTwo": value_two}


def write_profile(tmp_path: Path, prof: Dict[str, Any], name: str = "profile.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(prof))
    return str(path)


def py(script: str, *args: str) -> List[str]:
    return [PY, "-c", script, *args]


# call(nr, *args) -> (return value, errno), through libc's syscall(2).
SYSCALL = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return r, ctypes.get_errno()
"""


def errno_ret(err: int) -> int:
    return int(lib.SECCOMP_RET_ERRNO | err)


def number(name: str, arch: int = NATIVE) -> int:
    """libseccomp's number of ``name`` on ``arch`` (negative: none there)."""
    return int(lib.seccomp_syscall_resolve_name_arch(arch, name.encode()))


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


# The profiles of test_seccomp_tasks.py's kernel tests (test_seccomp_differential.py
# compiles them too).
COMPARISON_OPS = sorted(REFERENCE)
MAGIC = 0x5EC0_0000_0000_0001
LONG_JUMP_PROBES = ("getppid", "getpid", "getuid", "getgid", "gettid", "getcwd")


def comparisons_profile() -> Dict[str, Any]:
    """getppid gets errno 100 + k when arg0 is k and arg1 <op k> PIVOT holds. arg0
    picks the rule: libseccomp 2.5.4 merges ranges of one value on one argument
    wrongly (test_seccomp.py), so the compared argument comes second."""
    return profile(*[rule("getppid", errnoRet=100 + k, args=[arg(0, "SCMP_CMP_EQ", k), arg(1, op, PIVOT, 5)])
                     for k, op in enumerate(COMPARISON_OPS)])


def three_hundred_rules() -> Dict[str, Any]:
    return profile(*[rule("getppid", errnoRet=i + 1, args=[arg(0, "SCMP_CMP_EQ", i * 0x100000001)])
                     for i in range(300)])


def long_jumps_profile() -> Dict[str, Any]:
    """Every other syscall, and the probes, each with its errno when arg5 is MAGIC."""
    probes = {int(getattr(lib, "__NR_" + n)) for n in LONG_JUMP_PROBES}
    numbers = sorted(set(ALL_NUMBERS[::2]) | probes)
    return profile(*[rule(NAMES[nr], errnoRet=1 + nr % 100, args=[arg(5, "SCMP_CMP_EQ", MAGIC)]) for nr in numbers])
