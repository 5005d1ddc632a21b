#!/usr/bin/python3
"""Run one command as root in a throw-away cgroup-v2-only Debian VM.

    vagrant/vm.py [options] -- COMMAND [ARGS...]

Boots Debian's own kernel (from the ``linux-image-amd64`` package: fetched
with ``apt-get download``, unpacked with ``dpkg -x``, never installed) under
qemu-system-x86_64 with ``systemd.unified_cgroup_hierarchy=1
cgroup_no_v1=all``, so /sys/fs/cgroup inside is a cgroup2 mount with every
controller. The host's root file system is shared read-only over virtio-9p
and an overlay with a tmpfs upper layer makes it the VM's root: the host's
Python, venvs and this checkout are there at the same paths, and writes
vanish with the VM. COMMAND runs as root in the current directory; its
output streams here and its exit status becomes ours.

How: a tiny initramfs (busybox-static, the 9p/overlay modules) mounts the
overlay, /proc, /sys, /dev, cgroup2, /tmp and /run, then switch_root's to
``vminit.py`` (this directory) as pid 1, which runs COMMAND, reaps orphans,
writes the exit status into a second, writable 9p share and reboots (qemu
runs with -no-reboot, so it exits). Kernel messages go to a console log
that is printed when the VM fails.

Acceleration: KVM only when the CPU has vmx/svm and the host's /dev/kvm is
not the software kvm_pvm module (a stock kernel aborts or crawls there);
else TCG with one thread per vCPU.

Cache: the unpacked kernel and modules are kept under $PYEXEC_VM_CACHE
(default /var/cache/pyexec-vm) when that is writable, keyed by the kernel
package's version; without it everything is fetched into a temporary
directory. Debian packages qemu-system-x86, busybox-static and cpio are
apt-installed when missing.

Exit status: COMMAND's; 124 when --timeout ran out; 125 when the VM could not
be set up or died before COMMAND finished.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = "/var/cache/pyexec-vm"
HOST_PACKAGES = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static", "cpio": "cpio",
                 "mkfs.ext4": "e2fsprogs"}
BUSYBOX = "/bin/busybox"
QBOOT = "/usr/share/qemu/qboot.rom"
KERNEL_META = "linux-image-amd64"
# What the initramfs loads (their dependencies are found in the modules' .modinfo;
# crc32c is only a soft dependency of ext4, hence named).
# fuse: a /dev/fuse for the tests of devices a task asks for.
WANTED_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_blk", "crc32c_generic", "ext4", "fuse"]
KERNEL_ARGS = ["console=ttyS0", "panic=-1", "rdinit=/init", "systemd.unified_cgroup_hierarchy=1",
               "cgroup_no_v1=all", "mitigations=off", "no_timer_check", "tsc=reliable", "loglevel=4"]
VM_FAILED = 125
TIMED_OUT = 124


class VMError(Exception):
    pass


def say(msg: str) -> None:
    print(f"vm: {msg}", file=sys.stderr, flush=True)


def run(cmd: List[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# -- host packages ------------------------------------------------------------------

def ensure_host_packages() -> None:
    missing = sorted({pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None}
                     | ({"qemu-system-x86"} if not os.path.exists(QBOOT) else set()))
    if os.path.exists(BUSYBOX):
        # busybox (dynamic) also provides /bin/busybox; the initramfs needs the static one.
        if b"ld-linux" in Path(BUSYBOX).read_bytes()[:4096]:
            missing.append("busybox-static")
    if not missing:
        return
    if os.geteuid() != 0:
        raise VMError(f"missing Debian packages {' '.join(missing)}; install them as root")
    say(f"installing {' '.join(missing)}")
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


# -- the kernel ---------------------------------------------------------------------------

def _apt_kernel_package() -> Optional[tuple]:
    """(package, version) that linux-image-amd64 depends on now, from apt's lists."""
    out = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True, text=True).stdout
    m = re.search(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if not m:
        return None
    pkg = m.group(1)
    show = subprocess.run(["apt-cache", "show", "--no-all-versions", pkg], capture_output=True, text=True).stdout
    v = re.search(r"^Version: (\S+)", show, re.M)
    return (pkg, v.group(1)) if v else None


def kernel_package() -> tuple:
    found = _apt_kernel_package()
    if found is None:
        say("apt does not know linux-image-amd64 yet: apt-get update")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        found = _apt_kernel_package()
    if found is None:
        raise VMError("apt-cache cannot resolve linux-image-amd64 (no Debian package lists?)")
    return found


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """The kernel's ELF image from a bzImage: Debian compresses it with xz; the
    xz stream starts somewhere in the setup code. qemu boots the ELF directly
    through its PVH entry point, skipping the slow in-guest decompression."""
    data = vmlinuz.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    while start >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            elf = b""
        if elf[:4] == b"\x7fELF":
            out.write_bytes(elf)
            return
        start = data.find(b"\xfd7zXZ\x00", start + 1)
    raise VMError(f"no xz-compressed ELF kernel found in {vmlinuz}")


def _module_name(path: Path) -> str:
    return path.name[:-len(".ko")].replace("-", "_")


def _module_depends(path: Path) -> List[str]:
    m = re.search(rb"\x00depends=([^\x00]*)\x00", b"\x00" + path.read_bytes())
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def module_load_order(moddir: Path, wanted: List[str]) -> List[Path]:
    """``wanted`` and what they depend on, dependencies first."""
    index = {_module_name(p): p for p in moddir.rglob("*.ko")}
    order: List[Path] = []
    seen = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            raise VMError(f"kernel module {name} not in the package")
        for dep in _module_depends(index[name]):
            visit(dep)
        order.append(index[name])

    for name in wanted:
        visit(name)
    return order


def prepare_kernel(cache: Path) -> Path:
    """A directory with vmlinux and modules/ (in load order, listed in
    modules.order) for the current Debian kernel, from the cache or fresh."""
    pkg, version = kernel_package()
    modules = hashlib.sha256(" ".join(WANTED_MODULES).encode()).hexdigest()[:8]
    final = cache / f"{pkg}_{version}_{modules}"
    if (final / "vmlinux").exists() and (final / "modules.order").exists():
        return final
    for old in cache.glob("linux-image-*"):  # kernels of earlier package versions
        shutil.rmtree(old, ignore_errors=True)
    say(f"fetching {pkg} {version} (apt-get download + dpkg -x)")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kernel.", dir=cache))
    try:
        run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{pkg}={version}"],
            cwd=work, stdout=subprocess.DEVNULL)
        deb = next(work.glob("*.deb"))
        tree = work / "tree"
        run(["dpkg", "-x", str(deb), str(tree)])
        deb.unlink()
        vmlinuz = next((tree / "boot").glob("vmlinuz-*"))
        out = work / "out"
        (out / "modules").mkdir(parents=True)
        extract_vmlinux(vmlinuz, out / "vmlinux")
        names = []
        for ko in module_load_order(next((tree / "lib" / "modules").iterdir()), WANTED_MODULES):
            shutil.copy2(ko, out / "modules" / ko.name)
            names.append(ko.name)
        (out / "modules.order").write_text("\n".join(names) + "\n")
        try:
            out.rename(final)
        except OSError:  # another run put it there first
            if not (final / "vmlinux").exists():
                raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the initramfs -------------------------------------------------------------------------

INIT = r"""#!/bin/busybox sh
# pid 1 of the initramfs: the overlay root, the kernel file systems, then
# switch_root to vminit.py (which lives in the writable io share).
/bin/busybox --install -s /bin
export PATH=/bin
die() { echo "vm-init: $*"; echo "vm-init: $*" > /dev/ttyS1; reboot -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" || die "insmod $m failed"; done < /modules.order
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower \
    || die "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot \
    || die "cannot mount the overlay root"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
# Keep the host's /tmp reachable (a CI checkout may live there): vminit.py
# binds the command's directory back from /run/host-tmp.
mkdir -p /hosttmp
mount --bind /newroot/tmp /hosttmp || die "cannot keep the host's /tmp"
mount -t ext4 -o discard /dev/vda /newroot/tmp || die "cannot mount the scratch disk on /tmp"
chmod 1777 /newroot/tmp
for d in proc sys dev; do mount --move /$d /newroot/$d; done
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /newroot/sys/fs/cgroup \
    || die "cannot mount cgroup2"
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /newroot/dev/shm
mount -t mqueue mqueue /newroot/dev/mqueue
mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run
mkdir -p /newroot/run/host-tmp
mount --move /hosttmp /newroot/run/host-tmp || die "cannot move the host's /tmp"
mkdir -p /newroot/run/vm-io
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmio /newroot/run/vm-io \
    || die "cannot mount the io share"
exec switch_root /newroot /usr/bin/python3 -I /run/vm-io/vminit.py
"""


def build_initramfs(kernel: Path, out: Path, work: Path) -> None:
    root = work / "initramfs"
    for d in ("bin", "dev", "proc", "sys", "modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for ko in (kernel / "modules").iterdir():
        shutil.copy2(ko, root / "modules" / ko.name)
    shutil.copy2(kernel / "modules.order", root / "modules.order")
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    with open(out, "wb") as f:
        run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=root, input=files, stdout=f)


# -- acceleration ---------------------------------------------------------------------------

def choose_accel(requested: str) -> List[str]:
    if requested == "auto":
        flags = Path("/proc/cpuinfo").read_text()
        hardware = re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) is not None
        usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
        requested = "kvm" if hardware and usable and not os.path.exists("/sys/module/kvm_pvm") else "tcg"
    if requested == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


# -- running -------------------------------------------------------------------------------

def cache_dir(requested: Optional[str]) -> Optional[Path]:
    path = Path(requested or os.environ.get("PYEXEC_VM_CACHE") or DEFAULT_CACHE)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path)
        probe.close()
        return path
    except OSError:
        return None


def passed_env(extra: List[str]) -> Dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "USER": "root", "LOGNAME": "root"}
    for key, value in os.environ.items():
        if key.startswith(("PYEXEC_", "PYTEST_")) or key in ("CI",):
            env[key] = value
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def boot(args: argparse.Namespace) -> int:
    ensure_host_packages()
    cache = cache_dir(args.cache)
    scratch = Path(tempfile.mkdtemp(prefix="pyexec-vm."))
    try:
        kernel = prepare_kernel(cache if cache else scratch / "cache")
        io = scratch / "io"
        io.mkdir()
        shutil.copy2(HERE / "vminit.py", io / "vminit.py")
        (io / "command.json").write_text(json.dumps({
            "argv": args.command, "cwd": os.getcwd(), "env": passed_env(args.env), "init": args.init}))
        initrd = scratch / "initrd.cpio"
        build_initramfs(kernel, initrd, scratch)
        # /tmp is a real (sparse, throw-away) ext4 disk, not tmpfs: block I/O
        # that the io controller counts, O_DIRECT, disk-backed task dirs.
        disk = scratch / "tmp.ext4"
        with open(disk, "wb") as f:
            f.truncate(parse_size(args.disk))
        run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0,nodiscard", "-O", "^has_journal", str(disk)])
        console = io / "console.log"
        qemu = ["qemu-system-x86_64", "-M", "pc", *choose_accel(args.accel),
                "-smp", str(args.cpus), "-m", args.memory,
                "-bios", QBOOT, "-kernel", str(kernel / "vmlinux"), "-initrd", str(initrd),
                "-append", " ".join(KERNEL_ARGS + args.append),
                "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
                "-serial", f"file:{console}",
                "-chardev", "stdio,id=out,signal=off", "-serial", "chardev:out",
                "-device", "virtio-rng-pci",
                "-drive", f"file={disk},if=virtio,format=raw,cache=unsafe,discard=unmap",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
                "-virtfs", f"local,path={io},mount_tag=vmio,security_model=none"]
        say(f"booting ({' '.join(choose_accel(args.accel)[:2])}, {args.cpus} cpus, {args.memory}): "
            + " ".join(args.command))
        started = time.monotonic()
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        timed_out = False
        out = sys.stdout.buffer
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = started + args.timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([fd], [], [], min(left, 5.0))
                if ready:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    out.write(data)
                    out.flush()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        elapsed = time.monotonic() - started
        rc_file = io / "rc"
        if timed_out:
            say(f"timed out after {args.timeout:.0f}s; the console's last lines:")
            print_tail(console)
            return TIMED_OUT
        if not rc_file.exists():
            say(f"the VM stopped after {elapsed:.1f}s without the command's exit status "
                f"(qemu exit {proc.returncode}); the console's last lines:")
            print_tail(console)
            return VM_FAILED
        rc = exit_status(rc_file.read_text())
        if args.verbose:
            print_tail(console, 200)
        say(f"exit status {rc} after {elapsed:.1f}s in the VM")
        return rc
    finally:
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def exit_status(text: str) -> int:
    """The rc file: a number, or "signal NAME" (systemd's EXIT_STATUS for a kill)."""
    text = text.strip()
    if text.startswith("signal "):
        name = text.split()[1]
        try:
            return 128 + signal.Signals["SIG" + name if not name.startswith("SIG") else name]
        except KeyError:
            return 128 + int(name) if name.isdigit() else VM_FAILED
    return int(text)


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise VMError(f"{text!r} is not a size like 8G")
    return int(m.group(1)) * units[m.group(2)]


def print_tail(path: Path, lines: int = 60) -> None:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        text = ["(no console log)"]
    for line in text[-lines:]:
        print(f"  | {line}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--memory", default="4G")
    p.add_argument("--disk", default="8G", help="size of the scratch ext4 disk mounted on /tmp (sparse)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--cache", help=f"cache directory (default $PYEXEC_VM_CACHE or {DEFAULT_CACHE})")
    p.add_argument("--init", choices=["direct", "systemd"], default="direct",
                   help="direct: a small init runs the command (default); systemd: the host's "
                        "systemd is pid 1 and runs it as a Delegate=yes service")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="set in the command's environment")
    p.add_argument("--append", action="append", default=[], metavar="ARG", help="extra kernel argument")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (initramfs, console log)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the console log at the end")
    p.add_argument("command", nargs="+")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    try:
        return boot(args)
    except (VMError, subprocess.CalledProcessError, OSError) as e:
        say(f"error: {e}")
        return VM_FAILED


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(VM_FAILED))
    sys.exit(main())
