"""Seccomp filters of container tasks: profiles in, classic BPF programs out.

It owns pyexec's default profile (the effect of Docker's default profile for
the task's capabilities), reading OCI runtime-spec and Docker seccomp
profiles (JSON), and compiling a profile into the classic BPF program the
shim loads (``SpawnPlan.seccomp_filter``; ``load_seccomp`` in csrc/task.c):
last before execve, after no_new_privs; without no_new_privs, before the
capabilities drop (the kernel wants CAP_SYS_ADMIN then), like runc.

Syscall numbers, SECCOMP_RET_* actions, BPF opcodes, the offsets of struct
seccomp_data and the native AUDIT_ARCH come from the system headers through
the cffi module (pyexec/_build_shim.py): a filter is for the architecture the
shim was built for, and a syscall that architecture lacks is skipped (debug log).

The program (pyexec/seccomp_bpf.py lays it out): foreign ABIs are killed
(the i386 ABI and x32 numbers on x86_64), then a binary search on the syscall
number leads to what the rules naming it decide, in profile order (first
match wins, a rule whose argument checks fail falls through to the next rule
naming that number), or to the default action.

The conditions of a rule are ANDed, unless one argument index appears twice:
then each condition becomes its own rule (OR), as runc does. Docker's
``includes``/``excludes`` pick the rules that apply: ``caps`` (all listed /
any listed, in the task's bounding set), ``arches`` (this machine's Go name,
"amd64", or its uname or SCMP_ARCH_* name), ``minKernel`` (os.uname()).
Not supported: SCMP_ACT_NOTIFY (ConfigError), ``flags`` and ``listenerPath``
(a warning).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import platform
import re
from functools import lru_cache
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from .config import Isolation
from .errors import ConfigError
from .native import lib
from .seccomp_bpf import INSN, MAX_INSNS, Cond, Rule, assemble, instructions

__all__ = ["compile_profile", "default_profile", "load_profile", "filter_for", "syscall_number",
           "instructions", "MAX_INSNS"]

log = logging.getLogger(__name__)

_MAX_ERRNO, _U64 = 4095, (1 << 64) - 1

# action name -> (SECCOMP_RET_* value, whether errnoRet goes into its data)
_ACTIONS: Dict[str, Tuple[int, bool]] = {
    "SCMP_ACT_ALLOW": (lib.SECCOMP_RET_ALLOW, False),
    "SCMP_ACT_ERRNO": (lib.SECCOMP_RET_ERRNO, True),
    "SCMP_ACT_KILL": (lib.SECCOMP_RET_KILL_THREAD, False),     # libseccomp: KILL == KILL_THREAD
    "SCMP_ACT_KILL_THREAD": (lib.SECCOMP_RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (lib.SECCOMP_RET_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (lib.SECCOMP_RET_TRAP, False),
    "SCMP_ACT_LOG": (lib.SECCOMP_RET_LOG, False),
    "SCMP_ACT_TRACE": (lib.SECCOMP_RET_TRACE, True),            # no tracer: the call fails ENOSYS
}
_OPS = ("SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT", "SCMP_CMP_GE",
        "SCMP_CMP_MASKED_EQ")

# This machine in the spellings profiles use: Docker's includes/excludes.arches
# take Go's GOARCH names; uname and SCMP_ARCH_* names are accepted too.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "riscv64": "riscv64",
           "ppc64le": "ppc64le", "s390x": "s390x"}
_MACHINE = platform.machine()
_NATIVE_ARCHES = frozenset({_MACHINE, _GOARCH.get(_MACHINE, _MACHINE), "SCMP_ARCH_" + _MACHINE.upper()})


def syscall_number(name: str) -> Optional[int]:
    """This architecture's number of syscall ``name``; None when it has no such call."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        return None
    value = getattr(lib, "__NR_" + name, None)
    return None if value is None else int(value)


# -- profiles ------------------------------------------------------------------------

def _fail(source: str, reason: str) -> ConfigError:
    return ConfigError("seccomp", source, reason)


def _action(name: Any, errno_ret: Any, default_errno: int, where: str, source: str) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise _fail(source, f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which pyexec does not support")
    if name not in _ACTIONS:
        raise _fail(source, f"{where}: unknown action {name!r} (one of {', '.join(_ACTIONS)})")
    base, takes_errno = _ACTIONS[name]
    if errno_ret is None:
        return base | (default_errno if takes_errno else 0)
    if not isinstance(errno_ret, int) or isinstance(errno_ret, bool) or not 0 <= errno_ret <= _MAX_ERRNO:
        raise _fail(source, f"{where}: errnoRet {errno_ret!r} is not an errno number (0..{_MAX_ERRNO})")
    return base | (errno_ret & lib.SECCOMP_RET_DATA if takes_errno else 0)


def _u64(value: Any, what: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64:
        raise _fail(source, f"{what} {value!r} is not an unsigned 64-bit integer")
    return value


def _cond(arg: Any, where: str, source: str) -> Cond:
    if not isinstance(arg, dict):
        raise _fail(source, f"{where}: an argument condition must be an object, not {arg!r}")
    index = arg.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
        raise _fail(source, f"{where}: argument index {index!r} is not 0..5")
    op = arg.get("op")
    if op not in _OPS:
        raise _fail(source, f"{where}: unknown comparison op {op!r} (one of {', '.join(_OPS)})")
    return Cond(index, op, _u64(arg.get("value", 0), f"{where}: value", source),
                 _u64(arg.get("valueTwo", 0), f"{where}: valueTwo", source))


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
            raise _fail(source, f"{where}: {key} must be an object")
        if "caps" in spec and spec["caps"]:
            listed = _cap_names(spec["caps"], f"{where} {key}", source)
            if wanted and not listed <= caps or not wanted and listed & caps:
                return False
        if "arches" in spec and spec["arches"]:
            arches = spec["arches"]
            if not isinstance(arches, list):
                raise _fail(source, f"{where}: {key}.arches must be a list")
            if bool(_NATIVE_ARCHES & set(arches)) != wanted:
                return False
        if spec.get("minKernel"):
            if _kernel_at_least(spec["minKernel"], f"{where} {key}", source) != wanted:
                return False
    return True


def _rules(profile: Any, caps: FrozenSet[str], source: str) -> Tuple[List[Rule], int]:
    if not isinstance(profile, dict):
        raise _fail(source, "a profile must be a JSON object")
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), errno.EPERM,
                      "defaultAction", source)
    if profile.get("flags"):
        log.warning("seccomp profile %s: flags %s are not applied", source, profile["flags"])
    if profile.get("listenerPath"):
        log.warning("seccomp profile %s: listenerPath is ignored (no SCMP_ACT_NOTIFY support)", source)
    for key in ("architectures", "archMap"):
        if not isinstance(profile.get(key) or [], list):
            raise _fail(source, f"{key} must be a list")
    # Only native syscalls pass the filter; foreign ABIs are killed (see the module doc).
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise _fail(source, "syscalls must be a list")
    rules: List[Rule] = []
    for i, entry in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            raise _fail(source, f"{where} must be an object")
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _fail(source, f"{where}: names must be a non-empty list of syscall names")
        ret = _action(entry.get("action"), entry.get("errnoRet"), errno.EPERM, where, source)
        args = entry.get("args") or []
        if not isinstance(args, list):
            raise _fail(source, f"{where}: args must be a list")
        conds = [_cond(a, where, source) for a in args]
        if not _applies(entry, caps, where, source):
            continue
        numbers = []
        for name in names:
            nr = syscall_number(name)
            if nr is None:
                log.debug("seccomp profile %s: %s is not a syscall of %s, skipped", source, name, _MACHINE)
            else:
                numbers.append(nr)
        if not numbers:
            continue
        indexes = [c.index for c in conds]
        if len(set(indexes)) < len(indexes):   # one index twice: each condition its own rule (OR)
            rules.extend(Rule(tuple(numbers), (c,), ret) for c in conds)
        else:
            rules.append(Rule(tuple(numbers), tuple(conds), ret))
    return rules, default


def compile_profile(profile: Dict[str, Any], capabilities: Iterable[str] = (),
                    source: str = "profile") -> bytes:
    """Compile an OCI or Docker seccomp profile (parsed JSON) for a task holding
    ``capabilities`` (``CAP_*`` names); ``source`` names it in errors.

    Returns the packed ``struct px_bpf_insn`` array; ConfigError names what is wrong.
    """
    if not lib.PX_AUDIT_ARCH:
        raise _fail(source, f"is not supported on {_MACHINE} (pyexec knows no AUDIT_ARCH for it); "
                            "use seccomp=None")
    caps = frozenset(c.upper() for c in capabilities)
    rules, default = _rules(profile, caps, source)
    program = assemble(rules, default)
    count = len(program) // INSN.size
    if count > MAX_INSNS:
        raise _fail(source, f"compiles to {count} BPF instructions, more than the kernel's limit of {MAX_INSNS}")
    log.debug("seccomp profile %s: %d rules, %d instructions", source, len(rules), count)
    return program


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


# -- the default profile ---------------------------------------------------------------

_SYS_ADMIN = ("CAP_SYS_ADMIN",)
# (names, capabilities any one of which lifts the ban, why). The effect of
# Docker's default profile, written as a deny-list: calls it never allows,
# and calls it allows only with one of these capabilities.
_DENIED: Tuple[Tuple[Tuple[str, ...], Tuple[str, ...], str], ...] = (
    (("kexec_load", "kexec_file_load"), (), "boot another kernel"),
    (("init_module", "finit_module", "delete_module"), ("CAP_SYS_MODULE",), "load/unload kernel modules"),
    (("create_module", "get_kernel_syms", "query_module", "uselib", "nfsservctl", "_sysctl", "vm86",
      "vm86old", "lookup_dcookie"), (), "obsolete calls: attack surface nothing needs"),
    (("open_by_handle_at",), ("CAP_DAC_READ_SEARCH",),
     "opens files by handle, past the mount namespace (the 'shocker' escape)"),
    (("bpf",), ("CAP_SYS_ADMIN", "CAP_BPF"), "BPF programs and maps: kernel attack surface"),
    (("perf_event_open",), ("CAP_SYS_ADMIN", "CAP_PERFMON"), "kernel profiling: leaks kernel addresses"),
    (("keyctl", "add_key", "request_key"), (), "the kernel keyrings are not namespaced"),
    (("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise"),
     ("CAP_SYS_PTRACE",), "inspecting and changing other processes"),
    (("userfaultfd",), ("CAP_SYS_PTRACE",), "stalls kernel page faults: an exploit aid"),
    (("mount", "umount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
      "open_tree_attr", "mount_setattr", "pivot_root", "unshare", "setns", "name_to_handle_at",
      "fanotify_init", "quotactl", "quotactl_fd", "sethostname", "setdomainname"), _SYS_ADMIN,
     "mounts and namespaces (unshare -U would regain capabilities in a new user namespace)"),
    (("swapon", "swapoff"), (), "host swap"),
    (("reboot",), ("CAP_SYS_BOOT",), "reboot"),
    (("syslog",), ("CAP_SYSLOG", "CAP_SYS_ADMIN"), "the kernel log: leaks kernel addresses"),
    (("acct",), ("CAP_SYS_PACCT",), "process accounting is not namespaced"),
    (("settimeofday", "stime", "clock_settime", "clock_settime64"), ("CAP_SYS_TIME",),
     "the system clock is not namespaced"),
    (("iopl", "ioperm"), ("CAP_SYS_RAWIO",), "raw I/O ports"),
    (("vhangup",), ("CAP_SYS_TTY_CONFIG",), "hang up the terminal"),
    (("mbind", "set_mempolicy", "set_mempolicy_home_node", "move_pages", "migrate_pages"), ("CAP_SYS_NICE",),
     "NUMA placement of memory"),
    (("io_uring_setup", "io_uring_enter", "io_uring_register"), (), "io_uring: a frequent source of kernel bugs"),
    (("chroot",), ("CAP_SYS_CHROOT",), "chroot"),
)
# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 (and with
# PER_LINUX32) and 0xffffffff, the query. Others (ADDR_NO_RANDOMIZE...) are refused.
_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# clone(2) takes its flags in the second argument on s390 (CLONE_BACKWARDS2).
_CLONE_FLAGS_ARG = 1 if _MACHINE.startswith("s390") else 0


def _new_namespace_flags() -> int:
    # CLONE_NEWTIME is left out: in clone(2) its bit is part of the exit signal byte.
    return (lib.CLONE_NEWNS | lib.CLONE_NEWUTS | lib.CLONE_NEWIPC | lib.CLONE_NEWPID | lib.CLONE_NEWNET
            | lib.CLONE_NEWUSER | lib.CLONE_NEWCGROUP)


def default_profile() -> Dict[str, Any]:
    """pyexec's default: a Docker-format deny-list (defaultAction allow) whose
    effect, for a task with Docker's default capabilities, is Docker's default
    profile; ``includes``/``excludes.caps`` lift bans for tasks given more."""
    def deny(names: Iterable[str], unless: Iterable[str], why: str, errno_ret: int = errno.EPERM) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret,
                                 "comment": why}
        if unless:
            entry["excludes"] = {"caps": list(unless)}
        return entry

    rules = [deny(names, unless, why) for names, unless, why in _DENIED]
    rules += [{"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": list(_SYS_ADMIN)},
               "args": [{"index": _CLONE_FLAGS_ARG, "value": _new_namespace_flags(), "valueTwo": 0,
                         "op": "SCMP_CMP_MASKED_EQ"}], "comment": "clone without new namespaces"},
              deny(["clone"], _SYS_ADMIN, "clone with new namespaces"),
              # clone3 passes its flags in memory, out of the filter's sight: ENOSYS
              # makes glibc fall back to clone(2), whose flags are checked above.
              deny(["clone3"], _SYS_ADMIN, "clone3: flags the filter cannot see", errno.ENOSYS)]
    rules += [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]} for v in _PERSONAS]
    rules.append(deny(["personality"], (), "execution domains that weaken the task (no ASLR...)"))
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_" + _MACHINE.upper()],
            "syscalls": rules}


@lru_cache(maxsize=16)
def _default_filter(caps: FrozenSet[str]) -> bytes:
    return compile_profile(default_profile(), caps, source="default")


def filter_for(isolation: Isolation, capabilities: Iterable[str]) -> Optional[bytes]:
    """The compiled filter of ``isolation.seccomp`` for a task whose capability
    (bounding) set is ``capabilities``; None without one. Errors are ConfigError."""
    spec = isolation.seccomp
    if spec is None:
        return None
    caps = frozenset(c.upper() for c in capabilities)
    if spec == "default":
        return _default_filter(caps)
    return compile_profile(load_profile(spec), caps, source=spec)
