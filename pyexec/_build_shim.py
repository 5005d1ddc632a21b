"""cffi build script of the C shim (``pyexec._shim``), run by setup.py's cffi_modules.

The cdef is read from the BEGIN/END CDEF regions of csrc/pyexec.h and
csrc/logmon.h, so the structures and PX_* constants are written once, in those
headers. Kernel and libc constants the Python side needs are declared with
``...``: cffi takes their values from the system headers at compile time.
"""
from __future__ import annotations

import re
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
typedef int cap_value_t;
int cap_from_name(const char *name, cap_value_t *value);
char *cap_to_name(cap_value_t cap);
cap_value_t cap_max_bits(void);
int cap_free(void *obj);
"""

_PRELUDE = """
#include <sched.h>
#include <sys/mount.h>
#include <sys/capability.h>
#include "pyexec.h"
#include "logmon.h"
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
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


ffibuilder = FFI()
ffibuilder.cdef(shared_cdef() + _SYSTEM_CONSTANTS)
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
