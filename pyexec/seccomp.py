"""Seccomp filters of container tasks: profiles in, classic BPF programs out.

It owns reading OCI runtime-spec and Docker seccomp profiles (JSON) into
rules, which libseccomp compiles (pyexec/seccomp_bpf.py, in the parent) into
the program the shim loads (``SpawnPlan.seccomp_filter``; csrc/seccomp.c):
last before execve, after no_new_privs; without no_new_privs, before the
capabilities drop (the kernel wants CAP_SYS_ADMIN then), like runc. The
default profile (pyexec/seccomp_default.py) is the exception: its filter,
which every launch loads, is compiled by pyexec/seccomp_tree.py, whose
program loads faster and decides the same (tests/test_seccomp_differential.py).

A profile means what it means to runc, which compiles it with libseccomp too
(pyexec/seccomp_bpf.py says what libseccomp makes of rules: they have no
order). ``defaultAction``/``defaultErrnoRet``; ``architectures`` (SCMP_ARCH_*
names; the native one is always in) or Docker's ``archMap`` (this machine's
entry and its ``subArchitectures``); ``syscalls[]`` with ``names``,
``action``, ``errnoRet`` (EPERM when not given) and ``args`` (index, value,
valueTwo, op), whose conditions are ANDed unless one argument index appears
twice: then each condition is a rule of its own (OR), as runc does.
``flags`` (SECCOMP_FILTER_FLAG_TSYNC, _LOG, _SPEC_ALLOW) are checked against
this kernel and come back with the program (``Filter.flags``, for
``SpawnPlan.seccomp_flags``). SCMP_ACT_NOTIFY needs ``listenerPath``:
``Filter.notify`` says to load the program with a listener
(``SpawnPlan.seccomp_listener_fd``), which pyexec/seccomp_notify.py passes on
to the agent. Docker's ``includes``/``excludes`` pick the rules that apply:
``caps`` (all listed / any listed, in the task's bounding set), ``arches``
(this machine's Go name, "amd64", or its uname or SCMP_ARCH_* name),
``minKernel`` (os.uname()). Errors are ConfigErrors naming the JSON path
(``seccomp.syscalls[3].action``).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import platform
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from . import seccomp_tree
from .config import Isolation
from .errors import ConfigError
from .native import lib
from .seccomp_bpf import INSN, MAX_INSNS, OPS, CompileError, Cond, Rule, arch_token, compile_rules, instructions
from .seccomp_default import default_profile, ordered_rules
from .seccomp_tree import syscall_number

__all__ = ["Filter", "compile_filter", "compile_profile", "default_profile", "load_profile", "filter_for",
           "syscall_number", "instructions", "MAX_INSNS", "FLAGS"]

log = logging.getLogger(__name__)

_MAX_ERRNO, _U64 = 4095, (1 << 64) - 1

# action name -> (libseccomp action, whether errnoRet goes into its data)
_ACTIONS: Dict[str, Tuple[int, bool]] = {
    "SCMP_ACT_ALLOW": (lib.SCMP_ACT_ALLOW, False),
    "SCMP_ACT_ERRNO": (lib.PX_SCMP_ACT_ERRNO_BASE, True),
    "SCMP_ACT_KILL": (lib.SCMP_ACT_KILL_THREAD, False),        # libseccomp: KILL == KILL_THREAD
    "SCMP_ACT_KILL_THREAD": (lib.SCMP_ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (lib.SCMP_ACT_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (lib.SCMP_ACT_TRAP, False),
    "SCMP_ACT_LOG": (lib.SCMP_ACT_LOG, False),
    "SCMP_ACT_TRACE": (lib.PX_SCMP_ACT_TRACE_BASE, True),         # no tracer: the call fails ENOSYS
    "SCMP_ACT_NOTIFY": (lib.SCMP_ACT_NOTIFY, False),              # the agent at listenerPath answers
}
# The flags of profiles (runtime-spec), as seccomp(2) takes them.
FLAGS: Dict[str, int] = {name: int(getattr(lib, name)) for name in (
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")}

# This machine in the spellings profiles use: Docker's includes/excludes.arches
# take Go's GOARCH names; uname and SCMP_ARCH_* names are accepted too.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "riscv64": "riscv64",
           "ppc64le": "ppc64le", "s390x": "s390x"}
_MACHINE = platform.machine()
_NATIVE_ARCHES = frozenset({_MACHINE, _GOARCH.get(_MACHINE, _MACHINE), "SCMP_ARCH_" + _MACHINE.upper()})


@dataclass(frozen=True)
class Filter:
    """A compiled profile: the program and how to load it."""
    program: bytes                       # packed struct px_bpf_insn array
    flags: int = 0                       # SECCOMP_FILTER_FLAG_* of the seccomp(2) call
    notify: bool = False                 # SCMP_ACT_NOTIFY: load with a listener for the agent
    listener_path: Optional[str] = None  # the agent's socket (listenerPath)
    listener_metadata: str = ""          # listenerMetadata, passed on to the agent


# -- profiles ------------------------------------------------------------------------

def _fail(source: str, reason: str) -> ConfigError:
    return ConfigError("seccomp", source, reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _action(name: Any, errno_ret: Any, where: str, source: str) -> int:
    if name not in _ACTIONS:
        raise _fail(source, f"{where}: unknown action {name!r} (one of {', '.join(_ACTIONS)})")
    base, takes_errno = _ACTIONS[name]
    if errno_ret is None:
        return base | (errno.EPERM if takes_errno else 0)
    if not _is_int(errno_ret) or not 0 <= errno_ret <= _MAX_ERRNO:
        raise _fail(source, f"{where}: errnoRet {errno_ret!r} is not an errno number (0..{_MAX_ERRNO})")
    return base | (errno_ret if takes_errno else 0)


def _u64(value: Any, where: str, source: str) -> int:
    if not _is_int(value) or not 0 <= value <= _U64:
        raise _fail(source, f"{where}: {value!r} is not an unsigned 64-bit integer")
    return int(value)


def _cond(arg: Any, where: str, source: str) -> Cond:
    if not isinstance(arg, dict):
        raise _fail(source, f"{where}: an argument condition must be an object, not {arg!r}")
    index = arg.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
        raise _fail(source, f"{where}.index: argument index {index!r} is not 0..5")
    op = arg.get("op")
    if op not in OPS:
        raise _fail(source, f"{where}.op: unknown comparison op {op!r} (one of {', '.join(OPS)})")
    return Cond(index, op, _u64(arg.get("value", 0), f"{where}.value", source),
                _u64(arg.get("valueTwo", 0), f"{where}.valueTwo", source))


def _kernel_at_least(wanted: Any, where: str, source: str) -> bool:
    match = re.fullmatch(r"(\d+)\.(\d+)", str(wanted))
    if not match:
        raise _fail(source, f"{where}: minKernel {wanted!r} is not of the form 'major.minor'")
    have = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if not have:
        return True
    return (int(have[1]), int(have[2])) >= (int(match[1]), int(match[2]))


def _cap_names(names: Any, where: str, source: str) -> FrozenSet[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail(source, f"{where}: caps must be a list of capability names")
    return frozenset(n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper() for n in names)


def _applies(entry: Dict[str, Any], caps: FrozenSet[str], where: str, source: str) -> bool:
    """Docker's includes (all must hold) and excludes (none may hold)."""
    for key, wanted in (("includes", True), ("excludes", False)):
        spec = entry.get(key) or {}
        if not isinstance(spec, dict):
            raise _fail(source, f"{where}.{key} must be an object")
        if "caps" in spec and spec["caps"]:
            listed = _cap_names(spec["caps"], f"{where}.{key}.caps", source)
            if wanted and not listed <= caps or not wanted and listed & caps:
                return False
        if "arches" in spec and spec["arches"]:
            arches = spec["arches"]
            if not isinstance(arches, list):
                raise _fail(source, f"{where}.{key}.arches must be a list")
            if bool(_NATIVE_ARCHES & set(arches)) != wanted:
                return False
        if spec.get("minKernel"):
            if _kernel_at_least(spec["minKernel"], f"{where}.{key}.minKernel", source) != wanted:
                return False
    return True


def _arches(profile: Dict[str, Any], source: str) -> List[Tuple[int, str]]:
    """(libseccomp token, JSON path) of the architectures besides the native one."""
    listed = profile.get("architectures") or []
    arch_map = profile.get("archMap") or []
    if not isinstance(listed, list) or not isinstance(arch_map, list):
        raise _fail(source, "seccomp.architectures and seccomp.archMap must be lists")
    if listed and arch_map:
        raise _fail(source, "seccomp: give architectures or archMap, not both (as Docker)")
    names = [(name, f"seccomp.architectures[{i}]") for i, name in enumerate(listed)]
    native = int(lib.seccomp_arch_native())
    for i, entry in enumerate(arch_map):
        where = f"seccomp.archMap[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("subArchitectures") or [], list):
            raise _fail(source, f"{where} must be an object with architecture and subArchitectures")
        token = arch_token(str(entry.get("architecture")))
        if not token:
            raise _fail(source, f"{where}.architecture: unknown architecture {entry.get('architecture')!r}")
        if token == native:       # Docker takes the entry of the machine it runs on
            names += [(name, f"{where}.subArchitectures[{k}]")
                      for k, name in enumerate(entry.get("subArchitectures") or [])]
    arches = []
    for name, where in names:
        token = arch_token(name) if isinstance(name, str) else 0
        if not token:
            raise _fail(source, f"{where}: unknown architecture {name!r} (SCMP_ARCH_X86_64, SCMP_ARCH_X86, ...)")
        arches.append((token, where))
    return arches


def _flags(profile: Dict[str, Any], source: str) -> int:
    flags = profile.get("flags") or []
    if not isinstance(flags, list):
        raise _fail(source, "seccomp.flags must be a list")
    value = 0
    for i, name in enumerate(flags):
        if name not in FLAGS:
            raise _fail(source, f"seccomp.flags[{i}]: unknown flag {name!r} (one of {', '.join(FLAGS)})")
        if not lib.px_seccomp_flags_supported(FLAGS[name]):
            raise _fail(source, f"seccomp.flags[{i}]: this kernel does not take {name}")
        value |= FLAGS[name]
    return value


def _rules(profile: Any, caps: FrozenSet[str], source: str) -> Tuple[List[Rule], int]:
    """The rules of ``profile`` that apply to a task holding ``caps``, and the default action."""
    if not isinstance(profile, dict):
        raise _fail(source, "a profile must be a JSON object")
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), "seccomp.defaultAction",
                      source)
    if default == lib.SCMP_ACT_NOTIFY:
        raise _fail(source, "seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default: the shim's own calls "
                            "before the exec would wait for an agent that has no listener yet")
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise _fail(source, "seccomp.syscalls must be a list")
    rules: List[Rule] = []
    for i, entry in enumerate(syscalls):
        where = f"seccomp.syscalls[{i}]"
        if not isinstance(entry, dict):
            raise _fail(source, f"{where} must be an object")
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _fail(source, f"{where}.names must be a non-empty list of syscall names")
        action = _action(entry.get("action"), entry.get("errnoRet"), f"{where}.action", source)
        args = entry.get("args") or []
        if not isinstance(args, list):
            raise _fail(source, f"{where}.args must be a list")
        conds = [_cond(a, f"{where}.args[{k}]", source) for k, a in enumerate(args)]
        if action == lib.SCMP_ACT_NOTIFY and "sendmsg" in names:
            raise _fail(source, f"{where}: SCMP_ACT_NOTIFY on sendmsg cannot work: the shim sends the agent's "
                                "listener with it")
        if not _applies(entry, caps, where, source):
            continue
        indexes = [c.index for c in conds]
        if len(set(indexes)) < len(indexes):   # one index twice: each condition its own rule (OR)
            rules.extend(Rule(tuple(names), (c,), action, where) for c in conds)
        else:
            rules.append(Rule(tuple(names), tuple(conds), action, where))
    return rules, default


def compile_filter(profile: Dict[str, Any], capabilities: Iterable[str] = (), source: str = "profile") -> Filter:
    """Compile an OCI or Docker seccomp profile (parsed JSON) for a task holding
    ``capabilities`` (``CAP_*`` names); ``source`` names it in errors, which are
    ConfigErrors naming the JSON path."""
    caps = frozenset(c.upper() for c in capabilities)
    rules, default = _rules(profile, caps, source)
    arches = _arches(profile, source)
    flags = _flags(profile, source)
    notify = lib.SCMP_ACT_NOTIFY in {r.action for r in rules} | {default}
    path, metadata = profile.get("listenerPath"), profile.get("listenerMetadata") or ""
    if path is not None and not isinstance(path, str) or not isinstance(metadata, str):
        raise _fail(source, "seccomp.listenerPath and seccomp.listenerMetadata must be strings")
    if notify:
        if not path:
            raise _fail(source, "seccomp.listenerPath: SCMP_ACT_NOTIFY needs a seccomp agent to send the "
                                "listener to")
        if flags & lib.SECCOMP_FILTER_FLAG_TSYNC:
            # The kernel takes TSYNC with a listener only when told to fail (ESRCH) rather than
            # return a thread id; the child is one thread, so either way nothing is synced.
            flags |= lib.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
            if not lib.px_seccomp_flags_supported(flags | lib.SECCOMP_FILTER_FLAG_NEW_LISTENER):
                raise _fail(source, "seccomp.flags: this kernel takes no SECCOMP_FILTER_FLAG_TSYNC with "
                                    "SCMP_ACT_NOTIFY")
    try:
        program = compile_rules(rules, default, arches)
    except CompileError as exc:
        raise _fail(source, str(exc)) from None
    count = len(program) // INSN.size
    if count > MAX_INSNS:
        raise _fail(source, f"compiles to {count} BPF instructions, more than the kernel's limit of {MAX_INSNS}")
    log.debug("seccomp profile %s: %d rules, %d instructions", source, len(rules), count)
    return Filter(program, flags, notify, path if notify else None, metadata)


def compile_profile(profile: Dict[str, Any], capabilities: Iterable[str] = (),
                    source: str = "profile") -> bytes:
    """``compile_filter``'s program alone: the packed ``struct px_bpf_insn`` array."""
    return compile_filter(profile, capabilities, source).program


def load_profile(path: str) -> Dict[str, Any]:
    """Read a JSON profile; ConfigError("seccomp", path, why) when it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(path, "is not a seccomp profile (a JSON object)")
    return data


@lru_cache(maxsize=16)
def _default_filter(caps: FrozenSet[str]) -> bytes:
    # The tree, not libseccomp: its program loads faster (pyexec/seccomp_tree.py).
    # Compiled once per capability set (~0.7 ms): a launch should not.
    return seccomp_tree.assemble(*ordered_rules(caps))


def filter_for(isolation: Isolation, capabilities: Iterable[str]) -> Optional[bytes]:
    """The compiled filter of ``isolation.seccomp`` for a task whose capability
    (bounding) set is ``capabilities``; None without one. Errors are ConfigError.
    A profile's flags are the OCI runtime's to apply (``compile_filter``)."""
    spec = isolation.seccomp
    if spec is None:
        return None
    caps = frozenset(c.upper() for c in capabilities)
    if spec == "default":
        return _default_filter(caps)
    compiled = compile_filter(load_profile(spec), caps, source=spec)
    if compiled.notify:
        raise _fail(spec, "uses SCMP_ACT_NOTIFY, which needs a seccomp agent: Isolation.seccomp has none "
                          "(pyexec's OCI runtime passes the listener on to listenerPath)")
    if compiled.flags:
        log.warning("seccomp profile %s: its flags (%#x) are not applied by Isolation.seccomp", spec,
                    compiled.flags)
    return compiled.program
