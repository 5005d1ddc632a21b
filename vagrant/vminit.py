"""pid 1 of the VM that vm.py boots (run by Debian's /usr/bin/python3 -I from
the host's root, after the initramfs mounted everything).

Runs the command from /run/vm-io/command.json with its output on the second
serial port (the host's vm.py streams it), reaps every orphan meanwhile (it
is init), then records the exit status in /run/vm-io/rc, kills what is
left, syncs and reboots -- qemu runs with -no-reboot, so that ends it.

With "init": "systemd" it instead writes the command as a Delegate=yes
service (vm-command.service) into /run/systemd/system and execs the host's
systemd as pid 1 with only that unit to start: the command runs in a
delegated cgroup (system.slice/vm-command.service) exactly as on a real
systemd host; its ExecStopPost records the status and SuccessAction= and
FailureAction= reboot. Standard library only.
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import termios
import time

IO = "/run/vm-io"
OUTPUT = "/dev/ttyS1"
RB_AUTOBOOT = 0x01234567


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def raw_output(fd: int) -> None:
    """No \\n -> \\r\\n translation on the serial line: bytes pass as they are."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def reboot() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(RB_AUTOBOOT)
    os._exit(1)  # reached only if reboot() failed: the kernel panics, panic=-1 reboots


def systemd_quote(word: str, command: bool = True) -> str:
    """One quoted word for ExecStart= (command) or Environment=: % doubled so
    no specifier is expanded, and in commands $ too, so no variable is."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


SYSTEMD = "/lib/systemd/systemd"
UNIT = "vm-command.service"
# EXIT_CODE is exited/killed/dumped; EXIT_STATUS the number or the signal name.
RECORD = ("if [ \"$EXIT_CODE\" = exited ]; then echo \"$EXIT_STATUS\"; "
          "else echo \"signal $EXIT_STATUS\"; fi > /run/vm-io/rc")


def exec_systemd(spec: dict, out: int, log) -> None:
    """Hand pid 1 to systemd with the command as a Delegate=yes service."""
    os.makedirs("/run/systemd/system", exist_ok=True)
    env = "".join(f"Environment={systemd_quote(f'{k}={v}', command=False)}\n" for k, v in spec["env"].items())
    unit = (
        "[Unit]\n"
        "Description=vm.py command\n"
        "DefaultDependencies=no\n"
        "SuccessAction=reboot-force\n"
        "FailureAction=reboot-force\n"
        "[Service]\n"
        "Type=exec\n"
        "Delegate=yes\n"
        f"WorkingDirectory={spec['cwd'].replace('%', '%%')}\n"
        f"{env}"
        f"ExecStart={' '.join(systemd_quote(a) for a in spec['argv'])}\n"
        f"ExecStopPost=/bin/sh -c {systemd_quote(RECORD)}\n"
        "StandardInput=null\n"
        f"StandardOutput=file:{OUTPUT}\n"
        "StandardError=inherit\n"
        "TimeoutStopSec=30\n"
    )
    with open(f"/run/systemd/system/{UNIT}", "w") as f:
        f.write(unit)
    # When the unit cannot even start, systemd falls back to rescue or
    # emergency mode, which would wait for a login: record a failure and reboot.
    for fallback in ("rescue.service", "emergency.service"):
        with open(f"/run/systemd/system/{fallback}", "w") as f:
            f.write("[Unit]\nDefaultDependencies=no\n[Service]\nType=oneshot\n"
                    "ExecStart=/bin/sh -c 'echo 125 > /run/vm-io/rc; echo \"[vm] systemd fell back to "
                    f"{fallback}; see the console log\" > {OUTPUT}'\n"
                    "ExecStartPost=/bin/systemctl reboot --force --force\n")
    log.write(f"[vm] systemd as pid 1, the command as the Delegate=yes unit {UNIT}\n")
    log.flush()
    os.close(out)
    os.execv(SYSTEMD, [SYSTEMD, f"--unit={UNIT}", "--log-target=console", "--show-status=no"])


def keep_host_tmp_path(cwd: str) -> None:
    """/tmp is the VM's scratch disk; a command directory under the host's /tmp
    (a CI clone) is bound back at its path from /run/host-tmp."""
    parts = os.path.normpath(cwd).split("/")
    if len(parts) < 3 or parts[1] != "tmp":
        return
    source, target = os.path.join("/run/host-tmp", parts[2]), os.path.join("/tmp", parts[2])
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "--bind", source, target], check=True)


def main() -> None:
    booted = uptime()
    out = os.open(OUTPUT, os.O_WRONLY | os.O_NOCTTY)
    raw_output(out)
    log = os.fdopen(os.dup(out), "w", buffering=1)
    rc = 125
    try:
        with open(os.path.join(IO, "command.json")) as f:
            spec = json.load(f)
        socket.sethostname("pyexec-vm")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            controllers = f.read().strip()
        log.write(f"[vm] kernel {os.uname().release} up after {booted:.1f}s; "
                  f"cgroup2 controllers: {controllers}\n")
        keep_host_tmp_path(spec["cwd"])
        if spec.get("init") == "systemd":
            exec_systemd(spec, out, log)
        start = time.monotonic()
        proc = subprocess.Popen(spec["argv"], cwd=spec["cwd"], env=spec["env"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid == proc.pid:
                rc = os.waitstatus_to_exitcode(status)
                rc = 128 - rc if rc < 0 else rc
                break
        log.write(f"[vm] command exited with {rc} after {time.monotonic() - start:.1f}s\n")
    except BaseException as e:  # noqa: BLE001 - pid 1 must never just die
        log.write(f"[vm] vminit failed: {e!r}\n")
        rc = 125
    finally:
        try:
            with open(os.path.join(IO, "rc"), "w") as f:
                f.write(f"{rc}\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            log.write(f"[vm] cannot write the exit status: {e!r}\n")
        os.kill(-1, signal.SIGKILL)
        log.flush()
        reboot()


if __name__ == "__main__":
    if os.getpid() != 1:
        sys.exit("vminit.py is the VM's init; vm.py runs it")
    main()
