"""pyexec's default seccomp profile, written twice: for libseccomp and for the tree.

The policy: the effect of Docker's default profile for the task's
capabilities, as a deny-list (defaultAction allow, so new syscalls work),
for the native ABI only (the compat ABIs are attack surface nothing needs).
``default_profile`` writes it as an OCI/Docker profile whose rules have no
order, which libseccomp, runc and crun read as meant (pyexec/seccomp.py
compiles profiles so; bench/bundle.py gives it to runc and crun);
``ordered_rules`` writes it as rules tried in order for the tree that
compiles the filter launches load (pyexec/seccomp_tree.py: "these values,
else EPERM" is a few instructions there, 33 denials in the other form).
tests/test_seccomp_differential.py shows that the two decide the same.
"""
from __future__ import annotations

import errno
import platform
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from .native import lib
from .seccomp_bpf import Cond
from .seccomp_tree import Rule, syscall_number

__all__ = ["default_profile", "ordered_rules"]

_MACHINE = platform.machine()

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
_QUERY = 0xFFFFFFFF
# clone(2) takes its flags in the second argument on s390 (CLONE_BACKWARDS2).
_CLONE_FLAGS_ARG = 1 if _MACHINE.startswith("s390") else 0


def _new_namespace_flags() -> Tuple[int, ...]:
    # CLONE_NEWTIME is left out: in clone(2) its bit is part of the exit signal byte.
    return (lib.CLONE_NEWNS, lib.CLONE_NEWUTS, lib.CLONE_NEWIPC, lib.CLONE_NEWPID, lib.CLONE_NEWNET,
            lib.CLONE_NEWUSER, lib.CLONE_NEWCGROUP)


def _any_bit(index: int, bits: Iterable[int]) -> List[Dict[str, Any]]:
    """Conditions on one argument, so any one of them (OR): that bit is set."""
    return [{"index": index, "op": "SCMP_CMP_MASKED_EQ", "value": bit, "valueTwo": bit} for bit in bits]


def _other_personas() -> List[Dict[str, Any]]:
    """Conditions on personality's argument, any one of which (OR) holds for every
    value but _PERSONAS. Rules have no order in libseccomp, so "these values, else
    EPERM" over an allowing default is written as the denials of all the rest:

    - above 32 bits (the kernel reads 32, the filter sees 64, as Docker's EQs do);
    - else "bit c clear and bit f(c) set", one for each of the 32 bits c, where
      f(c) is the next bit (cyclically) that no allowed value but the query has.

    A value outside _PERSONAS has a clear bit (it is not the query) and such a
    bit set (the other four are all the combinations of their bits). Were
    there no c clear with f(c) set, f would keep to the clear bits, and going
    round all 30 of its bits it would make them all clear. 32 conditions are the
    fewest: each of the 32 values one bit short of the query needs its own."""
    used = 0
    for value in _PERSONAS:
        if value != _QUERY:
            used |= value
    others = {v for v in _PERSONAS if v != _QUERY}
    assert all(v & ~used == 0 for v in others) and len(others) == 2 ** bin(used).count("1"), "not all combinations"
    free = [bit for bit in range(32) if not used >> bit & 1]
    following = {bit: free[(i + 1) % len(free)] for i, bit in enumerate(free)}
    conds = [{"index": 0, "op": "SCMP_CMP_GT", "value": _QUERY, "valueTwo": 0}]
    for c in range(32):
        b = following.get(c, free[0])
        conds.append({"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 1 << b | 1 << c, "valueTwo": 1 << b})
    return conds


def default_profile() -> Dict[str, Any]:
    """pyexec's default: a Docker-format deny-list (defaultAction allow) whose
    effect, for a task with Docker's default capabilities, is Docker's default
    profile; ``includes``/``excludes.caps`` lift bans for tasks given more.
    Only the native ABI runs (the compat ABIs are attack surface nothing needs)."""
    def deny(names: Iterable[str], unless: Iterable[str], why: str, errno_ret: int = errno.EPERM,
             args: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret,
                                 "comment": why}
        if args:
            entry["args"] = args
        if unless:
            entry["excludes"] = {"caps": list(unless)}
        return entry

    rules = [deny(names, unless, why) for names, unless, why in _DENIED]
    rules += [deny(["clone"], _SYS_ADMIN, "clone with any new namespace",
                   args=_any_bit(_CLONE_FLAGS_ARG, _new_namespace_flags())),
              # clone3 passes its flags in memory, out of the filter's sight: ENOSYS
              # makes glibc fall back to clone(2), whose flags are checked above.
              deny(["clone3"], _SYS_ADMIN, "clone3: flags the filter cannot see", errno.ENOSYS),
              deny(["personality"], (), "execution domains that weaken the task (no ASLR...)",
                   args=_other_personas())]
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [], "syscalls": rules}


def ordered_rules(caps: FrozenSet[str]) -> Tuple[List[Rule], int]:
    """The policy for a task holding ``caps`` as rules tried in order (first
    match wins) over the default (SECCOMP_RET_* values), for seccomp_tree."""
    eperm = lib.SECCOMP_RET_ERRNO | errno.EPERM

    def numbers(names: Iterable[str]) -> Tuple[int, ...]:
        return tuple(nr for nr in map(syscall_number, names) if nr is not None)

    rules = [Rule(numbers(names), (), eperm) for names, unless, _ in _DENIED if not caps & set(unless)]
    clone, clone3, personality = numbers(["clone"]), numbers(["clone3"]), numbers(["personality"])
    if not caps & set(_SYS_ADMIN):
        no_new_namespace = 0
        for flag in _new_namespace_flags():
            no_new_namespace |= flag
        rules += [Rule(clone, (Cond(_CLONE_FLAGS_ARG, "SCMP_CMP_MASKED_EQ", no_new_namespace, 0),),
                       lib.SECCOMP_RET_ALLOW),
                  Rule(clone, (), eperm), Rule(clone3, (), lib.SECCOMP_RET_ERRNO | errno.ENOSYS)]
    rules += [Rule(personality, (Cond(0, "SCMP_CMP_EQ", value, 0),), lib.SECCOMP_RET_ALLOW) for value in _PERSONAS]
    rules.append(Rule(personality, (), eperm))
    return rules, lib.SECCOMP_RET_ALLOW
