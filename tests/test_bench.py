"""The bench (bench/) imports, and its statistics and report helpers are right.

Fast and without peers: the measurements themselves run in ``bench/run``.
The one test that starts a real runc container is skipped unless runc and
busybox-static are installed and we are root.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

# bench/ is a directory of the repository, not an installed package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import bundle, report, sections, tools  # noqa: E402
from bench.__main__ import parse_args  # noqa: E402
from bench.stats import fmt_ms, fmt_ratio, median, percentile, rate, ratio, rotation, summarize  # noqa: E402


def test_sections_are_there():
    assert sections.__all__                        # an empty list would pass the loop unchecked
    for name in sections.__all__:
        assert callable(getattr(sections, name))


def test_percentile_interpolates_like_numpy_linear():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert median([3.0, 1.0, 2.0]) == 2.0


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize():
    s = summarize([0.001 * i for i in range(1, 101)])
    assert s["n"] == 100
    assert s["median"] == pytest.approx(0.0505)
    assert s["p95"] == pytest.approx(0.09505)
    assert s["min"] == pytest.approx(0.001) and s["max"] == pytest.approx(0.1)
    assert s["mean"] == pytest.approx(0.0505)


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6, 7])
def test_rotation_is_balanced_for_position_and_predecessor(count):
    names = [chr(ord("a") + i) for i in range(count)]
    period = count if count % 2 == 0 else 2 * count
    rounds = [rotation(names, r) for r in range(period)]
    for order in rounds:
        assert sorted(order) == names
    for position in range(count):
        column = [order[position] for order in rounds]
        assert all(column.count(n) == period // count for n in names)
    pairs = [(order[i], order[i + 1]) for order in rounds for i in range(count - 1)]
    expected = {(x, y) for x in names for y in names if x != y}
    assert set(pairs) == expected
    assert all(pairs.count(p) == period // count for p in expected)  # every predecessor equally often
    assert rotation(names, period + 1) == rotation(names, 1)
    assert rotation([], 3) == []


def test_ratio_rate_and_formatting():
    assert ratio(6.0, 2.0) == 3.0
    assert ratio(None, 2.0) is None and ratio(1.0, 0) is None
    assert rate(50, 0.25) == 200.0
    with pytest.raises(ValueError):
        rate(1, 0)
    assert fmt_ms(0.0012345) == "1.23" and fmt_ms(None) == "-"
    assert fmt_ratio(3.04) == "3.0x" and fmt_ratio(None) == "-"


def test_oci_config_matches_the_default_isolation(tmp_path):
    config = bundle.oci_config(["/bin/true"], "/rootfs", "/pxbench/x")
    assert {ns["type"] for ns in config["linux"]["namespaces"]} == {"pid", "network", "ipc", "uts", "mount"}
    assert config["root"] == {"path": "/rootfs", "readonly": True}
    res = config["linux"]["resources"]
    assert res["memory"]["limit"] == 64 << 20 and res["pids"]["limit"] == 64 and res["cpu"]["shares"] == 512
    assert config["process"]["noNewPrivileges"] is True
    assert "process" in json.loads(json.dumps(config))  # serialisable
    assert "pyexec" not in config["linux"]["cgroupsPath"]  # never under the test suite's cgroups
    path = bundle.write_bundle(str(tmp_path / "b"), config)
    with open(os.path.join(path, "config.json")) as f:
        assert json.load(f)["process"]["args"] == ["/bin/true"]


def test_bench_never_uses_pyexecs_defaults():
    assert tools.STATE_ROOT != "/run/pyexec" and "pyexec" not in tools.STATE_ROOT
    assert "pyexec" not in tools.CGROUP_PARENT
    assert "pyexec" not in tools.PEER_ROOT and "pyexec" not in tools.TASK_ROOT


def test_parse_args_quick_and_full():
    quick = parse_args(["--quick"])
    assert (quick.runs, quick.burst, quick.sleepers, quick.rounds) == (20, 20, 20, 1)
    full = parse_args([])
    assert (full.runs, full.burst, full.sleepers) == (200, 50, 100)
    assert parse_args(["--only", "latency,stats"]).only == ("latency", "stats")
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])


def _fake_results():
    lat = {name: dict(summarize([ms / 1e3] * 3), label=name, isolation="x")
           for name, ms in (("pyexec", 2.0), ("crun", 10.0), ("runc", 30.0), ("subprocess", 0.8))}
    return {
        "host": {"date": "2026-01-01T00:00:00+00:00", "kernel": "6.1", "cpus": 2, "tools": {"runc": "1.1"}},
        "latency": {"runs": 3, "tools": lat},
        "throughput": {"tasks": 50, "rounds": 1, "tools": {
            "pyexec": {"label": "pyexec", "per_s": 350.0, "best_per_s": 360.0, "seconds": [0.14]},
            "pyexec-threads": {"label": "t", "per_s": 320.0, "best_per_s": 330.0, "seconds": [0.15]},
            "runc": {"label": "runc", "error": "RuntimeError: boom"}}},
        "helper_memory": {"tasks": 2, "tools": {"pyexec": {
            "label": "pyexec", "tasks": 2, "processes": 2, "process_names": {"pyexec-monitor": 2},
            "rss_per_task": 1.5 * 1024 * 1024, "pss_per_task": 1e5, "uss_per_task": 1e5}}},
        "stats": {"cgroup": summarize([0.0002])},
        "shutdown": {"processes": 500, "tools": {"pyexec": dict(summarize([0.05]), how="grace=0")}},
        "reattach": summarize([0.0009]),
    }


def test_targets_and_table():
    results = _fake_results()
    targets = {t["key"]: t for t in report.check_targets(results)}
    assert targets["latency_p50"]["measured"] == pytest.approx(2.0) and targets["latency_p50"]["pass"]
    assert targets["crun_ratio"]["measured"] == pytest.approx(5.0) and targets["crun_ratio"]["pass"]
    assert targets["runc_ratio"]["pass"] is True
    assert targets["throughput"]["measured"] == 350.0
    assert targets["helper_rss"]["pass"] and targets["stats"]["pass"] and targets["reattach"]["pass"]
    results["targets"] = list(targets.values())
    text = report.table(results)
    assert "| pyexec |" in text and "failed: RuntimeError: boom" in text and "PASS" in text
    assert "kernel 6.1" in text
    short = report.summary(results)
    assert "### 1." in short and "### targets" in short and "### 2." not in short and "kernel 6.1" in short


def test_json_and_chart(tmp_path):
    results = _fake_results()
    report.write_json(results, str(tmp_path / "r.json"))
    with open(tmp_path / "r.json") as f:
        assert json.load(f)["host"]["cpus"] == 2
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (bench/run installs it)")
    assert report.write_chart(results, str(tmp_path / "r.png"))
    with open(tmp_path / "r.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_subprocess_floor_tool_runs_true():
    ws = tools.Workspace.__new__(tools.Workspace)  # no directories: the floor needs none
    ws.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        tool = tools.SubprocessTool(ws)
        assert tool.unavailable() is None
        assert 0 < tool.once() < 5.0
        assert 0 < tool.burst(3) < 5.0
    finally:
        os.close(ws.devnull)


_PEERS = os.geteuid() == 0 and shutil.which("runc") is not None and shutil.which("busybox") is not None


@pytest.mark.skipif(not _PEERS, reason="needs root, runc and busybox-static (the peers bench/run installs)")
def test_runc_bundle_runs(tmp_path):
    from bench.env import busybox_static

    if busybox_static() is None:
        pytest.skip("busybox-static is not installed (the bundle's rootfs needs a static busybox)")
    rootfs = bundle.make_rootfs(str(tmp_path / "rootfs"), busybox_static())
    path = bundle.write_bundle(str(tmp_path / "b"), bundle.oci_config(
        ["/bin/sh", "-c", "touch /x 2>/dev/null || echo read-only"], rootfs, f"/{tools.CGROUP_PARENT}/test-bench"))
    root = str(tmp_path / "state")
    out = subprocess.run(["runc", "--root", root, "run", "--bundle", path, "pxb-test-bench"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    tools.remove_cgroup_parent(tools.CGROUP_PARENT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "read-only"


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n\n{report.README_START}\nold\n{report.README_END}\n\nafter\n")
    assert report.update_readme(str(readme), "| new |", "results/latest.png")
    text = readme.read_text()
    assert "old" not in text and "| new |" in text and "![bench chart](results/latest.png)" in text
    assert text.startswith("# t\n\nbefore\n") and text.endswith("\n\nafter\n")
    assert report.update_readme(str(readme), "| newer |", None)
    assert "| new |" not in readme.read_text() and "| newer |" in readme.read_text()
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(str(plain), "x", None)
