"""cffi build script of the C shim (``pyexec._shim``), run by setup.py's cffi_modules.

The cdef is read from the BEGIN/END CDEF regions of csrc/pyexec.h and
csrc/logmon.h, so the structures and PX_* constants are written once, in those
headers. Kernel and libc constants the Python side needs are declared with
``...``: cffi takes their values from the system headers at compile time.

Syscall numbers (for the seccomp filters of pyexec/seccomp.py): which
``__NR_*`` macros exist depends on the architecture, and cffi fails the build
on a ``...`` macro the headers lack. So the names are listed at build time by
running the C preprocessor (``$CC -dM -E``) over <sys/syscall.h>, and exactly
those are declared: a syscall this architecture lacks is simply absent from
``lib``. The values still come from the headers through the compiler.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"

_SYSTEM_CONSTANTS = """
#define CLONE_NEWNS ...
#define CLONE_NEWUTS ...
#define CLONE_NEWIPC ...
#define CLONE_NEWPID ...
#define CLONE_NEWNET ...
#define CLONE_NEWUSER ...
#define CLONE_NEWCGROUP ...
#define CLONE_NEWTIME ...
#define MS_RDONLY ...
#define MS_NOSUID ...
#define MS_NODEV ...
#define MS_NOEXEC ...
#define MS_REC ...
#define MS_BIND ...
#define MS_STRICTATIME ...
#define MS_RELATIME ...
#define PX_AUDIT_ARCH ...
#define PX_X32_SYSCALL_BIT ...
#define SECCOMP_RET_KILL_PROCESS ...
#define SECCOMP_RET_KILL_THREAD ...
#define SECCOMP_RET_TRAP ...
#define SECCOMP_RET_ERRNO ...
#define SECCOMP_RET_TRACE ...
#define SECCOMP_RET_LOG ...
#define SECCOMP_RET_ALLOW ...
#define SECCOMP_RET_DATA ...
#define BPF_LD ...
#define BPF_ALU ...
#define BPF_JMP ...
#define BPF_RET ...
#define BPF_W ...
#define BPF_ABS ...
#define BPF_AND ...
#define BPF_JA ...
#define BPF_JEQ ...
#define BPF_JGT ...
#define BPF_JGE ...
#define BPF_JSET ...
#define BPF_K ...
#define BPF_MAXINSNS ...
#define PX_SECCOMP_NR_OFFSET ...
#define PX_SECCOMP_ARCH_OFFSET ...
#define PX_SECCOMP_ARGS_OFFSET ...
typedef int cap_value_t;
int cap_from_name(const char *name, cap_value_t *value);
char *cap_to_name(cap_value_t cap);
cap_value_t cap_max_bits(void);
int cap_free(void *obj);
"""

_PRELUDE = """
#include <sched.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/capability.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include "pyexec.h"
#include "logmon.h"
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
/* The seccomp_data.arch of this build's native syscall ABI; 0: no seccomp support. */
#if defined(__x86_64__) && !defined(__ILP32__)
#define PX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__i386__)
#define PX_AUDIT_ARCH AUDIT_ARCH_I386
#elif defined(__aarch64__) && !defined(__AARCH64EB__)
#define PX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define PX_AUDIT_ARCH AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
#define PX_AUDIT_ARCH AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define PX_AUDIT_ARCH AUDIT_ARCH_S390X
#else
#define PX_AUDIT_ARCH 0
#endif
/* Where the filter finds the fields of struct seccomp_data. */
#define PX_SECCOMP_NR_OFFSET offsetof(struct seccomp_data, nr)
#define PX_SECCOMP_ARCH_OFFSET offsetof(struct seccomp_data, arch)
#define PX_SECCOMP_ARGS_OFFSET offsetof(struct seccomp_data, args)
/* x86_64: syscall numbers with this bit are the x32 ABI (same arch value). */
#ifdef __X32_SYSCALL_BIT
#define PX_X32_SYSCALL_BIT __X32_SYSCALL_BIT
#else
#define PX_X32_SYSCALL_BIT 0
#endif
"""


HEADERS = ("pyexec.h", "logmon.h")  # their CDEF regions, in this order


def shared_cdef(headers: "tuple[str, ...]" = HEADERS) -> str:
    parts = []
    for header in headers:
        text = (CSRC / header).read_text()
        match = re.search(r"/\* BEGIN CDEF \*/(.*)/\* END CDEF \*/", text, re.S)
        if not match:
            raise RuntimeError(f"csrc/{header} has no BEGIN CDEF / END CDEF region")
        # cffi's parser takes no comments on #define lines.
        parts.append(re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S))
    return "\n".join(parts)


def syscall_cdef() -> str:
    """``#define __NR_x ...`` for every syscall <sys/syscall.h> defines on this machine."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    try:
        out = subprocess.run(cc + ["-dM", "-E", "-x", "c", "-"], input="#include <sys/syscall.h>\n",
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"listing the syscalls with {' '.join(cc)} -dM -E <sys/syscall.h> failed: {exc}") from exc
    # Lower-case names only: __NR_SYSCALL_BASE and the like are helpers, not syscalls.
    names = sorted(set(re.findall(r"^#define (__NR_[a-z0-9_]+)\s", out, re.M)) - {"__NR_syscalls", "__NR_arch_specific_syscall"})
    if not names:
        raise RuntimeError("<sys/syscall.h> defines no __NR_ syscall numbers")
    return "".join(f"#define {name} ...\n" for name in names)


ffibuilder = FFI()
ffibuilder.cdef(shared_cdef() + _SYSTEM_CONSTANTS + syscall_cdef())
ffibuilder.set_source(
    "pyexec._shim",
    _PRELUDE,
    sources=[str((CSRC / name).relative_to(ROOT)) for name in ("nsenter.c", "logmon.c")],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    libraries=["cap"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
