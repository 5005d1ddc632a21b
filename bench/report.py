"""Turn the measurements into a table (stdout and latest.md), a JSON file and a PNG chart."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from .stats import fmt_ms, fmt_ratio, ratio

__all__ = ["TARGETS", "check_targets", "table", "write_json", "write_chart", "RESULTS_DIR"]

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

MB = 1024 * 1024


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _best_pyexec_rate(results: Dict[str, Any]) -> Tuple[Optional[float], Optional[str]]:
    tools = _get(results, "throughput", "tools") or {}
    best = None
    for name in [n for n in tools if n.startswith("pyexec")]:
        value = _get(tools, name, "per_s")
        if value is not None and (best is None or value > best[0]):
            best = (value, name)
    return best if best else (None, None)


#: (key, what, unit, limit, higher is better)
TARGETS = [
    ("latency_p50", "launch->exit p50, full default isolation", "ms", 3.0, False),
    ("crun_ratio", "crun median / pyexec median", "x", 3.0, True),
    ("runc_ratio", "runc median / pyexec median", "x", 10.0, True),
    ("throughput", "launches/s, 50 at once", "/s", 300.0, True),
    ("helper_rss", "helper RSS per running task", "MB", 2.0, False),
    ("stats", "one cgroup stats() sample", "ms", 1.0, False),
    ("shutdown", "shutdown of a 500-process task", "ms", 100.0, False),
    ("reattach", "reattach from a handle", "ms", 5.0, False),
]


def measured_values(results: Dict[str, Any]) -> Dict[str, Optional[float]]:
    lat = _get(results, "latency", "tools") or {}
    px = _get(lat, "pyexec", "median")

    def ms(value: Optional[float]) -> Optional[float]:
        return None if value is None else value * 1e3

    rss = _get(results, "helper_memory", "tools", "pyexec", "rss_per_task")
    return {
        "latency_p50": ms(px),
        "crun_ratio": ratio(_get(lat, "crun", "median"), px),
        "runc_ratio": ratio(_get(lat, "runc", "median"), px),
        "throughput": _best_pyexec_rate(results)[0],
        "helper_rss": None if rss is None else rss / MB,
        "stats": ms(_get(results, "stats", "cgroup", "median")),
        "shutdown": ms(_get(results, "shutdown", "tools", "pyexec", "median")),
        "reattach": ms(_get(results, "reattach", "median")),
    }


def check_targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    values = measured_values(results)
    out = []
    for key, what, unit, limit, higher in TARGETS:
        value = values.get(key)
        passed = None if value is None else (value >= limit if higher else value <= limit)
        out.append({"key": key, "what": what, "unit": unit, "target": ("≥ " if higher else "≤ ") + f"{limit:g} {unit}",
                    "measured": value, "pass": passed})
    return out


def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "/s":
        return f"{value:.0f}/s"
    return f"{value:.2f} {unit}"


def _tool_table(title: str, columns: List[str], align: str, tools: Dict[str, Dict[str, Any]], measured: str,
                cells: Callable[[Dict[str, Any]], List[str]],
                lead: Callable[[Dict[str, Any]], List[str]] = lambda e: [e["label"]]) -> List[str]:
    """A section of the table with a row per tool: its ``lead`` cells, then
    ``cells``, or, for a tool that has no ``measured`` value, its error."""
    lines = [title, "", "| " + " | ".join(columns) + " |", align]
    for e in tools.values():
        first = lead(e)
        if measured in e:
            lines.append("| " + " | ".join(first + cells(e)) + " |")
        else:
            blanks = len(columns) - len(first) - 1
            lines.append("| " + " | ".join(first + [f"failed: {e.get('error', '?')}"]) + " |" + " |" * blanks)
    return lines + [""]


def table(results: Dict[str, Any]) -> str:
    host = results.get("host", {})
    tools = host.get("tools", {})
    lines = [f"pyexec bench — {host.get('date')} — kernel {host.get('kernel')}, {host.get('cpus')} CPUs "
             f"({host.get('cpu_model')}), cgroup {host.get('cgroup_mode')}", "",
             "versions: " + ", ".join(f"{k} {v}" for k, v in tools.items() if v), ""]
    busy = host.get("busy_processes_at_start")
    if busy:
        lines += ["busy neighbours at start: " + ", ".join(f"{p['name']} ({p['cpu_percent']}% CPU)" for p in busy),
                  ""]
    lat = results.get("latency")
    if lat:
        px = _get(lat, "tools", "pyexec", "median")
        lines += _tool_table(
            f"### 1. launch→exit of /bin/true ({lat['runs']} runs each, tools in rotation)",
            ["tool", "isolation", "median ms", "p95 ms", "tool / pyexec"], "|---|---|---:|---:|---:|",
            lat["tools"], "median", lead=lambda e: [e["label"], e["isolation"]],
            cells=lambda e: [fmt_ms(e["median"]), fmt_ms(e["p95"]), fmt_ratio(ratio(e["median"], px))])
    thr = results.get("throughput")
    if thr:
        best, _ = _best_pyexec_rate(results)
        lines += _tool_table(
            f"### 2. throughput: {thr['tasks']} × /bin/true at once (median of {thr['rounds']} bursts)",
            ["tool", "launches/s", "best burst", "vs best pyexec"], "|---|---:|---:|---:|",
            thr["tools"], "per_s",
            cells=lambda e: [f"{e['per_s']:.0f}", f"{e['best_per_s']:.0f}", fmt_ratio(ratio(e["per_s"], best))])
    mem = results.get("helper_memory")
    if mem:
        lines += _tool_table(
            f"### 3. helper processes per running task ({mem['tasks']} × sleep)",
            ["tool", "helper processes", "RSS / task", "PSS / task", "USS / task"], "|---|---|---:|---:|---:|",
            mem["tools"], "rss_per_task",
            cells=lambda e: [", ".join(f"{n}×{c // max(1, e['tasks'])}" for n, c in e["process_names"].items())
                             or "none"] + [f"{e[key] / MB:.2f} MB" for key in
                                           ("rss_per_task", "pss_per_task", "uss_per_task")])
    ops = []
    st = results.get("stats")
    if st:
        ops.append(("4. stats(): cgroup v1 sample", st.get("cgroup")))
        ops.append(("4. stats(per_process=True): cgroup + per-process", st.get("cgroup_per_process")))
        ops.append((f"4. stats(): process tree, universal, {st.get('pidtree_processes')} processes",
                    st.get("pidtree")))
        ops.append((f"4. process-tree sample with a full rescan ({st.get('host_processes')} host processes)",
                    st.get("pidtree_rescan")))
        if st.get("runc_events_stats"):
            ops.append(("4. (peer) runc events --stats, one sample", st["runc_events_stats"]))
    sd = results.get("shutdown")
    if sd:
        for name, e in sd["tools"].items():
            if "median" in e:
                ops.append((f"5. shutdown, {sd['processes']} processes: {name}, {e['how']}", e))
    ra = results.get("reattach")
    if ra:
        ops.append(("6. pyexec.reattach(handle JSON) of a running task", ra))
    if ops:
        lines += ["### 4–6. operations", "", "| operation | median ms | p95 ms |", "|---|---:|---:|"]
        for what, e in ops:
            if e:
                lines.append(f"| {what} | {fmt_ms(e['median'], 3)} | {fmt_ms(e['p95'], 3)} |")
        lines.append("")
    targets = results.get("targets")
    if targets:
        lines += ["### targets", "", "| target | goal | measured | |", "|---|---|---:|---|"]
        for t in targets:
            verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
            lines.append(f"| {t['what']} | {t['target']} | {_fmt(t['measured'], t['unit'])} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


README_START = "<!-- bench results: start (written by bench/run) -->"
README_END = "<!-- bench results: end -->"


def update_readme(path: str, text: str, chart: Optional[str]) -> bool:
    """Put ``text`` (and the chart, a path relative to the README) between the
    result markers of ``path``; False when the markers are missing."""
    try:
        with open(path) as f:
            old = f.read()
    except OSError:
        return False
    start, end = old.find(README_START), old.find(README_END)
    if start < 0 or end < start:
        return False
    block = [README_START, ""]
    if chart:
        block += [f"![bench chart]({chart})", ""]
    block += [text.rstrip(), "", README_END]
    new = old[:start] + "\n".join(block) + old[end + len(README_END):]
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.rename(path + ".tmp", path)
    return True


def summary(results: Dict[str, Any], details: str = "bench/README.md") -> str:
    """The short form for the project README: host line, latency table, targets."""
    keep: List[str] = []
    section = None
    for line in table(results).split("\n"):
        if line.startswith("### "):
            section = line
        if section is None or section.startswith("### 1.") or section.startswith("### targets"):
            keep.append(line)
    keep.append(f"Throughput, helper memory, stats, shutdown and reattach: [{details}]({details}).")
    return "\n".join(keep)


def write_json(results: Dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")
    os.rename(tmp, path)


def write_chart(results: Dict[str, Any], path: str) -> bool:
    """A 2×2 PNG; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    host = results.get("host", {})
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    colour = lambda name: "#1f77b4" if name.startswith("pyexec") else "#999999"  # noqa: E731

    ax = axes[0][0]
    lat = _get(results, "latency", "tools") or {}
    names = [n for n, e in lat.items() if "median" in e]
    med = [lat[n]["median"] * 1e3 for n in names]
    p95 = [lat[n]["p95"] * 1e3 for n in names]
    ax.barh(names, med, color=[colour(n) for n in names],
            xerr=[[0] * len(names), [max(0.0, b - a) for a, b in zip(med, p95)]], capsize=3)
    for y, v in enumerate(med):
        ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
    ax.axvline(3.0, color="green", linestyle="--", linewidth=1, label="target 3 ms")
    ax.invert_yaxis()
    ax.set_xlabel("ms (bar: median, whisker: p95)")
    ax.set_title(f"1. launch→exit of /bin/true ({_get(results, 'latency', 'runs')} runs)")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[0][1]
    thr = _get(results, "throughput", "tools") or {}
    names = [n for n, e in thr.items() if "per_s" in e]
    vals = [thr[n]["per_s"] for n in names]
    ax.barh(names, vals, color=[colour(n) for n in names])
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
    ax.axvline(300, color="green", linestyle="--", linewidth=1, label="target 300/s")
    ax.invert_yaxis()
    ax.set_xlabel("isolated launches per second")
    ax.set_title(f"2. throughput, {_get(results, 'throughput', 'tasks')} at once")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[1][0]
    mem = _get(results, "helper_memory", "tools") or {}
    names = [n for n, e in mem.items() if "rss_per_task" in e]
    rss = [mem[n]["rss_per_task"] / MB for n in names]
    pss = [mem[n]["pss_per_task"] / MB for n in names]
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], rss, height=0.4, label="RSS", color=[colour(n) for n in names])
    ax.barh([y + 0.2 for y in ys], pss, height=0.4, label="PSS", color="#ffbb78")
    for y, v in zip(ys, rss):
        ax.text(v, y - 0.2, f" {v:.2f}", va="center", fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.axvline(2.0, color="green", linestyle="--", linewidth=1, label="target 2 MB RSS")
    ax.invert_yaxis()
    ax.set_xlabel("MB per running task (tool's own processes)")
    ax.set_title(f"3. helper memory, {_get(results, 'helper_memory', 'tasks')} sleep tasks")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[1][1]
    rows = [("stats() cgroup", _get(results, "stats", "cgroup", "median"), 1.0),
            ("stats() pid tree", _get(results, "stats", "pidtree", "median"), None),
            ("shutdown 500 procs", _get(results, "shutdown", "tools", "pyexec", "median"), 100.0),
            ("reattach", _get(results, "reattach", "median"), 5.0)]
    rows = [(label, v * 1e3, t) for label, v, t in rows if v is not None]
    if rows:
        labels = [r[0] for r in rows]
        ax.barh(labels, [r[1] for r in rows], color="#1f77b4", label="pyexec (median)")
        tx = [(y, r[2]) for y, r in enumerate(rows) if r[2] is not None]
        ax.scatter([t for _, t in tx], [y for y, _ in tx], marker="|", s=400, color="green", label="target")
        for y, r in enumerate(rows):
            ax.text(r[1], y, f" {r[1]:.3g}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("ms (log)")
    ax.set_title("4–6. pyexec operations")

    tools = host.get("tools", {})
    fig.suptitle(f"pyexec bench {host.get('date')} — kernel {host.get('kernel')}, {host.get('cpus')} CPUs, "
                 f"cgroup {host.get('cgroup_mode')}", fontsize=11)
    fig.text(0.5, 0.005, "  ".join(f"{k} {v}" for k, v in tools.items() if v), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    fig.savefig(path + ".tmp", dpi=90, format="png")
    plt.close(fig)
    os.rename(path + ".tmp", path)
    return True
