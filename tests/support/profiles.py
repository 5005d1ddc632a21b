"""Seccomp profiles for the tests (tests/test_seccomp*.py): small builders of
the JSON, Python's reading of each comparison op, the syscall numbers of this
machine (the headers') and of libseccomp's tables, and the script tasks use to
make raw syscalls and report what they got."""
from __future__ import annotations

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
