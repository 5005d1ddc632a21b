"""python -m bench [--quick] [--runs N] [--only latency,throughput,...]: see bench/README.md."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

SECTIONS = ("latency", "throughput", "memory", "stats", "shutdown", "reattach")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="small counts for development (20 runs, 20 at once, 20 sleepers, 1 round)")
    p.add_argument("--runs", type=int, help="latency runs per tool (default 200)")
    p.add_argument("--burst", type=int, help="tasks launched at once for throughput (default 50)")
    p.add_argument("--rounds", type=int, help="throughput bursts and shutdown rounds per tool (default 5)")
    p.add_argument("--sleepers", type=int, help="running tasks for helper memory (default 100)")
    p.add_argument("--samples", type=int, help="stats and reattach samples (default 500)")
    p.add_argument("--processes", type=int, default=500, help="processes of the shutdown task (default 500)")
    p.add_argument("--only", help=f"comma-separated sections ({','.join(SECTIONS)})")
    p.add_argument("--tools", help="comma-separated tools (pyexec,subprocess,unshare,bwrap,crun,runc)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get/pip install missing peers")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    p.add_argument("--name", default="latest", help="file name stem of the results (default latest)")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rewrite the table, chart and READMEs from the results JSON")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"runs": (200, 20), "burst": (50, 20), "rounds": (5, 1), "sleepers": (100, 20), "samples": (500, 100)}
    for key, (full, small) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    args.only = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.render:
        import json

        from . import env
        from .report import RESULTS_DIR
        with open(os.path.join(args.out or RESULTS_DIR, args.name + ".json")) as f:
            results = json.load(f)
        write_outputs(args, results, env.ensure_matplotlib(install=not args.no_install, log=log), log)
        return 0
    if os.geteuid() != 0:
        log("bench: run me as root (containers need it)")
        return 2
    from . import env
    missing = env.ensure_peers(install=not args.no_install, log=log)
    if missing:
        log(f"bench: missing {', '.join(missing)}; those tools are skipped")
    have_plot = env.ensure_matplotlib(install=not args.no_install, log=log)

    from . import report, sections
    from .tools import PyexecTool, Workspace, all_tools, settle

    ws = Workspace()
    tools = all_tools(ws)
    if args.tools:
        wanted = {t.strip() for t in args.tools.split(",")} | {"pyexec"}
        tools = [t for t in tools if t.name in wanted]
    skipped = {t.name: t.unavailable() for t in tools if t.unavailable()}
    tools = [t for t in tools if t.name not in skipped]
    for name, why in skipped.items():
        log(f"bench: skipping {name}: {why}")
    px = tools[0]
    assert isinstance(px, PyexecTool)
    by_name = {t.name: t for t in tools}
    results = {"host": env.host_info(),
               "config": {k: getattr(args, k) for k in ("runs", "burst", "rounds", "sleepers", "samples",
                                                           "processes", "quick")},
               "skipped": skipped}
    px_logs = PyexecTool(ws, logs=True)
    px_variants = [PyexecTool(ws, threads=0), PyexecTool(ws, threads=os.cpu_count() or 2)]
    started = time.monotonic()
    try:
        for tool in tools + px_variants + [px_logs]:
            tool.prepare(args.burst, args.sleepers)
        if "latency" in args.only:
            log(f"bench: 1. latency, {args.runs} runs × {len(tools) + 1} tools")
            results["latency"] = sections.latency([px, px_logs] + tools[1:], args.runs, log=log)
        if "throughput" in args.only:
            log(f"bench: 2. throughput, {args.burst} at once × {args.rounds} rounds")
            results["throughput"] = sections.throughput([px] + px_variants + tools[1:], args.burst, args.rounds,
                                                        log=log)
        if set(args.only) & {"memory", "stats", "shutdown", "reattach"}:
            settle(log=log)
        if "memory" in args.only:
            log(f"bench: 3. helper memory, {args.sleepers} sleep tasks per tool")
            results["helper_memory"] = sections.helper_memory([t for t in tools if t.name != "subprocess"],
                                                              args.sleepers, log=log)
        if "stats" in args.only:
            log(f"bench: 4. stats cost, {args.samples} samples")
            results["stats"] = sections.stats_cost(px, args.samples, runc=by_name.get("runc"), log=log)
        if "shutdown" in args.only:
            log(f"bench: 5. shutdown of a {args.processes}-process task")
            peers = [by_name[n] for n in ("crun", "runc") if n in by_name]
            results["shutdown"] = sections.shutdown_cost(px, args.processes, max(1, min(args.rounds, 5)),
                                                         peers=peers, log=log)
        if "reattach" in args.only:
            log(f"bench: 6. reattach, {args.samples} samples")
            results["reattach"] = sections.reattach_cost(px, args.samples, log=log)
    finally:
        for tool in tools + px_variants + [px_logs]:
            try:
                tool.close()
            except Exception as exc:  # cleaning up must go on
                log(f"bench: closing {tool.name}: {exc}")
        ws.cleanup()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["targets"] = report.check_targets(results)
    write_outputs(args, results, have_plot, log)
    return 0


def write_outputs(args: argparse.Namespace, results: dict, have_plot: bool, log) -> None:
    """results/<name>.{json,md,png}, and for the default name the READMEs' result blocks."""
    from . import report

    out_dir = args.out or report.RESULTS_DIR
    os.makedirs(out_dir, exist_ok=True)
    text = report.table(results)
    print(text)
    stem = os.path.join(out_dir, args.name)
    report.write_json(results, stem + ".json")
    with open(stem + ".md.tmp", "w") as f:
        f.write(text + "\n")
    os.rename(stem + ".md.tmp", stem + ".md")
    wrote = [stem + ".json", stem + ".md"]
    if have_plot and report.write_chart(results, stem + ".png"):
        wrote.append(stem + ".png")
    if args.name == "latest" and args.out is None:
        here = os.path.dirname(os.path.abspath(__file__))
        chart = stem + ".png" if stem + ".png" in wrote else None
        for readme, body in ((os.path.join(here, "README.md"), text),
                             (os.path.join(os.path.dirname(here), "README.md"), report.summary(results))):
            rel = os.path.relpath(chart, os.path.dirname(readme)) if chart else None
            if report.update_readme(readme, body, rel):
                wrote.append(readme)
    log("bench: wrote " + ", ".join(os.path.relpath(p) for p in wrote))


if __name__ == "__main__":
    sys.exit(main())
