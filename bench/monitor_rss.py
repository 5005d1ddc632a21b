#!/usr/bin/env python3
"""Per-task memory of pyexec's helper process (the monitor), as issue [4 of 8] asks:
launch N `sleep` tasks, sum the monitors' RSS (and USS/PSS: what a task really
adds), divide by N. Target: RSS <= 2 MB per task. Run as root:

    .venv/bin/python bench/monitor_rss.py [N] [container|universal]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time

import psutil

from pyexec import ExecCommand, new_executor


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    kind = sys.argv[2] if len(sys.argv) > 2 else "container"
    top = tempfile.mkdtemp(prefix="pyexec-bench-")
    executors = []
    try:
        for i in range(count):
            ex = new_executor(kind)
            ex.launch(ExecCommand(argv=["sleep", "600"], task_dir=f"{top}/t{i}"))
            executors.append(ex)
        time.sleep(0.5)
        info = [psutil.Process(ex.pid).memory_full_info() for ex in executors]
        per = {name: sum(getattr(i, name) for i in info) / count / 1024 for name in ("rss", "pss", "uss")}
        print(f"{kind}: {count} tasks; monitor per task: RSS {per['rss']:.0f} KiB, "
              f"PSS {per['pss']:.0f} KiB, USS {per['uss']:.0f} KiB (target RSS <= 2048 KiB)")
        return 0 if per["rss"] <= 2048 else 1
    finally:
        for ex in executors:
            ex.shutdown(grace=0)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
