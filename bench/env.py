"""What the bench needs and what it ran on: peers installed from Debian's
packages, matplotlib, and the host description written next to every result."""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

__all__ = ["APT_PEERS", "ensure_peers", "ensure_matplotlib", "host_info", "tool_versions", "busybox_static"]

#: Debian package -> the program that tells it is installed.
APT_PEERS = {"runc": "runc", "crun": "crun", "bubblewrap": "bwrap", "busybox-static": None}

BUSYBOX_STATIC = "/bin/busybox"


def _dpkg_installed(package: str) -> bool:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    except FileNotFoundError:
        return False
    return "ok installed" in out.stdout


def busybox_static() -> Optional[str]:
    """The path of a statically linked busybox (the OCI rootfs needs one), or None."""
    if not _dpkg_installed("busybox-static"):
        return None
    return BUSYBOX_STATIC if os.path.exists(BUSYBOX_STATIC) else None


def ensure_peers(install: bool = True, log=print) -> List[str]:
    """Install the missing peer packages with apt-get; returns what is still missing."""
    missing = [pkg for pkg, prog in APT_PEERS.items()
               if not _dpkg_installed(pkg) or (prog is not None and shutil.which(prog) is None)]
    if missing and install:
        if os.geteuid() != 0:
            log(f"bench: not root, cannot install {' '.join(missing)}")
        elif shutil.which("apt-get") is None:
            log(f"bench: no apt-get, cannot install {' '.join(missing)}")
        else:
            log(f"bench: installing {' '.join(missing)} (apt-get)")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
        missing = [pkg for pkg, prog in APT_PEERS.items()
                   if not _dpkg_installed(pkg) or (prog is not None and shutil.which(prog) is None)]
    return missing


def ensure_matplotlib(install: bool = True, log=print) -> bool:
    """True when matplotlib can be imported (after ``pip install matplotlib``
    into this interpreter's environment when it was missing and ``install``)."""
    # Not imported here: importing matplotlib starts a thread, and crun's
    # private mount namespace (setns) needs a single-threaded bench until the end.
    import importlib.util

    if importlib.util.find_spec("matplotlib") is not None:
        return True
    if not install:
        return False
    log("bench: installing matplotlib (pip)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], stdout=subprocess.DEVNULL)
    importlib.invalidate_caches()
    return importlib.util.find_spec("matplotlib") is not None


def _first_line(cmd: List[str]) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def tool_versions() -> Dict[str, Optional[str]]:
    import pyexec

    def last_word(line: Optional[str]) -> Optional[str]:
        return line.split()[-1] if line else None

    commit = _first_line(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "describe", "--always", "--dirty"])
    return {
        "pyexec": f"{pyexec.__version__} ({commit})" if commit else pyexec.__version__,
        "python": platform.python_version(),
        "runc": last_word(_first_line(["runc", "--version"])) if shutil.which("runc") else None,
        "crun": last_word(_first_line(["crun", "--version"])) if shutil.which("crun") else None,
        "bwrap": last_word(_first_line(["bwrap", "--version"])) if shutil.which("bwrap") else None,
        "unshare": last_word(_first_line(["unshare", "--version"])),
        "busybox": (_first_line([BUSYBOX_STATIC]) or "").split(" multi-call")[0] or None,
    }


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def busy_processes(window: float = 1.0, threshold: float = 20.0) -> List[Dict[str, object]]:
    """Other processes using more than ``threshold`` % of a CPU over ``window``
    seconds: a shared machine's neighbours, written next to the results."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            proc.cpu_percent(None)
            procs.append(proc)
        except psutil.Error:
            pass
    time.sleep(window)
    out = []
    me = os.getpid()
    for proc in procs:
        try:
            pct = proc.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= threshold and proc.pid != me:
            out.append({"pid": proc.pid, "name": proc.info["name"], "cpu_percent": round(pct)})
    return sorted(out, key=lambda p: -p["cpu_percent"])


def host_info() -> Dict[str, object]:
    from pyexec.cgroups import detect_mode

    try:
        cgroup_mode = detect_mode()
    except OSError:
        cgroup_mode = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cgroup_mode": cgroup_mode,
        "loadavg_at_start": load,
        "busy_processes_at_start": busy_processes(),
        "tools": tool_versions(),
    }
