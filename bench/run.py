"""`make bench`: every benchmark in one run, one table, and the same figures as JSON.

Runs each bench script with --json in a fresh process (so one's environment cannot
leak into another's), then prints the figures with a description of the machine and
writes build/bench/results.json. A script that fails is reported, and the others
still run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from composer.paths import PROJECT_ROOT
from composer.vm.accel import choose_accel

# (script, arguments, what it measures); scripts not in the checkout are skipped.
SCRIPTS: tuple[tuple[str, list[str], str], ...] = (
    ("bench/build.py", ["--warm-runs", "3"], "build"),
    ("bench/boot.py", ["--boots", "3"], "boot"),
    ("bench/runtime.py", [], "runtime"),
    ("bench/update_size.py", [], "bundle"),
    ("bench/update.py", [], "update"),
)
RESULTS = PROJECT_ROOT / "build/bench/results.json"


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    accel, reason = choose_accel(None)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "accel": accel,
        "accel_reason": reason,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run_script(script: str, arguments: list[str]) -> dict[str, Any]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, script, *arguments, "--json"],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-15:])
        return {"error": f"exit code {result.returncode}", "stderr_tail": tail}
    figures: dict[str, Any] = json.loads(result.stdout)
    figures["bench_seconds"] = round(time.monotonic() - start, 1)
    return figures


def print_table(results: dict[str, Any]) -> None:
    print("\nmachine:")
    for key, value in results["machine"].items():
        print(f"  {key:<14} {value}")
    for group, figures in results["figures"].items():
        print(f"\n{group}:")
        for key, value in figures.items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value)
            print(f"  {key:<34} {value}")


def main() -> int:
    results: dict[str, Any] = {"machine": machine(), "figures": {}}
    failed = False
    for script, arguments, group in SCRIPTS:
        if not (PROJECT_ROOT / script).exists():
            continue
        print(f"==> {script}", file=sys.stderr, flush=True)
        figures = run_script(script, arguments)
        failed |= "error" in figures
        results["figures"][group] = figures
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten to {RESULTS.relative_to(PROJECT_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
