"""The launch's two ways to clone: a child in the caller's own memory (the
default: clone3 CLONE_VM on a stack of its own, csrc/spawn.c) and a copy of
the caller (``shim.SHARE_MEMORY = False``, also what joining a task uses).

Both give the same tasks; the shared one must leave nothing of itself in the
caller: no mapping, no changed dumpable flag, no changed oom_score_adj, and
concurrent launches from several threads must not see each other's state.
The tests that launch container tasks need root (marked ``needs_root``); the
one that drives the shim directly runs as any user.
"""
from __future__ import annotations

import os
import threading

import pytest

from pyexec import ExecCommand, Isolation, LaunchError, new_executor, shim


def _sh(script: str):
    return ["/bin/sh", "-c", script]


def _stack_guards() -> int:
    """Inaccessible anonymous 4 KiB mappings of this process: two per launch
    stack while it is mapped (thread stacks' guards stay the same meanwhile)."""
    count = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if fields[1] == "---p" and end - start == 4096 and len(fields) == 5:
                count += 1
    return count


@pytest.mark.needs_root
def test_both_ways_run_the_same_task(spawn_mode, run):
    result, out, err = run(_sh("echo $$ $(hostname)"), isolation=Isolation(hostname="box"))
    assert result.exit_code == 0, err
    pid, host = out.split()[:2]
    assert (pid, host) == ("2", "box"), out  # pid 1 is the init, now the monitor


@pytest.mark.needs_root
def test_both_ways_report_a_failed_exec_from_launch(spawn_mode, task_dir):
    ex = new_executor("container")
    with pytest.raises(LaunchError) as info:
        ex.launch(ExecCommand(argv=["/no/such/program"], task_dir=str(task_dir)))
    assert info.value.step == "exec" and "/no/such/program" in str(info.value)


@pytest.mark.needs_root
def test_a_shared_launch_unmaps_its_stack_whether_it_succeeds_or_fails(task_dir):
    assert shim.SHARE_MEMORY
    before = _stack_guards()
    for i in range(20):
        ex = new_executor("container")
        argv = ["/bin/true"] if i % 2 else ["/no/such/program"]
        try:
            ex.launch(ExecCommand(argv=argv, task_dir=str(task_dir)))
            assert ex.wait(timeout=10).exit_code == 0
        except LaunchError:
            assert i % 2 == 0
    assert _stack_guards() == before


@pytest.mark.needs_root
def test_the_callers_oom_score_stays_as_it_was(task_dir):
    # The task writes its oom_score_adj while it borrows our memory: the
    # kernel gives a vfork child its own (tests/test_userns.py checks the
    # dumpable flag, which a uid change in a user namespace touches).
    with open("/proc/self/oom_score_adj") as f:
        before = f.read()
    ex = new_executor("container")
    ex.launch(ExecCommand(argv=_sh("cat /proc/self/oom_score_adj"), task_dir=str(task_dir), oom_score_adj=500,
                          user="nobody", stdout_path=str(task_dir / "out")))
    assert ex.wait(timeout=10).exit_code == 0
    assert (task_dir / "out").read_text() == "500\n"
    with open("/proc/self/oom_score_adj") as f:
        assert f.read() == before


@pytest.mark.needs_root
def test_concurrent_shared_launches_keep_apart(tmp_path):
    # Each launch has its own stack, error pipe and thread-local error fd; a
    # mix-up would show as a wrong output, a wrong error or a hang.
    assert shim.SHARE_MEMORY
    errors, outputs = [], {}

    def worker(n: int) -> None:
        try:
            for round_ in range(4):
                task_dir = tmp_path / f"t{n}"
                out = tmp_path / f"t{n}.{round_}.out"
                ex = new_executor("container")
                if (n + round_) % 3 == 0:
                    with pytest.raises(LaunchError) as info:
                        ex.launch(ExecCommand(argv=[f"/missing-{n}"], task_dir=str(task_dir), name=f"t{n}"))
                    assert f"/missing-{n}" in str(info.value)
                    continue
                ex.launch(ExecCommand(argv=_sh(f"echo {n}.{round_}"), task_dir=str(task_dir), name=f"t{n}",
                                      stdout_path=str(out)))
                assert ex.wait(timeout=20).exit_code == 0
                outputs[(n, round_)] = out.read_text().strip()
        except BaseException as exc:  # reported below, with the thread's number
            errors.append((n, repr(exc)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert outputs and all(text == f"{n}.{r}" for (n, r), text in outputs.items()), outputs


@pytest.mark.needs_root
def test_the_launchers_pid_one_command_line_is_masked_only_when_shared(spawn_mode, run):
    result, out, _ = run(_sh("grep -c ' /proc/1/cmdline ' /proc/self/mountinfo; true"))
    assert out.split()[0] == ("1" if spawn_mode == "shared" else "0"), out


@pytest.mark.needs_root
def test_joining_a_task_copies_even_when_sharing_is_on(task_dir):
    # setns() into a running task's namespaces; exec works the same.
    assert shim.SHARE_MEMORY
    ex = new_executor("container")
    ex.launch(ExecCommand(argv=["sleep", "30"], task_dir=str(task_dir)))
    try:
        result = ex.exec(_sh("echo hi; readlink /proc/self/ns/pid"))
        assert result.exit_code == 0
        assert result.output.decode().split() == ["hi", os.readlink(f"/proc/{ex.pid}/ns/pid")]
    finally:
        ex.shutdown(grace=0)


_CLONE3_FILTERED = r"""
import ctypes, sys
from pyexec import ExecCommand, LaunchError, _shim, new_executor
from pyexec.seccomp import compile_profile, syscall_number
lib = _shim.lib
program = compile_profile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]})  # ENOSYS, as Docker's profile
buffer = ctypes.create_string_buffer(program, len(program))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(program) // 8, ctypes.addressof(buffer))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(lib.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
assert libc.syscall(syscall_number("seccomp"), lib.SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(fprog)) == 0
assert libc.syscall(syscall_number("clone3"), None, 0) == -1 and ctypes.get_errno() == 38
task_dir, out = sys.argv[1], sys.argv[2]
ex = new_executor("container")
ex.launch(ExecCommand(argv=["/bin/sh", "-c", "echo inside $$"], task_dir=task_dir, stdout_path=out))
print("exit", ex.wait(timeout=20).exit_code)
try:
    new_executor("container").launch(ExecCommand(argv=["/missing"], task_dir=task_dir))
except LaunchError as exc:
    print("failed", exc.step)
"""


@pytest.mark.needs_root
def test_a_caller_whose_clone3_is_filtered_launches_through_clone(task_dir, tmp_path):
    # Inside a container with Docker's default seccomp profile clone3 answers
    # ENOSYS: the shim falls back to a copy made by clone.
    import subprocess
    import sys
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _CLONE3_FILTERED, str(task_dir), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["exit 0", "failed exec"], proc.stdout + proc.stderr
    assert out.read_text() == "inside 2\n"


def test_a_failed_placement_names_the_file_and_leaves_no_child(tmp_path):
    # The shim writes the pid into each cgroup.procs file before the task may
    # start; one it cannot open fails the launch with that path, and the child
    # (held before its task) is killed.
    from pyexec.shim import SpawnPlan, abort, finish, spawn
    missing = str(tmp_path / "gone" / "cgroup.procs")
    plan = SpawnPlan(program="/bin/true", argv=["/bin/true"], env=[], search_path="/bin",
                     place_paths=[missing], hold_task=True)
    child = spawn(plan)
    try:
        with pytest.raises(FileNotFoundError) as info:
            finish(child)
        assert missing in str(info.value)
    finally:
        pid = child.pid
        abort(child)
    assert not os.path.exists(f"/proc/{pid}")


_FORK_WHILE_LAUNCHING = r"""
import os, sys, threading
from pyexec import ExecCommand, new_executor
import pyexec.executor.container  # imported before the thread: a fork during an import is CPython's hazard
top = sys.argv[1]
stop = threading.Event()
def launcher():
    while not stop.is_set():
        ex = new_executor("container")
        ex.launch(ExecCommand(argv=["/bin/true"], task_dir=os.path.join(top, "thread"), name="thread"))
        ex.wait(timeout=20)
thread = threading.Thread(target=launcher)
thread.start()
codes = []
for i in range(15):
    pid = os.fork()
    if pid == 0:
        ex = new_executor("container")
        ex.launch(ExecCommand(argv=["/bin/true"], task_dir=os.path.join(top, f"child{i}"), name=f"child{i}"))
        os._exit(ex.wait(timeout=20).exit_code)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
stop.set()
thread.join(30)
print(codes)
"""


@pytest.mark.needs_root
def test_a_process_forked_while_another_thread_launches_can_launch(tmp_path):
    # The fork copies whatever the launching thread holds at that moment (the
    # shim's lock around the caller's dumpable flag, pipes of a launch in
    # flight): the forked child launches all the same, and so does the thread.
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _FORK_WHILE_LAUNCHING, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([0] * 15), proc.stdout + proc.stderr
