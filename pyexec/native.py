"""The one way into native code: the compiled cffi module of the C shim.

``pyexec/_build_shim.py`` compiles csrc/ together with the declarations of
csrc/pyexec.h and csrc/logmon.h and the kernel and libc constants Python
needs; this module is the only one that imports the result, and every other
module takes ``ffi`` and ``lib`` from here. It is Linux-only: the modules the
portable executor needs on other systems (config, process, stats, errors)
never import it.
"""
from __future__ import annotations

from ._shim import ffi, lib  # the compiled module (setup.py builds it)

__all__ = ["ffi", "lib"]
