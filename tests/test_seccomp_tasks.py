"""Seccomp filters in real tasks (root: container tasks), and the shim's
seccomp(2) flags: the default profile blocks the escapes and lets ordinary
programs run, profile files (OCI and Docker) act as their rules say, the
compat ABIs are killed unless a profile lists them, and bad profiles fail
before anything exists.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import signal

import pytest

from pyexec import Isolation, LaunchError
from pyexec.caps import DEFAULT_CAPABILITIES
from pyexec.errors import ConfigError
from pyexec.native import lib
from pyexec.seccomp import compile_profile, instructions, syscall_number
from pyexec.shim import SpawnPlan, abort, finish, spawn
from support.profiles import (
    COMPARISON_OPS,
    LONG_JUMP_PROBES,
    MAGIC,
    PIVOT,
    PY,
    REFERENCE,
    SYSCALL,
    VALUES,
    arg,
    comparisons_profile,
    long_jumps_profile,
    profile,
    py,
    rule,
    three_hundred_rules,
    write_profile,
)

needs_python = pytest.mark.skipif(not os.path.exists(PY), reason="needs /usr/bin/python3 (seen through /usr)")
GETPPID = syscall_number("getppid")


@pytest.mark.needs_root
@needs_python
def test_default_profile_blocks_the_escape_syscalls(run):
    names = ["open_by_handle_at", "init_module", "finit_module", "kexec_load", "bpf", "keyctl", "add_key",
             "perf_event_open", "ptrace", "setns", "unshare", "mount", "io_uring_setup"]
    numbers = {n: syscall_number(n) for n in names}
    script = SYSCALL + "print(json.dumps({n: call(nr, 0, 0, 0, 0, 0) for n, nr in json.loads(sys.argv[1]).items()}))"
    result, out, err = run(py(script, json.dumps(numbers)))
    assert result.exit_code == 0, err
    assert json.loads(out) == {n: [-1, errno.EPERM] for n in names}


@pytest.mark.needs_root
def test_default_profile_blocks_namespaces_and_mounts(run):
    result, out, err = run(["sh", "-c", "unshare -U true; echo U=$?; unshare -Ur unshare -m true; echo Ur=$?; "
                            "unshare -m true; echo m=$?; mount -t tmpfs x /tmp; echo mount=$?"])
    assert out.split() == ["U=1", "Ur=1", "m=1", "mount=32"], err
    assert err.count("unshare failed: Operation not permitted") == 3


@pytest.mark.needs_root
def test_without_seccomp_a_user_namespace_regains_capabilities(run):
    # The escape the default profile is there for: new user namespace, then full caps in it.
    result, out, err = run(["sh", "-c", "unshare -Ur unshare -m true; echo Ur=$?"],
                           isolation=Isolation(seccomp=None))
    assert out.split() == ["Ur=0"], err


@pytest.mark.needs_root
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


@pytest.mark.needs_root
@needs_python
@pytest.mark.parametrize("seccomp, want", [("default", errno.ENOSYS), (None, errno.EINVAL)])
def test_clone3_says_enosys_so_glibc_falls_back(run, seccomp, want):
    script = SYSCALL + f"print(*call({syscall_number('clone3')}, 0, 0))"
    result, out, err = run(py(script), isolation=Isolation(seccomp=seccomp))
    assert out.split() == ["-1", str(want)], err


@pytest.mark.needs_root
@needs_python
def test_default_filter_also_without_no_new_privs(run):
    # Loaded before the capabilities drop then: the kernel wants CAP_SYS_ADMIN without no_new_privs.
    script = SYSCALL + f"print(*call({syscall_number('keyctl')}, 0, 0))"
    for user in (None, "nobody"):
        result, out, err = run(py(script), user=user, isolation=Isolation(no_new_privs=False))
        assert out.split() == ["-1", str(errno.EPERM)], err


@pytest.mark.needs_root
@needs_python
def test_an_oci_profile_file(run, tmp_path):
    path = write_profile(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                    "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
    result, out, err = run(py("import os; os.getcwd()"), isolation=Isolation(seccomp=path))
    assert result.exit_code == 1 and "PermissionError: [Errno 1]" in err
    result, out, err = run(["sh", "-c", "unshare -U true && echo unshared"], isolation=Isolation(seccomp=path))
    assert out.strip() == "unshared"                      # the file replaces the default profile


@pytest.mark.needs_root
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
    more = DEFAULT_CAPABILITIES + ("CAP_SYS_NICE",)
    result, out, err = run(probe, isolation=Isolation(seccomp=path, capabilities=more))
    assert (result.exit_code, out) == (0, "/\n"), err


@pytest.mark.needs_root
@needs_python
def test_64_bit_comparisons_in_the_kernel(run, tmp_path):
    # getppid ignores its arguments, and the filter sees them: arg0 picks the op, arg1 is compared.
    ops, pivot, mask_want = COMPARISON_OPS, PIVOT, 5
    path = write_profile(tmp_path, comparisons_profile())
    script = SYSCALL + (f"print(json.dumps([[call({GETPPID}, k, a)[1] for a in json.loads(sys.argv[1])] "
                        f"for k in range({len(ops)})]))")
    result, out, err = run(py(script, json.dumps(VALUES)), isolation=Isolation(seccomp=path))
    assert result.exit_code == 0, err
    got = json.loads(out)
    for k, op in enumerate(ops):
        want = [100 + k if REFERENCE[op](a, pivot, mask_want) else 0 for a in VALUES]
        assert got[k] == want, op


@pytest.mark.needs_root
@needs_python
def test_a_300_rule_profile_loads_and_works(run, tmp_path):
    path = write_profile(tmp_path, three_hundred_rules())
    values = [i * 0x100000001 for i in (0, 1, 150, 299)] + [7]
    script = SYSCALL + f"print(*[call({GETPPID}, a)[1] for a in {values}])"
    result, out, err = run(py(script), isolation=Isolation(seccomp=path))
    assert out.split() == ["1", "2", "151", "300", "0"], err


@pytest.mark.needs_root
@needs_python
def test_a_profile_with_long_jumps_loads_and_works(run, tmp_path):
    # Hundreds of calls with conditions, in the kernel. The rules hold only for a sixth
    # argument no call of the task passes, so the task runs; the probes pass it and
    # get their errno without the call being made.
    magic = MAGIC
    probes = [syscall_number(n) for n in LONG_JUMP_PROBES]
    prof = long_jumps_profile()
    assert len(instructions(compile_profile(prof))) > 2 * 255
    script = SYSCALL + (f"print(*[call(nr, 0, 0, 0, 0, 0, {magic})[1] for nr in {probes}]); "
                        f"print(call({GETPPID})[0] > 0)")
    result, out, err = run(py(script), isolation=Isolation(seccomp=write_profile(tmp_path, prof)))
    assert out.split() == [str(1 + nr % 100) for nr in probes] + ["True"], err


@pytest.mark.needs_root
@needs_python
@pytest.mark.skipif(not lib.PX_X32_SYSCALL_BIT, reason="no x32 ABI on this architecture")
def test_x32_syscall_numbers_kill_the_task(run):
    script = SYSCALL + f"print(*call(-1)); sys.stdout.flush(); call({lib.PX_X32_SYSCALL_BIT | GETPPID})"
    result, out, err = run(py(script), isolation=Isolation(rlimits={"core": (0, 0)}))
    assert out.split() == ["-1", str(errno.ENOSYS)]
    assert result.signal == signal.SIGSYS


def i386_calls(*numbers: int) -> str:
    """A script that makes each syscall through the i386 ABI (``int $0x80`` from an
    executable page: mov eax, nr; int 0x80; ret) and prints what eax came back as."""
    return ("import ctypes, mmap, sys\n"
            "page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "addr = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
            f"for nr in {list(numbers)}:\n"
            "    page.seek(0); page.write(bytes([0xb8]) + nr.to_bytes(4, 'little') + bytes([0xcd, 0x80, 0xc3]))\n"
            "    print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)(), flush=True)\n")


I386_GETPID, I386_GETPPID = 20, 64                  # i386's numbers; native 64 is semget


@pytest.mark.needs_root
@needs_python
@pytest.mark.skipif(platform.machine() != "x86_64", reason="i386 int 0x80 is x86_64's foreign ABI")
def test_the_i386_abi_kills_the_task(run):
    result, out, err = run(py(i386_calls(I386_GETPID)), isolation=Isolation(seccomp=None))
    assert result.exit_code == 0 and out.strip() == "2", err          # the task's pid, through the i386 ABI
    result, out, err = run(py(i386_calls(I386_GETPID)), isolation=Isolation(rlimits={"core": (0, 0)}))
    assert result.signal == signal.SIGSYS and out == ""


@pytest.mark.needs_root
@needs_python
@pytest.mark.skipif(platform.machine() != "x86_64", reason="i386 int 0x80 is x86_64's foreign ABI")
def test_a_listed_i386_abi_runs_under_its_own_rules(run, tmp_path):
    # getppid denied by name: i386's 64 gets the errno, i386's getpid (20) runs.
    path = write_profile(tmp_path, profile(rule("getppid", errnoRet=5),
                                           architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]))
    result, out, err = run(py(i386_calls(I386_GETPID, I386_GETPPID)), isolation=Isolation(seccomp=path))
    assert result.exit_code == 0 and out.split() == ["2", "-5"], err


@pytest.mark.needs_root
@needs_python
def test_kill_process_action(run, tmp_path):
    path = write_profile(tmp_path, profile(rule("getppid", "SCMP_ACT_KILL_PROCESS")))
    result, out, err = run(py("import os; print('before', flush=True); os.getppid(); print('after')"),
                           isolation=Isolation(seccomp=path, rlimits={"core": (0, 0)}))
    assert out == "before\n" and result.signal == signal.SIGSYS


@pytest.mark.needs_root
@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not JSON"),
    (json.dumps(profile(rule("getcwd", "SCMP_ACT_BOGUS"))), "unknown action 'SCMP_ACT_BOGUS'"),
    (json.dumps(profile(rule("getcwd", args=[arg(0, "SCMP_CMP_SOMETIMES", 1)]))), "unknown comparison op"),
    (json.dumps(profile(*[rule("getppid", errnoRet=1 + n, args=[arg(0, "SCMP_CMP_EQ", n << 32 | n)])
                          for n in range(1500)])), "more than the kernel's limit"),
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


def launch_plain(tmp_path, argv, **fields):
    """The shim alone (no namespaces, any user): (exit status, stdout) of ``argv``."""
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        child = spawn(SpawnPlan(program=argv[0], argv=argv, env=[], search_path="/bin", stdio=(-1, stdout.fileno(), -1),
                                **fields))
    try:
        finish(child)
        _, status = os.waitpid(child.pid, 0)
    finally:
        abort(child)
    return status, out.read_text()


def test_the_flags_go_to_seccomp(tmp_path):
    program = compile_profile(profile(rule("getppid", errnoRet=errno.EXDEV)))
    status, out = launch_plain(tmp_path, py(SYSCALL + f"print(call({GETPPID})[1])"), seccomp_filter=program,
                               seccomp_flags=lib.SECCOMP_FILTER_FLAG_LOG)
    assert os.waitstatus_to_exitcode(status) == 0 and out.split() == [str(errno.EXDEV)]
    with pytest.raises(LaunchError) as info:                           # a flag no kernel has
        launch_plain(tmp_path, ["/bin/true"], seccomp_filter=program, seccomp_flags=1 << 30)
    assert info.value.step == "seccomp" and info.value.errno == errno.EINVAL
