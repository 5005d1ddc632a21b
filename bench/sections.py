"""The six measurements. Each returns a JSON-ready dict; times are seconds.

1. ``latency``: launch->exit of /bin/true, tools interleaved in rotation;
2. ``throughput``: ``n`` tasks launched at once, launches per second;
3. ``helper_memory``: resident memory of each tool's own processes per running task;
4. ``stats_cost``: one cgroup stats() sample; one process-tree sample (universal);
5. ``shutdown_cost``: shutting down a task that holds 500 processes;
6. ``reattach_cost``: ``pyexec.reattach`` of a running task from its handle.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

import psutil

from .stats import median, rate, rotation, summarize
from .tools import CGROUP_PARENT, PyexecTool, Tool, _OciTool

__all__ = ["latency", "throughput", "helper_memory", "stats_cost", "shutdown_cost", "reattach_cost"]

Log = Callable[[str], None]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- 1

def latency(tools: Sequence[Tool], runs: int, warmup: int = 3, log: Log = print) -> Dict[str, object]:
    """``runs`` rounds; in round r every tool runs once, in ``rotation(tools, r)`` order."""
    samples: Dict[str, List[float]] = {t.name: [] for t in tools}
    errors: Dict[str, str] = {}
    live = list(tools)
    for tool in list(live):
        try:
            for _ in range(warmup):
                tool.once()
        except Exception as exc:  # a broken peer is reported, not fatal
            errors[tool.name] = f"{type(exc).__name__}: {exc}"
            live.remove(tool)
    for r in range(runs):
        for tool in rotation(live, r):
            try:
                samples[tool.name].append(tool.once())
            except Exception as exc:
                errors[tool.name] = f"{type(exc).__name__}: {exc}"
                live.remove(tool)
        if (r + 1) % max(1, runs // 4) == 0:
            log(f"  latency: {r + 1}/{runs} rounds")
    out: Dict[str, object] = {"runs": runs, "order": "balanced rotation (Williams design)", "tools": {}}
    for tool in tools:
        entry: Dict[str, object] = {"label": tool.label, "isolation": tool.isolation}
        if samples[tool.name]:
            entry.update(summarize(samples[tool.name]))
            entry["samples"] = samples[tool.name]
        if tool.name in errors:
            entry["error"] = errors[tool.name]
        out["tools"][tool.name] = entry
    return out


# ----------------------------------------------------------------------------- 2

def throughput(tools: Sequence[Tool], n: int, rounds: int, log: Log = print) -> Dict[str, object]:
    """``rounds`` bursts of ``n`` /bin/true tasks per tool, tools in rotation."""
    times: Dict[str, List[float]] = {t.name: [] for t in tools}
    errors: Dict[str, str] = {}
    live = list(tools)
    for r in range(rounds):
        for tool in rotation(live, r):
            gc.collect()
            try:
                times[tool.name].append(tool.burst(n))
            except Exception as exc:
                errors[tool.name] = f"{type(exc).__name__}: {exc}"
                live.remove(tool)
            time.sleep(0.2)  # let the previous burst's teardown (net namespaces) settle
        log(f"  throughput: {r + 1}/{rounds} rounds")
    out: Dict[str, object] = {"tasks": n, "rounds": rounds, "tools": {}}
    for tool in tools:
        entry: Dict[str, object] = {"label": tool.label}
        if times[tool.name]:
            entry["seconds"] = times[tool.name]
            entry["per_s"] = rate(n, median(times[tool.name]))
            entry["best_per_s"] = rate(n, min(times[tool.name]))
        if tool.name in errors:
            entry["error"] = errors[tool.name]
        out["tools"][tool.name] = entry
    return out


# ----------------------------------------------------------------------------- 3

def _memory_of(pids_per_task: List[List[int]]) -> Dict[str, object]:
    rss = pss = uss = 0
    names: Dict[str, int] = {}
    count = 0
    for pids in pids_per_task:
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                info = proc.memory_full_info()
                names[proc.name()] = names.get(proc.name(), 0) + 1
            except psutil.Error:
                continue
            rss, pss, uss = rss + info.rss, pss + info.pss, uss + info.uss
            count += 1
    tasks = max(1, len(pids_per_task))
    return {"tasks": len(pids_per_task), "processes": count, "process_names": names,
            "rss_per_task": rss / tasks, "pss_per_task": pss / tasks, "uss_per_task": uss / tasks}


def helper_memory(tools: Sequence[Tool], n: int, log: Log = print) -> Dict[str, object]:
    """``n`` running ``sleep`` tasks per tool (one tool at a time); the memory
    of the tool's own processes that live next to them, per task."""
    out: Dict[str, object] = {"tasks": n, "tools": {}}
    for tool in tools:
        entry: Dict[str, object] = {"label": tool.label}
        try:
            tool.start_sleepers(n)
            time.sleep(0.5)
            entry.update(_memory_of(tool.helpers()))
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                tool.stop_sleepers()
            except Exception as exc:
                entry.setdefault("error", f"stopping: {type(exc).__name__}: {exc}")
        out["tools"][tool.name] = entry
        log(f"  helper memory: {tool.name} done")
    return out


# ----------------------------------------------------------------------------- 4

def _sample_times(fn: Callable[[], object], count: int, warmup: int = 10) -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    return summarize([_timed(fn) for _ in range(count)])


def stats_cost(px: PyexecTool, count: int, runc: Optional[_OciTool] = None, log: Log = print) -> Dict[str, object]:
    from pyexec.stats.pidtree import PidCollector

    out: Dict[str, object] = {"samples": count}
    ex = px.executor()
    ex.launch(px.command(["sleep", "600"], px.ws.task_dir("pxb-stats")))
    try:
        out["cgroup"] = _sample_times(ex.stats, count)
        out["cgroup_per_process"] = _sample_times(lambda: ex.stats(per_process=True), count)
    finally:
        ex.shutdown(grace=0)
    log("  stats: cgroup done")
    uni = px.executor("universal", cgroups=False)
    uni.launch(px.command(["/bin/sh", "-c", "sleep 600 & sleep 600 & sleep 600 & wait"],
                          px.ws.task_dir("pxb-tree"), resources=type(px.resources)()))
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(uni.pid).children(recursive=True)) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        # stats(): the tree's pid list is rescanned at most once a second
        # (PidCollector cache), each call reads every process's /proc files.
        out["pidtree"] = _sample_times(uni.stats, count)
        # A full rescan every time (cache_seconds=0): walk the host's process table too.
        fresh = PidCollector(uni.pid, cache_seconds=0, include_root=False)
        out["pidtree_rescan"] = _sample_times(fresh.sample, count)
        out["pidtree_processes"] = len(fresh.pids())
        out["host_processes"] = len(psutil.pids())
    finally:
        uni.shutdown(grace=0)
    log("  stats: process tree done")
    if runc is not None and runc.unavailable() is None:
        out["runc_events_stats"] = _runc_stats(runc, max(5, count // 20))
        log("  stats: runc events --stats done")
    return out


def _runc_stats(runc: _OciTool, count: int) -> Dict[str, object]:
    """``runc events --stats <id>`` of a running container: what an
    orchestrator that drives runc directly pays for one sample."""
    runc.start_sleepers(1)
    try:
        proc = runc.sleepers[0]
        cid = runc_id_of(proc)
        argv = [runc.program, "--root", runc.root, "events", "--stats", cid]
        with runc.context(long_lived=True):
            return _sample_times(lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True), count, warmup=2)
    finally:
        runc.stop_sleepers()


def runc_id_of(proc: subprocess.Popen) -> str:
    return proc.args[-1]


# ----------------------------------------------------------------------------- 5

def _wait_pids(read_current: Callable[[], int], want: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    current = read_current()
    while current < want and time.monotonic() < deadline:
        time.sleep(0.02)
        current = read_current()
    return current


FORK_SCRIPT = "i=1; while [ $i -lt {n} ]; do sleep 600 & i=$((i+1)); done; wait"


def shutdown_cost(px: PyexecTool, processes: int, rounds: int, peers: Sequence[_OciTool] = (),
                  log: Log = print) -> Dict[str, object]:
    """A task of ``processes`` processes (a shell and its sleeps): time to
    shut it down. pyexec: ``shutdown(grace=0)`` (SIGKILL to all, then
    teardown) and ``shutdown()`` (SIGTERM to the main process, the monitor
    kills the rest); peers: ``<runtime> kill <id> KILL`` until the foreground
    ``run`` has deleted the container."""
    from pyexec import Resources

    script = FORK_SCRIPT.format(n=processes)
    resources = Resources(memory="512M", pids=processes + 64, cpu_shares=512)
    out: Dict[str, object] = {"processes": processes, "rounds": rounds, "tools": {}}
    for mode, kwargs in (("pyexec", {"grace": 0}), ("pyexec-sigterm", {})):
        times, seen = [], []
        for r in range(rounds):
            ex = px.executor()
            ex.launch(px.command(["/bin/sh", "-c", script], px.ws.task_dir(f"pxb-fork{r}"), resources=resources))
            try:
                seen.append(_wait_pids(lambda: ex.stats().pids.current or 0, processes + 1))  # + the monitor
                times.append(_timed(lambda: ex.shutdown(**kwargs)))
            finally:
                ex.shutdown(grace=0)
        out["tools"][mode] = dict(summarize(times), pids_in_cgroup=seen,
                                  how="shutdown(grace=0)" if kwargs else "shutdown() (SIGTERM, grace 5 s)")
        log(f"  shutdown: {mode} done")
    for peer in peers:
        if peer.unavailable() is not None:
            continue
        peer._bundle("fork", ["/bin/sh", "-c", script], pids=processes + 64, memory=512 << 20)
        times, seen = [], []
        try:
            for _round in range(rounds):
                with peer.context(long_lived=True):
                    proc = peer._popen(peer.argv("fork", []))
                cid = proc.args[-1]
                pids_file = f"/sys/fs/cgroup/pids/{CGROUP_PARENT}/{peer.name}-fork/pids.current"

                def current() -> int:
                    try:
                        with open(pids_file) as f:
                            return int(f.read())
                    except OSError:
                        return 0

                seen.append(_wait_pids(current, processes))

                def stop() -> None:
                    with peer.context(long_lived=True):  # runc's state holds the shelter's pids
                        subprocess.run([peer.program, "--root", peer.root, "kill", cid, "KILL"], check=True)
                    proc.wait()

                times.append(_timed(stop))
            out["tools"][peer.name] = dict(summarize(times), pids_in_cgroup=seen,
                                           how=f"{peer.program} kill KILL + the foreground run's exit")
        except Exception as exc:
            out["tools"][peer.name] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  shutdown: {peer.name} done")
    return out


# ----------------------------------------------------------------------------- 6

def reattach_cost(px: PyexecTool, count: int, log: Log = print) -> Dict[str, object]:
    """``pyexec.reattach(json_text)`` of a running task, as a restarted caller does."""
    import pyexec

    ex = px.executor()
    ex.launch(px.command(["sleep", "600"], px.ws.task_dir("pxb-reattach")))
    text = json.dumps(ex.handle())
    times = []
    try:
        for i in range(count + 5):
            start = time.perf_counter()
            other = pyexec.reattach(text)
            elapsed = time.perf_counter() - start
            if i >= 5:
                times.append(elapsed)
            if other.pid != ex.pid:
                raise RuntimeError("reattach gave another task")
            # The adopted executor holds a pidfd until it reaps; it never will here.
            fd = getattr(getattr(other, "_proc", None), "_pidfd", -1)
            if isinstance(fd, int) and fd >= 0:
                os.close(fd)
        stats_after = _timed(lambda: pyexec.reattach(text).stats())
    finally:
        ex.shutdown(grace=0)
    log("  reattach done")
    return dict(summarize(times), reattach_then_stats=stats_after)
