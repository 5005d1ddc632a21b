"""The verbs on a running container's cgroup: ``update`` and ``events``.

``update`` takes runtime-spec LinuxResources JSON (``--resources FILE`` or
``-`` for stdin, the way containerd's shim and Podman send it) or runc's
individual flags (``--memory 512m``, ``--cpu-quota``, ``--pids-limit`` …;
``--resources`` wins over them), validates it with the same code as
config.json's ``linux.resources``, and changes the limits through the
library's cgroup manager: unset fields keep their value.

``events --stats`` prints one ``{"type":"stats","id":…,"data":{…}}`` line
(runc's types/events.go field names; CPU in nanoseconds, memory in
bytes); without ``--stats`` such a line every ``--interval`` (default 5s),
plus ``{"type":"oom"}`` when the cgroup's OOM-kill count grows, until the
container stops.
"""
from __future__ import annotations

import json
import re
import sys
import time
from typing import IO, Any, Dict, Mapping, Optional

from ..cgroups import CgroupManager
from ..stats.usage import ResourceUsage
from .cgroup import container_cgroup
from .resources import to_resources
from .spec_resources import parse_resources
from .state import Root
from .verbs import RuntimeFailure, status_of

__all__ = ["update", "events", "stats_event", "parse_duration", "UPDATE_FLAGS"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40}
# runc's update flag -> (section, field, kind) of LinuxResources.
UPDATE_FLAGS = {
    "memory": ("memory", "limit", "size"), "memory-reservation": ("memory", "reservation", "size"),
    "memory-swap": ("memory", "swap", "size"), "cpu-period": ("cpu", "period", "int"),
    "cpu-quota": ("cpu", "quota", "int"), "cpu-share": ("cpu", "shares", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"), "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"), "cpuset-mems": ("cpu", "mems", "str"),
    "pids-limit": ("pids", "limit", "int"), "blkio-weight": ("blockIO", "weight", "int"),
}


def _size(flag: str, text: str) -> int:
    if text.strip() == "-1":
        return -1
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?b?)\s*", text.lower())
    if not match:
        raise RuntimeFailure(f"invalid value for --{flag}: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _from_flags(flags: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for flag, (section, field_name, kind) in UPDATE_FLAGS.items():
        text = flags.get(flag)
        if not isinstance(text, str) or text == "":
            continue
        if kind == "size":
            value: Any = _size(flag, text)
        elif kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise RuntimeFailure(f"invalid value for --{flag}: {text!r}") from None
        else:
            value = text
        out.setdefault(section, {})[field_name] = value
    return out


def _cgroup(root: Root, container_id: str) -> CgroupManager:
    record = root.load(container_id)
    if status_of(root, record) == "stopped":
        raise RuntimeFailure("container not running")
    manager = container_cgroup(record.cgroup, adopt=True)
    if manager is None:
        raise RuntimeFailure(f"container {container_id} has no cgroup")
    return manager


def update(root: Root, container_id: str, flags: Mapping[str, Any], stdin: IO[str] = sys.stdin) -> None:
    source = flags.get("resources")
    if isinstance(source, str) and source:
        try:
            text = stdin.read() if source == "-" else open(source).read()
            document = json.loads(text)
        except OSError as exc:
            raise RuntimeFailure(f"--resources {source}: {exc.strerror}") from None
        except ValueError as exc:
            raise RuntimeFailure(f"--resources {source}: not JSON: {exc}") from None
    else:
        document = _from_flags(flags)
    resources = to_resources(parse_resources(document, path=""), where="resources")
    _cgroup(root, container_id).update(resources)


def _ns(seconds: Optional[float]) -> int:
    return int(round((seconds or 0.0) * 1e9))


def stats_event(container_id: str, usage: ResourceUsage) -> Dict[str, Any]:
    """runc's stats event of one usage sample."""
    mem, cpu, pids, io = usage.memory, usage.cpu, usage.pids, usage.io
    return {"type": "stats", "id": container_id, "data": {
        "cpu": {"usage": {"total": _ns(cpu.usage_total_s), "kernel": _ns(cpu.system_s), "user": _ns(cpu.user_s)},
                "throttling": {"periods": cpu.throttled_periods or 0,
                               "throttledTime": _ns(cpu.throttled_time_s)}},
        "memory": {"usage": {"usage": mem.usage or 0, "max": mem.max_usage or 0, "limit": mem.limit or 0},
                   "swap": {"usage": mem.swap or 0}, "kernel": {"usage": mem.kernel or 0},
                   "cache": mem.cache or 0, "raw": {"rss": mem.rss or 0, "mapped_file": mem.mapped_file or 0}},
        "pids": {"current": pids.current or 0, "limit": pids.limit or 0},
        "blkio": {"ioServiceBytesRecursive": [
            {"op": "Read", "value": io.read_bytes or 0}, {"op": "Write", "value": io.write_bytes or 0}]},
    }}


def parse_duration(text: str) -> float:
    """A Go duration ("5s", "500ms", "1m30s") in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise RuntimeFailure(f"invalid duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def events(root: Root, container_id: str, stats_only: bool, interval: str = "5s",
           out: IO[str] = sys.stdout) -> None:
    manager = _cgroup(root, container_id)
    if stats_only:
        out.write(json.dumps(stats_event(container_id, manager.stats())) + "\n")
        return
    period = parse_duration(interval or "5s")
    if period <= 0:
        raise RuntimeFailure("duration interval must be greater than 0")
    record = root.load(container_id)
    ooms = manager.stats().memory.oom_kills or 0
    while status_of(root, record) != "stopped":
        usage = manager.stats()
        if (usage.memory.oom_kills or 0) > ooms:
            ooms = usage.memory.oom_kills or 0
            out.write(json.dumps({"type": "oom", "id": container_id}) + "\n")
        out.write(json.dumps(stats_event(container_id, usage)) + "\n")
        out.flush()
        time.sleep(period)
