"""How a task is isolated: namespaces, its root file system, capabilities, users, masks.

Every property is read from the kernel inside a real container (/proc/self/status,
mountinfo, failing syscalls), root only (the module is marked needs_root).
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from pyexec import ExecCommand, Isolation, Mount, new_executor
from pyexec.config import DEFAULT_MASKED_PATHS
from pyexec.errors import ConfigError, LaunchError

pytestmark = pytest.mark.needs_root  # every property is read inside a container task

DEFAULT_CAPS = "00000000a80425fb"        # Docker's default set for root
NET_BIND_SERVICE = "0000000000000400"
NONE = "0000000000000000"


def sh(script: str):
    return ["/bin/sh", "-c", script]


def status_of(out: str) -> dict:
    """The "Key:<tab>value" lines of /proc/self/status printed by the task."""
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def task_status(run, **fields) -> dict:
    result, out, err = run(["cat", "/proc/self/status"], **fields)
    assert result.exit_code == 0, err
    return status_of(out)


def caps(status: dict) -> dict:
    return {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def host_root_listing():
    present = {n for n in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
               if os.path.lexists(f"/{n}")}
    return present | {"dev", "local", "proc", "sys", "tmp"}


# -- namespaces ----------------------------------------------------------------------------

def test_task_runs_under_an_init_in_its_own_pid_namespace(run):
    result, out, _ = run(sh("echo $$ $PPID; ls /proc | grep -E '^[0-9]+$'"))
    assert result.exit_code == 0
    lines = out.splitlines()
    assert lines[0] == "2 1"                     # the task is pid 2, child of the init
    pids = {int(p) for p in lines[1:]}
    assert {1, 2} <= pids
    assert len(pids) <= 6                        # 1, 2 and the pipeline: no host processes
    assert len(psutil.pids()) > 6                # ...while the host has many


def test_orphans_are_reaped_by_the_init(run):
    # The subshell exits at once, so its `sleep 0.1` is re-parented to pid 1
    # and exits while the task still runs: the init must reap it.
    result, out, _ = run(sh("(sleep 0.1 &); sleep 0.6; cat /proc/[0-9]*/stat"))
    assert result.exit_code == 0
    states = {}
    for line in out.splitlines():
        pid, rest = line.split(" ", 1)
        states[int(pid)] = rest[rest.rindex(")") + 2:].split()[0]
    assert 1 in states and 2 in states
    assert "Z" not in states.values(), states


def test_hostname_is_the_task_name(run, task_dir):
    result, out, _ = run(["hostname"], name="alpha-1")
    assert out.strip() == "alpha-1"
    result, out, _ = run(["hostname"], name="alpha-1", isolation=Isolation(hostname="h1"))
    assert out.strip() == "h1"
    assert os.uname().nodename not in ("alpha-1", "h1")


def test_network_namespace_has_only_loopback_and_it_is_up(run):
    result, out, _ = run(sh("ls /sys/class/net; echo --; cat /sys/class/net/lo/flags; echo --; "
                            "tail -n +3 /proc/net/dev | cut -d: -f1"))
    assert result.exit_code == 0
    names, flags, dev = out.split("--\n")
    assert names.split() == ["lo"]
    assert int(flags.strip(), 16) & 1, "lo is not IFF_UP"
    assert [n.strip() for n in dev.split()] == ["lo"]


def test_ipc_namespace_is_private(run):
    result, out, _ = run(["readlink", "/proc/self/ns/ipc", "/proc/self/ns/uts", "/proc/self/ns/mnt",
                          "/proc/self/ns/net"])
    assert result.exit_code == 0
    links = out.split()
    assert len(links) == 4, out                   # zip() below would stop at a short output
    for line, kind in zip(links, ("ipc", "uts", "mnt", "net")):
        assert line != os.readlink(f"/proc/self/ns/{kind}")


# -- the root file system -------------------------------------------------------------------

def test_root_listing_mirrors_the_host(run):
    result, out, _ = run(["ls", "-A", "/"])
    assert result.exit_code == 0
    assert set(out.split()) == host_root_listing()


def test_only_local_and_tmp_are_writable(run, task_dir):
    script = ("for f in /x /usr/x /etc/x /bin/x /local/x /tmp/x; do "
              "if touch $f 2>/dev/null; then echo ok $f; else echo no $f; fi; done; "
              "echo data > /local/x")
    result, out, _ = run(sh(script))
    assert result.exit_code == 0
    assert out.split("\n")[:6] == ["no /x", "no /usr/x", "no /etc/x", "no /bin/x", "ok /local/x", "ok /tmp/x"]
    assert (task_dir / "local" / "x").read_text() == "data\n"
    assert not os.path.exists("/usr/x") and not os.path.exists("/etc/x")


def test_bind_mounts_readonly_and_writable(run, tmp_path):
    ro = tmp_path / "ro"
    rw = tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello").write_text("hi\n")
    mounts = (Mount(source=str(ro), target="/data"), Mount(source=str(rw), target="/deep/er/out", readonly=False))
    script = ("cat /data/hello; if touch /data/x 2>/dev/null; then echo wrote; else echo refused; fi; "
              "echo result > /deep/er/out/r")
    result, out, _ = run(sh(script), isolation=Isolation(mounts=mounts))
    assert result.exit_code == 0
    assert out.splitlines() == ["hi", "refused"]
    assert not (ro / "x").exists()
    assert (rw / "r").read_text() == "result\n"


def test_custom_rootfs(run, tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.lexists(f"/{name}"):
            (rootfs / name).symlink_to(f"usr/{name}")
    (rootfs / "marker").write_text("mine\n")
    isolation = Isolation(rootfs=str(rootfs), mounts=(Mount(source="/usr", target="/usr"),))
    result, out, err = run(sh("ls -A /; cat /marker; touch /new 2>/dev/null || echo ro"), isolation=isolation)
    assert result.exit_code == 0, err
    lines = out.splitlines()
    expected = {n for n in ("bin", "lib", "lib64", "sbin") if os.path.lexists(f"/{n}")}
    expected |= {"usr", "marker", "dev", "proc", "sys", "tmp", "local"}
    assert set(lines[:-2]) == expected
    assert lines[-2:] == ["mine", "ro"]
    assert not (rootfs / "new").exists()


def test_custom_rootfs_without_the_program_is_a_launch_error(tmp_path):
    rootfs = tmp_path / "empty-root"
    rootfs.mkdir()
    ex = new_executor("container")
    with pytest.raises(LaunchError, match="exec /bin/sh: No such file or directory"):
        ex.launch(ExecCommand(argv=sh("true"), task_dir=str(tmp_path / "t"), isolation=Isolation(rootfs=str(rootfs))))
    assert ex.pid is None


def test_missing_rootfs_is_a_config_error_before_launch(tmp_path):
    with pytest.raises(ConfigError, match="rootfs: .* is not a directory"):
        Isolation(rootfs=str(tmp_path / "missing"))


# -- capabilities and privileges ----------------------------------------------------------

def test_root_gets_dockers_default_capabilities(run):
    assert caps(task_status(run)) == {"CapInh": NONE, "CapPrm": DEFAULT_CAPS, "CapEff": DEFAULT_CAPS,
                                      "CapBnd": DEFAULT_CAPS, "CapAmb": NONE}


def test_other_users_get_no_capabilities_but_the_default_bounding_set(run):
    assert caps(task_status(run, user="nobody")) == {"CapInh": NONE, "CapPrm": NONE, "CapEff": NONE,
                                                     "CapBnd": DEFAULT_CAPS, "CapAmb": NONE}


def test_explicit_capabilities_for_root(run):
    status = task_status(run, isolation=Isolation(capabilities=["NET_BIND_SERVICE"]))
    assert caps(status) == {"CapInh": NONE, "CapPrm": NET_BIND_SERVICE, "CapEff": NET_BIND_SERVICE,
                            "CapBnd": NET_BIND_SERVICE, "CapAmb": NONE}


def test_explicit_capabilities_for_another_user_are_ambient(run):
    status = task_status(run, user="nobody", isolation=Isolation(capabilities=["cap_net_bind_service"]))
    assert caps(status) == {"CapInh": NET_BIND_SERVICE, "CapPrm": NET_BIND_SERVICE, "CapEff": NET_BIND_SERVICE,
                            "CapBnd": NET_BIND_SERVICE, "CapAmb": NET_BIND_SERVICE}


def test_ambient_capability_works_for_an_unprivileged_user(run):
    # Binding port 80 needs CAP_NET_BIND_SERVICE; python3 keeps the ambient set across exec.
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 on the host (visible in the container through /usr)")
    probe = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 80)); print('bound')")
    result, out, _ = run(["/usr/bin/python3", "-c", probe], user="nobody",
                         isolation=Isolation(capabilities=["NET_BIND_SERVICE"]))
    assert (result.exit_code, out) == (0, "bound\n")
    result, _, err = run(["/usr/bin/python3", "-c", probe], user="nobody")
    assert result.exit_code != 0 and "Permission denied" in err


def test_no_new_privs_is_set(run):
    assert task_status(run)["NoNewPrivs"] == "1"
    assert task_status(run, user="nobody")["NoNewPrivs"] == "1"


def test_no_new_privs_can_be_turned_off(run):
    assert task_status(run, isolation=Isolation(no_new_privs=False))["NoNewPrivs"] == "0"


def test_mount_is_refused_without_cap_sys_admin(run):
    result, out, err = run(sh("mount -t tmpfs x /tmp && echo mounted; grep -c ' /tmp ' /proc/self/mountinfo"))
    assert "mounted" not in out
    assert out.strip() == "1"            # still only the tmpfs the executor put there
    assert "permission denied" in err.lower() or "must be superuser" in err


def test_unshare_and_chroot_escapes_are_refused(run):
    result, out, err = run(sh("unshare -m true && echo unshared; chroot / true && echo chrooted"))
    assert "unshared" not in out         # CAP_SYS_ADMIN is gone
    assert "chrooted" in out             # CAP_SYS_CHROOT is in Docker's default set


# -- users ---------------------------------------------------------------------------------

def test_user_nobody(run):
    result, out, _ = run(sh("id -u; id -g; id -G; echo $USER $LOGNAME $HOME"), user="nobody")
    uid, gid, groups, env = out.splitlines()
    assert (uid, gid) == ("65534", "65534")
    assert "0" not in groups.split()
    assert env == "nobody nobody /nonexistent"


def test_root_environment(run):
    result, out, _ = run(sh("id -u; id -G; echo $USER $LOGNAME $HOME"))
    assert out.splitlines() == ["0", "0", "root root /root"]


def test_uid_gid_pair(run):
    result, out, _ = run(sh("id -u; id -g; id -G; echo $USER $HOME"), user="65534:65534")
    uid, gid, groups, env = out.splitlines()
    assert (uid, gid) == ("65534", "65534")
    assert "0" not in groups.split()
    assert env == "nobody /nonexistent"


def test_numeric_uid_without_a_passwd_entry(run):
    result, out, _ = run(sh("id -u; id -g; id -G; echo $USER $HOME"), user="4242")
    assert out.splitlines() == ["4242", "4242", "4242", "4242 /"]


def test_explicit_env_user_wins(run):
    result, out, _ = run(sh("echo $USER $LOGNAME $HOME"), user="nobody",
                         env={"PATH": "/usr/bin:/bin", "USER": "someone", "HOME": "/tmp"})
    assert out.strip() == "someone nobody /tmp"


def test_unprivileged_user_cannot_write_root_owned_places(run, task_dir):
    result, out, _ = run(sh("touch /tmp/ok && echo tmp; touch /local/x 2>/dev/null || echo local-refused"),
                         user="nobody")
    assert out.splitlines() == ["tmp", "local-refused"]   # task_dir/local belongs to root, 0755
    assert not (task_dir / "local" / "x").exists()


# -- masked and read-only paths --------------------------------------------------------------

def test_masked_paths_are_empty(run):
    present = [p for p in DEFAULT_MASKED_PATHS if os.path.exists(p)]
    script = "; ".join(f"if [ -d {p} ]; then echo {p} dir $(ls -A {p} | wc -l); "
                       f"elif [ -e {p} ]; then echo {p} file $(cat {p} | wc -c); else echo {p} absent; fi"
                       for p in DEFAULT_MASKED_PATHS)
    result, out, _ = run(sh(script))
    seen = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(seen) == set(DEFAULT_MASKED_PATHS)
    for path, (kind, *count) in seen.items():
        assert kind == "absent" or count == ["0"], f"{path} is not masked: {kind} {count}"
    # The test means something only if the host really has some of them with content.
    assert any(seen[p][0] != "absent" for p in present)
    assert Path("/proc/kcore").exists() is False or seen["/proc/kcore"] == ["file", "0"]


def test_proc_kcore_is_masked(run):
    result, out, _ = run(sh("wc -c < /proc/kcore 2>/dev/null || echo absent"))
    if not os.path.exists("/proc/kcore"):
        assert out.strip() == "absent"
    else:
        assert out.strip() == "0"


def test_host_secrets_are_masked(run):
    if not os.path.exists("/etc/shadow") or os.path.getsize("/etc/shadow") == 0:
        pytest.skip("the host has no non-empty /etc/shadow to mask")
    result, out, _ = run(sh("wc -c < /etc/shadow; ls -l /etc/shadow | cut -c1"))
    assert out.split() == ["0", "c"]     # /dev/null, a character device


def test_proc_sys_is_read_only(run):
    result, out, err = run(sh("echo evil > /proc/sys/kernel/hostname && echo wrote; hostname; "
                              "grep ' /proc/sys ' /proc/self/mountinfo"), name="good")
    lines = out.splitlines()
    assert "wrote" not in lines
    assert lines[0] == "good"
    options = lines[1].split(" - ")[0].split()[5]
    assert options.split(",")[0] == "ro"
    assert "Read-only file system" in err


def test_sysfs_is_read_only(run):
    result, out, err = run(sh("echo 1 > /sys/class/net/lo/tx_queue_len && echo wrote; "
                              "grep ' /sys ' /proc/self/mountinfo"))
    assert "wrote" not in out
    assert out.split()[5].split(",")[0] == "ro"


def test_dev_is_minimal(run):
    result, out, _ = run(sh("ls -A /dev; echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c"))
    lines = out.splitlines()
    assert lines[-2:] == ["null-ok", "4"]
    names = set(lines[:-2])
    assert {"null", "zero", "full", "random", "urandom", "pts", "shm", "fd",
            "stdin", "stdout", "stderr", "ptmx"} <= names
    assert not any(n.startswith(("sd", "vd", "nvme", "mem", "kmsg", "port")) for n in names), names


def test_mknod_cannot_open_a_host_disk(run):
    # CAP_MKNOD is in the default set, but a node on a nodev tmpfs is useless.
    result, out, _ = run(sh("mknod /dev/evil b 254 0 && echo made; head -c 1 /dev/evil >/dev/null 2>&1 "
                            "&& echo read; mknod /tmp/evil b 254 0 && head -c 1 /tmp/evil >/dev/null 2>&1 "
                            "&& echo read-tmp"))
    assert "read" not in out.split()
    assert "read-tmp" not in out.split()


# -- the init (pid 1) ------------------------------------------------------------------------

def test_the_init_does_not_reveal_the_launchers_command_line_or_environment(run):
    result, out, _ = run(sh("tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/environ; echo rc=$?"))
    assert result.exit_code == 0
    lines = out.splitlines()
    # pid 1 is the init, then the monitor it execs. An init that is a copy of
    # the caller blanks the caller's argv before the task runs; one that runs
    # in the caller's memory (the default) has /proc/1/cmdline masked, since
    # that memory is the caller's own (in the middle of the exec the kernel
    # shows no command line at all).
    assert lines[0].split()[:1] in ([], ["pyexec-init"], ["pyexec-monitor"]), out
    assert "python" not in out and "pytest" not in out, out
    environ = "\n".join(lines[1:-1]).strip("\0\n ")
    assert lines[-1] != "rc=0" or environ == "", "the task could read the init's environment: " + out


def test_the_monitor_holds_no_capability_the_task_lacks(run):
    # Between the task's exec and its own, the init still has the caller's
    # capabilities (that superset is also what keeps the task from reading the
    # init's memory then); the monitor that stays is checked here.
    result, out, _ = run(sh("while ! grep -q '^Name:.pyexec-monitor' /proc/1/status; do :; done; "
                            "grep -E '^Cap(Prm|Bnd)' /proc/1/status"), user="nobody")
    init = status_of(out)
    assert int(init["CapPrm"], 16) & ~int(DEFAULT_CAPS, 16) == 0, init
    assert int(init["CapBnd"], 16) & ~int(DEFAULT_CAPS, 16) == 0, init


# -- devices ----------------------------------------------------------------------------------

def test_the_devices_cgroup_allows_only_the_default_nodes(run):
    # v1: the devices controller; v2: the eBPF device program (the VM suite runs that).
    # A node made with mknod for the host's disk cannot be opened, /dev/null can.
    disks = sorted(d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram", "zram")))
    disk = os.stat("/dev/" + disks[0])
    result, out, err = run(sh(f"mknod /dev/disk b {os.major(disk.st_rdev)} {os.minor(disk.st_rdev)} && echo made; "
                              "head -c1 /dev/disk >/dev/null 2>&1 && echo read; echo ok > /dev/null && echo null-ok; "
                              "cat /sys/fs/cgroup/devices/devices.list 2>/dev/null | head -3"))
    assert "null-ok" in out and "read" not in out.split(), out + err


def test_a_requested_device_is_bound_and_allowed(run):
    from pyexec import Device
    if not os.path.exists("/dev/fuse"):
        pytest.skip("this kernel has no /dev/fuse")
    result, out, err = run(sh("ls -l /dev/fuse && exec 3<>/dev/fuse && echo opened"),
                           isolation=Isolation(devices=[Device("/dev/fuse", "rwm")]))
    assert "opened" in out, out + err
    result, out, err = run(sh("ls /dev/fuse 2>&1; echo done"))  # not there by default
    assert "No such file" in out


def test_a_bad_device_is_a_config_error_before_anything_exists(tmp_path):
    from pyexec import Device, new_executor
    from pyexec.errors import ConfigError
    ex = new_executor("container")
    with pytest.raises(ConfigError, match="devices.path: '/dev/nope-pyexec' cannot be used"):
        ex.launch(ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"),
                              isolation=Isolation(devices=[Device("/dev/nope-pyexec")])))
    assert not (tmp_path / "t").exists()
