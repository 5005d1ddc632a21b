"""Seccomp: the BPF generator (checked by a small BPF interpreter here), the
default profile and JSON profiles, in real container tasks (root only).

The interpreter runs a compiled program over a hand-made struct seccomp_data,
so argument comparisons, the arch / x32 checks and rule order are checked for
every combination, and the kernel tests show the same programs load and act.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import signal
import struct
import sys

import pytest

from pyexec import Isolation
from pyexec._shim import lib
from pyexec.caps import DEFAULT_CAPABILITIES
from pyexec.errors import ConfigError
from pyexec.seccomp import (MAX_INSNS, compile_profile, default_profile, filter_for, instructions,
                            load_profile, syscall_number)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="container tasks need root")
PY = "/usr/bin/python3"
needs_python = pytest.mark.skipif(not os.path.exists(PY), reason="needs /usr/bin/python3 (seen through /usr)")

ALLOW = lib.SECCOMP_RET_ALLOW
KILL_PROCESS = lib.SECCOMP_RET_KILL_PROCESS
HEADER = 6 if lib.PX_X32_SYSCALL_BIT else 4      # arch check, load nr, (x32 check)
GETPPID = syscall_number("getppid")
GETCWD = syscall_number("getcwd")
U64 = (1 << 64) - 1


def errno_ret(err: int) -> int:
    return lib.SECCOMP_RET_ERRNO | err


# -- a classic BPF interpreter, as far as seccomp filters go ---------------------------------

def emulate(program: bytes, nr: int, args=(), arch: int = None) -> int:
    """What the kernel's filter would return for this syscall (checked like the kernel does)."""
    args = list(args) + [0] * (6 - len(args))
    data = struct.pack("=IIQ6Q", nr & 0xFFFFFFFF, lib.PX_AUDIT_ARCH if arch is None else arch, 0, *args)
    insns = instructions(program)
    assert 0 < len(insns) <= MAX_INSNS
    assert insns[-1][0] == lib.BPF_RET | lib.BPF_K
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == lib.BPF_LD | lib.BPF_W | lib.BPF_ABS:
            assert k % 4 == 0 and k + 4 <= len(data)
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == lib.BPF_ALU | lib.BPF_AND | lib.BPF_K:
            acc &= k
            pc += 1
        elif code == lib.BPF_JMP | lib.BPF_JA:
            pc += 1 + k
        elif code & 0x07 == lib.BPF_JMP:
            test = {lib.BPF_JEQ: acc == k, lib.BPF_JGT: acc > k, lib.BPF_JGE: acc >= k,
                    lib.BPF_JSET: acc & k != 0}[code & 0xF0]
            pc += 1 + (jt if test else jf)
        elif code == lib.BPF_RET | lib.BPF_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")
        assert pc < len(insns), "jumped past the end"


def profile(*rules, default="SCMP_ACT_ALLOW", **extra) -> dict:
    return {"defaultAction": default, "syscalls": list(rules), **extra}


def rule(names, action="SCMP_ACT_ERRNO", **fields) -> dict:
    return {"names": [names] if isinstance(names, str) else list(names), "action": action, **fields}


def arg(index, op, value, value_two=0) -> dict:
    return {"index": index, "op": op, "value": value, "valueTwo": value_two}


# -- the compiler ----------------------------------------------------------------------------

def test_offsets_are_the_kernel_layout():
    assert (lib.PX_SECCOMP_NR_OFFSET, lib.PX_SECCOMP_ARCH_OFFSET, lib.PX_SECCOMP_ARGS_OFFSET) == (0, 4, 16)


def test_tiny_profile_is_header_rule_and_default():
    program = compile_profile(profile(rule("getcwd", errnoRet=1)))
    insns = instructions(program)
    assert len(insns) == HEADER + 2 + 1
    assert insns[HEADER] == (lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K, 0, 1, GETCWD)
    assert insns[HEADER + 1] == (lib.BPF_RET | lib.BPF_K, 0, 0, errno_ret(1))
    assert insns[-1] == (lib.BPF_RET | lib.BPF_K, 0, 0, ALLOW)
    assert emulate(program, GETCWD) == errno_ret(1)
    assert emulate(program, GETPPID) == ALLOW


def test_foreign_arch_is_killed():
    program = compile_profile(profile())
    insns = instructions(program)
    assert insns[0] == (lib.BPF_LD | lib.BPF_W | lib.BPF_ABS, 0, 0, lib.PX_SECCOMP_ARCH_OFFSET)
    assert insns[1][0] == lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K and insns[1][3] == lib.PX_AUDIT_ARCH
    assert emulate(program, GETPPID, arch=0x40000003) == KILL_PROCESS          # AUDIT_ARCH_I386
    assert emulate(program, GETPPID) == ALLOW


@pytest.mark.skipif(not lib.PX_X32_SYSCALL_BIT, reason="no x32 ABI on this architecture")
def test_x32_numbers_are_killed_but_minus_one_is_not():
    program = compile_profile(profile(rule("getcwd")))
    assert instructions(program)[3] == (lib.BPF_JMP | lib.BPF_JSET | lib.BPF_K, 0, 2, lib.PX_X32_SYSCALL_BIT)
    assert emulate(program, lib.PX_X32_SYSCALL_BIT | GETPPID) == KILL_PROCESS
    assert emulate(program, lib.PX_X32_SYSCALL_BIT | GETCWD) == KILL_PROCESS
    assert emulate(program, -1) == ALLOW                  # the kernel answers it with ENOSYS


VALUES = [0, 1, 5, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 32) + 5, 0x1FFFFFFFF, 2 << 32,
          1 << 63, U64 - 1, U64]
REFERENCE = {
    "SCMP_CMP_EQ": lambda a, v, v2: a == v,
    "SCMP_CMP_NE": lambda a, v, v2: a != v,
    "SCMP_CMP_LT": lambda a, v, v2: a < v,
    "SCMP_CMP_LE": lambda a, v, v2: a <= v,
    "SCMP_CMP_GT": lambda a, v, v2: a > v,
    "SCMP_CMP_GE": lambda a, v, v2: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, v, v2: a & v == v2,
}


@pytest.mark.parametrize("op", sorted(REFERENCE))
@pytest.mark.parametrize("index", [0, 5])
def test_64_bit_comparisons_against_python(op, index):
    for value in VALUES:
        value_two = value & 0xF0000000F if op == "SCMP_CMP_MASKED_EQ" else 0
        program = compile_profile(profile(rule("getppid", errnoRet=7, args=[arg(index, op, value, value_two)])))
        for a in VALUES + [value_two]:
            args = [0] * 6
            args[index] = a
            want = errno_ret(7) if REFERENCE[op](a, value, value_two) else ALLOW
            assert emulate(program, GETPPID, args) == want, (op, hex(a), hex(value))


def test_conditions_on_different_args_are_anded():
    program = compile_profile(profile(rule("getppid", args=[arg(0, "SCMP_CMP_EQ", 1), arg(1, "SCMP_CMP_GT", 1 << 40)])))
    assert emulate(program, GETPPID, [1, (1 << 40) + 1]) == errno_ret(errno.EPERM)
    assert emulate(program, GETPPID, [1, 1 << 40]) == ALLOW
    assert emulate(program, GETPPID, [2, 1 << 41]) == ALLOW


def test_one_index_twice_means_either_condition():
    # runc's reading: such conditions become separate rules (OR).
    program = compile_profile(profile(rule("getppid", args=[arg(0, "SCMP_CMP_EQ", 3), arg(0, "SCMP_CMP_EQ", 1 << 33)])))
    assert emulate(program, GETPPID, [3]) == errno_ret(errno.EPERM)
    assert emulate(program, GETPPID, [1 << 33]) == errno_ret(errno.EPERM)
    assert emulate(program, GETPPID, [4]) == ALLOW


def test_first_matching_rule_wins_and_failed_args_fall_through():
    program = compile_profile(profile(
        rule("getppid", "SCMP_ACT_ALLOW", args=[arg(0, "SCMP_CMP_LT", 10)]),
        rule(["getcwd", "getppid"], errnoRet=5),
        rule("getppid", errnoRet=6),
        default="SCMP_ACT_KILL_PROCESS"))
    assert emulate(program, GETPPID, [3]) == ALLOW
    assert emulate(program, GETPPID, [1 << 32]) == errno_ret(5)
    assert emulate(program, GETCWD) == errno_ret(5)
    assert emulate(program, syscall_number("getpid")) == KILL_PROCESS


def test_actions_and_errno_defaults():
    names = ["getpid", "getppid", "getuid", "getgid", "geteuid", "getegid", "gettid"]
    actions = ["SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
               "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_ERRNO"]
    program = compile_profile(profile(*(rule(n, a) for n, a in zip(names, actions)),
                                      default="SCMP_ACT_ERRNO", defaultErrnoRet=errno.ENOSYS))
    want = [ALLOW, lib.SECCOMP_RET_KILL_THREAD, lib.SECCOMP_RET_KILL_THREAD, KILL_PROCESS,
            lib.SECCOMP_RET_TRAP, lib.SECCOMP_RET_LOG, errno_ret(errno.EPERM)]
    assert [emulate(program, syscall_number(n)) for n in names] == want
    assert emulate(program, GETCWD) == errno_ret(errno.ENOSYS)
    traced = compile_profile(profile(rule("getpid", "SCMP_ACT_TRACE", errnoRet=42)))
    assert emulate(traced, syscall_number("getpid")) == lib.SECCOMP_RET_TRACE | 42


def test_names_this_arch_lacks_are_skipped():
    program = compile_profile(profile(rule(["no_such_call", "getcwd", "_llseek"]), rule(["only_elsewhere"])))
    assert len(instructions(program)) == HEADER + 2 + 1
    assert emulate(program, GETCWD) == errno_ret(errno.EPERM)


def test_jumps_stay_short_in_a_300_rule_profile():
    rules = [rule("getppid", errnoRet=i + 1, args=[arg(0, "SCMP_CMP_EQ", i * 0x100000001)]) for i in range(300)]
    program = compile_profile(profile(*rules))
    insns = instructions(program)
    assert len(insns) > 1000                              # far more than one 8-bit jump reaches
    assert all(jt <= 255 and jf <= 255 for _, jt, jf, _ in insns)
    for i in (0, 1, 150, 299):
        assert emulate(program, GETPPID, [i * 0x100000001]) == errno_ret(i + 1)
    assert emulate(program, GETPPID, [7]) == ALLOW


def test_a_rule_with_every_syscall_is_chunked():
    names = [n[len("__NR_"):] for n in dir(lib) if n.startswith("__NR_")]
    program = compile_profile(profile(rule(names, "SCMP_ACT_ALLOW"), default="SCMP_ACT_ERRNO"))
    assert len(names) > 255
    for name in names:
        assert emulate(program, syscall_number(name)) == ALLOW
    assert emulate(program, 4000) == errno_ret(errno.EPERM)


# -- Docker's format ------------------------------------------------------------------------

GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def test_docker_includes_and_excludes():
    prof = profile(
        rule("getpid", includes={"caps": ["CAP_SYS_ADMIN"]}),
        rule("getppid", excludes={"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}),
        rule("getuid", includes={"arches": [GOARCH]}),
        rule("getgid", excludes={"arches": [GOARCH]}),
        rule("geteuid", includes={"minKernel": "3.0"}),
        rule("getegid", includes={"minKernel": "999.0"}),
        archMap=[{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}])
    denied = errno_ret(errno.EPERM)

    def outcome(caps):
        program = compile_profile(prof, caps)
        return [emulate(program, syscall_number(n)) == denied
                for n in ("getpid", "getppid", "getuid", "getgid", "geteuid", "getegid")]
    assert outcome(DEFAULT_CAPABILITIES) == [False, True, True, False, True, False]
    assert outcome(["CAP_SYS_ADMIN"]) == [True, False, True, False, True, False]
    assert outcome(["CAP_BPF"]) == [False, False, True, False, True, False]


# -- the default profile ---------------------------------------------------------------------

def default_program(caps=DEFAULT_CAPABILITIES) -> bytes:
    return compile_profile(default_profile(), caps)


NEW_NS = lib.CLONE_NEWUSER
SIGCHLD = signal.SIGCHLD


def test_default_profile_denies_escapes_and_allows_the_rest():
    program = default_program()
    eperm = errno_ret(errno.EPERM)
    for name in ("kexec_load", "open_by_handle_at", "init_module", "finit_module", "bpf", "perf_event_open",
                 "keyctl", "add_key", "ptrace", "mount", "umount2", "unshare", "setns", "pivot_root",
                 "fsopen", "open_tree", "move_mount", "io_uring_setup", "userfaultfd", "reboot", "swapon",
                 "settimeofday", "clock_settime", "syslog", "iopl", "mbind", "acct"):
        if syscall_number(name) is not None:
            assert emulate(program, syscall_number(name)) == eperm, name
    for name in ("read", "write", "openat", "execve", "mmap", "getcwd", "chroot", "setuid", "capset",
                 "prctl", "close_range", "rt_sigaction", "wait4", "clock_gettime", "adjtimex"):
        assert emulate(program, syscall_number(name)) == ALLOW, name
    clone = syscall_number("clone")
    assert emulate(program, clone, [SIGCHLD]) == ALLOW                                  # fork
    assert emulate(program, clone, [0x3D0F00]) == ALLOW                                 # pthread_create
    for flag in ("CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWCGROUP"):
        assert emulate(program, clone, [getattr(lib, flag) | SIGCHLD]) == eperm, flag
    assert emulate(program, syscall_number("clone3")) == errno_ret(errno.ENOSYS)
    personality = syscall_number("personality")
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert emulate(program, personality, [persona]) == ALLOW
    assert emulate(program, personality, [0x0040000]) == eperm                          # ADDR_NO_RANDOMIZE


def test_default_profile_follows_the_capabilities():
    admin = default_program(DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN",))
    for name in ("mount", "unshare", "setns", "bpf", "perf_event_open", "clone3", "syslog"):
        assert emulate(admin, syscall_number(name)) == ALLOW, name
    assert emulate(admin, syscall_number("clone"), [NEW_NS]) == ALLOW
    assert emulate(admin, syscall_number("kexec_load")) == errno_ret(errno.EPERM)       # never
    assert emulate(admin, syscall_number("keyctl")) == errno_ret(errno.EPERM)
    ptrace = default_program(("CAP_SYS_PTRACE",))
    assert emulate(ptrace, syscall_number("ptrace")) == ALLOW
    assert emulate(ptrace, syscall_number("mount")) == errno_ret(errno.EPERM)
    no_chroot = default_program(())
    assert emulate(no_chroot, syscall_number("chroot")) == errno_ret(errno.EPERM)


def test_filter_for():
    assert filter_for(Isolation(seccomp=None), DEFAULT_CAPABILITIES) is None
    assert filter_for(Isolation(), DEFAULT_CAPABILITIES) == default_program()


# -- bad profiles ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad, reason", [
    ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown action 'SCMP_ACT_NOPE'"),
    (profile(rule("getcwd", "SCMP_ACT_WHATEVER")), r"syscalls\[0\]: unknown action"),
    (profile(rule("getcwd", args=[arg(0, "SCMP_CMP_ABOUT", 1)])), "unknown comparison op 'SCMP_CMP_ABOUT'"),
    (profile(rule("getcwd", args=[arg(6, "SCMP_CMP_EQ", 1)])), "argument index 6 is not 0..5"),
    (profile(rule("getcwd", args=[arg(0, "SCMP_CMP_EQ", -1)])), "is not an unsigned 64-bit integer"),
    (profile(rule("getcwd", errnoRet=70000)), "errnoRet 70000 is not an errno number"),
    (profile(rule("getcwd", "SCMP_ACT_NOTIFY")), "SCMP_ACT_NOTIFY needs a seccomp agent"),
    (profile({"action": "SCMP_ACT_ALLOW"}), "names must be a non-empty list"),
    (profile(rule("getcwd", includes={"minKernel": "six"})), "minKernel 'six'"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_profiles_name_the_problem(bad, reason):
    with pytest.raises(ConfigError, match=reason) as info:
        compile_profile(bad, source="/p.json")
    assert info.value.field == "seccomp" and info.value.value == "/p.json"


def test_too_many_instructions():
    rules = [rule("getppid", args=[arg(i, "SCMP_CMP_GT", n) for i in range(6)]) for n in range(200)]
    with pytest.raises(ConfigError, match=rf"compiles to \d+ BPF instructions, more than the kernel's limit of {MAX_INSNS}"):
        compile_profile(profile(*rules))


def test_profile_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_profile(str(path))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_profile(str(tmp_path / "missing.json"))
    path.write_text(json.dumps(profile(rule("getcwd"))))
    assert load_profile(str(path))["syscalls"][0]["names"] == ["getcwd"]


# -- in real container tasks -----------------------------------------------------------------

def py(script: str, *args: str):
    return [PY, "-c", script, *args]


SYSCALL = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return r, ctypes.get_errno()
"""


def write_profile(tmp_path, prof, name="profile.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(prof))
    return str(path)


@needs_root
@needs_python
def test_default_profile_blocks_the_escape_syscalls(run):
    names = ["open_by_handle_at", "init_module", "finit_module", "kexec_load", "bpf", "keyctl", "add_key",
             "perf_event_open", "ptrace", "setns", "unshare", "mount", "io_uring_setup"]
    numbers = {n: syscall_number(n) for n in names}
    script = SYSCALL + "print(json.dumps({n: call(nr, 0, 0, 0, 0, 0) for n, nr in json.loads(sys.argv[1]).items()}))"
    result, out, err = run(py(script, json.dumps(numbers)))
    assert result.exit_code == 0, err
    assert json.loads(out) == {n: [-1, errno.EPERM] for n in names}


@needs_root
def test_default_profile_blocks_namespaces_and_mounts(run):
    result, out, err = run(["sh", "-c", "unshare -U true; echo U=$?; unshare -Ur unshare -m true; echo Ur=$?; "
                            "unshare -m true; echo m=$?; mount -t tmpfs x /tmp; echo mount=$?"])
    assert out.split() == ["U=1", "Ur=1", "m=1", "mount=32"], err
    assert err.count("unshare failed: Operation not permitted") == 3


@needs_root
def test_without_seccomp_a_user_namespace_regains_capabilities(run):
    # The escape the default profile is there for: new user namespace, then full caps in it.
    result, out, err = run(["sh", "-c", "unshare -Ur unshare -m true; echo Ur=$?"],
                           isolation=Isolation(seccomp=None))
    assert out.split() == ["Ur=0"], err


@needs_root
@needs_python
def test_plain_programs_threads_and_fork_work(run):
    script = ("import os, threading; t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
              "pid = os.fork()\n"
              "if pid == 0: os._exit(7)\n"
              "print('child', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    result, out, err = run(["sh", "-c", f"ls / >/dev/null && cat /proc/self/status >/dev/null && date >/dev/null "
                                        f"&& {PY} -c \"$0\"", script])
    assert result.exit_code == 0, err
    assert out.split("\n")[:2] == ["thread", "child 7"]


@needs_root
@needs_python
@pytest.mark.parametrize("seccomp, want", [("default", errno.ENOSYS), (None, errno.EINVAL)])
def test_clone3_says_enosys_so_glibc_falls_back(run, seccomp, want):
    script = SYSCALL + f"print(*call({syscall_number('clone3')}, 0, 0))"
    result, out, err = run(py(script), isolation=Isolation(seccomp=seccomp))
    assert out.split() == ["-1", str(want)], err


@needs_root
@needs_python
def test_default_filter_also_without_no_new_privs(run):
    # Loaded before the capabilities drop then: the kernel wants CAP_SYS_ADMIN without no_new_privs.
    script = SYSCALL + f"print(*call({syscall_number('keyctl')}, 0, 0))"
    for user in (None, "nobody"):
        result, out, err = run(py(script), user=user, isolation=Isolation(no_new_privs=False))
        assert out.split() == ["-1", str(errno.EPERM)], err


@needs_root
@needs_python
def test_an_oci_profile_file(run, tmp_path):
    path = write_profile(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                    "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
    result, out, err = run(py("import os; os.getcwd()"), isolation=Isolation(seccomp=path))
    assert result.exit_code == 1 and "PermissionError: [Errno 1]" in err
    result, out, err = run(["sh", "-c", "unshare -U true && echo unshared"], isolation=Isolation(seccomp=path))
    assert out.strip() == "unshared"                      # the file replaces the default profile


@needs_root
@needs_python
def test_a_docker_profile_file_with_includes_caps(run, tmp_path):
    path = write_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": [n[len("__NR_"):] for n in dir(lib) if n.startswith("__NR_") and n != "__NR_getcwd"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_NICE"]}},
        ]})
    probe = py("import os; print(os.getcwd())")
    result, out, err = run(probe, isolation=Isolation(seccomp=path))
    assert result.exit_code == 1 and "PermissionError: [Errno 1]" in err
    result, out, err = run(probe, isolation=Isolation(seccomp=path, capabilities=DEFAULT_CAPABILITIES + ("CAP_SYS_NICE",)))
    assert (result.exit_code, out) == (0, "/\n"), err


@needs_root
@needs_python
def test_64_bit_comparisons_in_the_kernel(run, tmp_path):
    # getppid ignores its arguments, and the filter sees them: arg1 picks the op, arg0 is compared.
    ops = sorted(REFERENCE)
    pivot, mask_want = (1 << 32) + 5, 5
    rules = [rule("getppid", errnoRet=100 + k, args=[arg(1, "SCMP_CMP_EQ", k), arg(0, op, pivot, mask_want)])
             for k, op in enumerate(ops)]
    path = write_profile(tmp_path, profile(*rules))
    script = SYSCALL + (f"print(json.dumps([[call({GETPPID}, a, k)[1] for a in json.loads(sys.argv[1])] "
                        f"for k in range({len(ops)})]))")
    result, out, err = run(py(script, json.dumps(VALUES)), isolation=Isolation(seccomp=path))
    assert result.exit_code == 0, err
    got = json.loads(out)
    for k, op in enumerate(ops):
        want = [100 + k if REFERENCE[op](a, pivot, mask_want) else 0 for a in VALUES]
        assert got[k] == want, op


@needs_root
@needs_python
def test_a_300_rule_profile_loads_and_works(run, tmp_path):
    rules = [rule("getppid", errnoRet=i + 1, args=[arg(0, "SCMP_CMP_EQ", i * 0x100000001)]) for i in range(300)]
    path = write_profile(tmp_path, profile(*rules, rule("getppid", errnoRet=errno.EACCES)))
    values = [i * 0x100000001 for i in (0, 1, 150, 299)] + [7]
    script = SYSCALL + f"print(*[call({GETPPID}, a)[1] for a in {values}])"
    result, out, err = run(py(script), isolation=Isolation(seccomp=path))
    assert out.split() == ["1", "2", "151", "300", str(errno.EACCES)], err


@needs_root
@needs_python
@pytest.mark.skipif(not lib.PX_X32_SYSCALL_BIT, reason="no x32 ABI on this architecture")
def test_x32_syscall_numbers_kill_the_task(run):
    script = SYSCALL + f"print(*call(-1)); sys.stdout.flush(); call({lib.PX_X32_SYSCALL_BIT | GETPPID})"
    result, out, err = run(py(script), isolation=Isolation(rlimits={"core": (0, 0)}))
    assert out.split() == ["-1", str(errno.ENOSYS)]
    assert result.signal == signal.SIGSYS


@needs_root
@needs_python
@pytest.mark.skipif(platform.machine() != "x86_64", reason="i386 int 0x80 is x86_64's foreign ABI")
def test_the_i386_abi_kills_the_task(run):
    # mov eax, 20 (i386 getpid); int 0x80; ret — from an executable page.
    script = ("import ctypes, mmap, sys\n"
              "page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
              "page.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))\n"
              "addr = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
              "print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)()); sys.stdout.flush()\n")
    result, out, err = run(py(script), isolation=Isolation(seccomp=None))
    assert result.exit_code == 0 and out.strip() == "2", err          # the task's pid, through the i386 ABI
    result, out, err = run(py(script), isolation=Isolation(rlimits={"core": (0, 0)}))
    assert result.signal == signal.SIGSYS and out == ""


@needs_root
@needs_python
def test_kill_process_action(run, tmp_path):
    path = write_profile(tmp_path, profile(rule("getppid", "SCMP_ACT_KILL_PROCESS")))
    result, out, err = run(py("import os; print('before', flush=True); os.getppid(); print('after')"),
                           isolation=Isolation(seccomp=path, rlimits={"core": (0, 0)}))
    assert out == "before\n" and result.signal == signal.SIGSYS


@needs_root
@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not JSON"),
    (json.dumps(profile(rule("getcwd", "SCMP_ACT_BOGUS"))), "unknown action 'SCMP_ACT_BOGUS'"),
    (json.dumps(profile(rule("getcwd", args=[arg(0, "SCMP_CMP_SOMETIMES", 1)]))), "unknown comparison op"),
    (json.dumps(profile(*[rule("getppid", args=[arg(i, "SCMP_CMP_LT", n) for i in range(6)]) for n in range(200)])),
     "more than the kernel's limit"),
])
def test_bad_profile_files_fail_before_anything_exists(run, tmp_path, task_dir, content, reason):
    path = write_profile(tmp_path, {}, "bad.json")
    with open(path, "w") as f:
        f.write(content)
    with pytest.raises(ConfigError, match=reason) as info:
        run(["true"], isolation=Isolation(seccomp=path))
    assert info.value.field == "seccomp" and info.value.value == path
    assert list(task_dir.iterdir()) == []
    assert not any(p.name.endswith((".stdout", ".stderr")) for p in tmp_path.iterdir())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
