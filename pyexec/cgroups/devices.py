"""The devices controller: which device nodes a container task may use.

The rules are an ordered list applied on top of "deny everything": each
allows or denies (``allow``) an access to a device kind "c", "b" or "a"
(all). The executors' lists only allow (runc's default set plus the
requested nodes); an OCI list may deny after allowing.

v1: devices.deny "a", then each rule in order to devices.allow or
devices.deny, as written. The kernel keeps either a default with exceptions:
a deny in the default-deny state only takes back an allow of exactly that
device (it cannot carve one device out of an allowed "c *:*"), as with
runc. v2 has no control files for this: the kernel runs an eBPF program of
type BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup on every open and
mknod of a device node. ``device_program`` assembles one from the rules, the
last matching rule deciding (an allow matches when it grants every access
asked, a deny when it takes any of them; none matching denies), and
``set_devices_v2`` loads and attaches it with bpf(2). Where bpf(2) is refused (a seccomp
profile, no CONFIG_CGROUP_BPF) the rules are not enforced and a warning
says so once per process. The task's /dev holds only the allowed nodes
either way (see rootfs.py).
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import platform
import stat
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ..errors import ConfigError

# The compiled shim carries bpf(2)'s numbers and layouts from the kernel's
# headers (pyexec/_build_shim.py): nothing here is copied by hand.
from ..native import ffi, lib
from .fscommon import write_value, write_values

__all__ = ["DeviceRule", "DEFAULT_DEVICE_RULES", "device_rule", "set_devices_v1", "set_devices_v2",
           "device_program"]

log = logging.getLogger(__name__)


class DeviceRule(NamedTuple):
    """``kind`` "c", "b" or "a" (every device: major and minor do not
    apply); None for major/minor means any ("*"); ``allow`` False denies."""

    kind: str
    major: Optional[int]
    minor: Optional[int]
    permissions: str
    allow: bool = True

    def text(self) -> str:
        """The rule as devices.allow / devices.deny take it (kind "a": just "a")."""
        if self.kind == "a":
            return "a"

        def part(number: Optional[int]) -> str:
            return "*" if number is None else str(number)
        return f"{self.kind} {part(self.major)}:{part(self.minor)} {self.permissions}"


#: runc's defaults: mknod of anything (a node is useless unless allowed below),
#: null zero full random urandom tty, ptmx and the pts of the task's devpts.
DEFAULT_DEVICE_RULES = (
    DeviceRule("c", None, None, "m"), DeviceRule("b", None, None, "m"),
    DeviceRule("c", 1, 3, "rwm"), DeviceRule("c", 1, 5, "rwm"), DeviceRule("c", 1, 7, "rwm"),
    DeviceRule("c", 1, 8, "rwm"), DeviceRule("c", 1, 9, "rwm"), DeviceRule("c", 5, 0, "rwm"),
    DeviceRule("c", 5, 2, "rwm"), DeviceRule("c", 136, None, "rwm"),
)


def device_rule(path: str, permissions: str) -> DeviceRule:
    """The rule for the host node at ``path`` (ConfigError if it is not one)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError("devices.path", path, f"cannot be used: {exc.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise ConfigError("devices.path", path, "is not a device node")
    return DeviceRule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), permissions)


_text = functools.lru_cache(maxsize=256)(DeviceRule.text)  # the same few rules at every launch


def set_devices_v1(path: str, rules: Sequence[DeviceRule]) -> None:
    """Deny everything, then apply ``rules`` in order (cgroup v1 devices.allow /
    devices.deny); a run of rules to the same file is written through one fd."""
    write_value(os.path.join(path, "devices.deny"), "a", "devices", "deny all")
    start = 0
    while start < len(rules):
        allow = rules[start].allow
        end = start
        while end < len(rules) and rules[end].allow == allow:
            end += 1
        texts = [_text(rule) for rule in rules[start:end]]
        write_values(os.path.join(path, "devices.allow" if allow else "devices.deny"),
                     [(text, "devices", text) for text in texts])
        start = end


_warned: List[bool] = []

# The device program's context: the device type and the access bits it asks for.
_DEVCG: Dict[str, Dict[str, int]] = {
    "type": {"b": lib.BPF_DEVCG_DEV_BLOCK, "c": lib.BPF_DEVCG_DEV_CHAR},
    "access": {"m": lib.BPF_DEVCG_ACC_MKNOD, "r": lib.BPF_DEVCG_ACC_READ, "w": lib.BPF_DEVCG_ACC_WRITE},
}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def device_program(rules: Sequence[DeviceRule]) -> bytes:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program deciding as the last matching
    rule says: the rules are tested from the last one back, and the first
    that matches the device's type, major and minor returns -- an allow 1
    when it grants every access asked (else the test goes on), a deny 0 when
    it takes any access asked. No matching rule: 0 (deny)."""
    ldxw, exit_ = lib.BPF_LDX | lib.BPF_W | lib.BPF_MEM, lib.BPF_JMP | lib.BPF_EXIT
    mov_x, mov_k = lib.BPF_ALU64 | lib.BPF_MOV | lib.BPF_X, lib.BPF_ALU64 | lib.BPF_MOV | lib.BPF_K
    and_k, rsh_k = lib.BPF_ALU64 | lib.BPF_AND | lib.BPF_K, lib.BPF_ALU64 | lib.BPF_RSH | lib.BPF_K
    jne_k, jeq_k = lib.BPF_JMP | lib.BPF_JNE | lib.BPF_K, lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K
    names = _DEVCG
    all_access = sum(names["access"].values())
    prog = [
        _insn(ldxw, dst=2, src=1, off=lib.PX_DEVCG_ACCESS_OFFSET),  # r2 = ctx->access_type
        _insn(mov_x, dst=3, src=2),                                 # r3 = r2 & 0xffff: the device type
        _insn(and_k, dst=3, imm=0xFFFF),
        _insn(rsh_k, dst=2, imm=16),                                # r2 >>= 16: the access bits
        _insn(ldxw, dst=4, src=1, off=lib.PX_DEVCG_MAJOR_OFFSET),   # r4 = major
        _insn(ldxw, dst=5, src=1, off=lib.PX_DEVCG_MINOR_OFFSET),   # r5 = minor
    ]
    for rule in reversed(rules):
        if (rule.kind not in names["type"] and rule.kind != "a") or set(rule.permissions) - set(names["access"]):
            raise ConfigError("devices", rule.text(), "is not a device rule (a|b|c, permissions of rwm)")
        checks = []
        if rule.kind != "a":  # "a" matches every device
            checks = [(3, names["type"][rule.kind])]
            checks += [(4, rule.major)] if rule.major is not None else []
            checks += [(5, rule.minor)] if rule.minor is not None else []
        rule_access = sum(names["access"][p] for p in set(rule.permissions))
        length = len(checks) + 3 + 2  # the checks, the access test, the return
        for i, (reg, value) in enumerate(checks):
            prog.append(_insn(jne_k, dst=reg, off=length - i - 1, imm=value))  # no match: next rule
        if rule.allow:  # asks for an access the rule does not grant: next rule
            prog += [_insn(mov_x, dst=6, src=2), _insn(and_k, dst=6, imm=~rule_access & all_access),
                     _insn(jne_k, dst=6, off=2, imm=0)]
        else:  # asks for none of the accesses the rule takes: next rule
            prog += [_insn(mov_x, dst=6, src=2), _insn(and_k, dst=6, imm=rule_access),
                     _insn(jeq_k, dst=6, off=2, imm=0)]
        prog += [_insn(mov_k, dst=0, imm=int(rule.allow)), _insn(exit_)]
    prog += [_insn(mov_k, dst=0, imm=0), _insn(exit_)]
    return b"".join(prog)


def _bpf(cmd: int, attr: Any) -> int:
    """bpf(2) ``cmd`` with the union bpf_attr in ``attr`` (a cffi char[] of PX_BPF_ATTR_SIZE)."""
    nr = getattr(lib, "__NR_bpf", None)
    if nr is None:
        raise OSError(errno.ENOSYS, f"this architecture ({platform.machine()}) has no bpf(2)")
    ret = lib.syscall(nr, cmd, attr, len(attr))
    if ret < 0:
        err = ffi.errno
        raise OSError(err, os.strerror(err))
    return int(ret)


def _address(buffer: Any) -> int:
    """The address of a cffi buffer (cdata), for a __u64 pointer field of bpf_attr."""
    return int(ffi.cast("uintptr_t", buffer))


def _attach_device_program(path: str, rules: Sequence[DeviceRule]) -> None:
    code = device_program(rules)
    insns = ffi.from_buffer(code)  # the kernel copies the program during BPF_PROG_LOAD; ``code`` outlives it
    license_ = ffi.new("char[]", b"GPL")
    verifier_log = ffi.new("char[]", 65536)
    attr = ffi.new("char[]", lib.PX_BPF_ATTR_SIZE)  # zeroed: every field not set here is 0
    for fmt, offset, value in (("=I", lib.PX_BPF_LOAD_TYPE_OFFSET, lib.BPF_PROG_TYPE_CGROUP_DEVICE),
                               ("=I", lib.PX_BPF_LOAD_INSN_CNT_OFFSET, len(code) // 8),
                               ("=Q", lib.PX_BPF_LOAD_INSNS_OFFSET, _address(insns)),
                               ("=Q", lib.PX_BPF_LOAD_LICENSE_OFFSET, _address(license_)),
                               ("=I", lib.PX_BPF_LOAD_LOG_LEVEL_OFFSET, 1),
                               ("=I", lib.PX_BPF_LOAD_LOG_SIZE_OFFSET, len(verifier_log)),
                               ("=Q", lib.PX_BPF_LOAD_LOG_BUF_OFFSET, _address(verifier_log)),
                               ("16s", lib.PX_BPF_LOAD_NAME_OFFSET, b"pyexec_devices")):
        struct.pack_into(fmt, ffi.buffer(attr), offset, value)
    try:
        prog_fd = _bpf(lib.BPF_PROG_LOAD, attr)
    except OSError as exc:
        text = ffi.string(verifier_log).decode(errors="replace").strip().splitlines()
        if text:
            exc.strerror = f"{exc.strerror} (verifier: {text[-1]})"
        raise
    try:
        cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attach = ffi.new("char[]", lib.PX_BPF_ATTR_SIZE)
            for offset, value in ((lib.PX_BPF_ATTACH_TARGET_OFFSET, cgroup_fd),
                                  (lib.PX_BPF_ATTACH_FD_OFFSET, prog_fd),
                                  (lib.PX_BPF_ATTACH_TYPE_OFFSET, lib.BPF_CGROUP_DEVICE),
                                  (lib.PX_BPF_ATTACH_FLAGS_OFFSET, lib.BPF_F_ALLOW_MULTI)):
                struct.pack_into("=I", ffi.buffer(attach), offset, value)
            _bpf(lib.BPF_PROG_ATTACH, attach)
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(prog_fd)  # the cgroup holds the program now, until it is removed


def set_devices_v2(path: str, rules: Sequence[DeviceRule]) -> None:
    """Attach the eBPF device program for ``rules`` to the cgroup at ``path``;
    when bpf(2) is refused, warn once that the rules are not enforced."""
    try:
        _attach_device_program(path, rules)
        log.debug("attached a device program (%d rules) to %s", len(rules), path)
    except OSError as exc:
        if not _warned:
            _warned.append(True)
            log.warning("cgroup v2: device rules are not enforced: loading the eBPF device program "
                        "failed (%s); the task's /dev still holds only the allowed nodes", exc)
