"""`make bench`: every benchmark in one run, one table, and the same figures as JSON.

Runs each bench script with --json in a fresh process (so one's environment cannot
leak into another's). The build benchmark keeps the docker-host image it measured in
build/bench/images/, and the boot, RAM and bundle benchmarks use that very image, so
every figure comes from the same run of the same code. Each script's progress goes to
the terminal as it runs. At the end: a table of the headline figures with the
machine's description, build/bench/results.json with every detail, and a dated copy
in build/bench/history/ so runs can be compared over time. A script that fails is
reported, and the others still run.

Usage: python bench/run.py [--json]   (--json: print results.json instead of the table)"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.core.paths import PROJECT_ROOT
from composer.vm.accel import choose_accel

BENCH = PROJECT_ROOT / "build/bench"
IMAGES = BENCH / "images"  # rebuilt on every run
IMAGE = IMAGES / "docker-host"
# The same image on Debian 12, the other supported suite, measured beside the default.
BOOKWORM_DEFINITION = BENCH / "docker-host-bookworm.yaml"
BOOKWORM_IMAGE = IMAGES / "docker-host-bookworm"
RESULTS = BENCH / "results.json"
HISTORY = BENCH / "history"

# (group, script, arguments), in order: the build comes first and leaves IMAGE.
SCRIPTS: tuple[tuple[str, str, list[str]], ...] = (
    ("build", "bench/build.py", ["--warm-runs", "3", "--out", str(IMAGE)]),
    ("boot", "bench/boot.py", ["--boots", "3", "--image", str(IMAGE)]),
    ("runtime", "bench/runtime.py", ["--idle-image", str(IMAGE), "--build-dir", str(IMAGES)]),
    ("bundle", "bench/update_size.py", ["--build-dir", str(IMAGE)]),
    ("update", "bench/update.py", []),
    ("delta", "bench/delta.py", ["--builds", str(IMAGES / "delta")]),
    ("bookworm build", "bench/build.py",
     ["--warm-runs", "0", "--definition", str(BOOKWORM_DEFINITION), "--out", str(BOOKWORM_IMAGE)]),
    ("bookworm boot", "bench/boot.py", ["--boots", "3", "--image", str(BOOKWORM_IMAGE)]),
)  # fmt: skip


def write_bookworm_definition() -> None:
    BOOKWORM_DEFINITION.parent.mkdir(parents=True, exist_ok=True)
    BOOKWORM_DEFINITION.write_text(
        "# Written by bench/run.py: docker-host on Debian 12, measured beside the default.\n"
        f"extends: {PROJECT_ROOT / 'images/docker-host.yaml'}\n"
        "debian:\n  suite: bookworm\n"
    )


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
        "load_average_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run_script(group: str, script: str, arguments: list[str]) -> dict[str, Any]:
    """Run one script; its progress (stderr) goes through to the terminal, prefixed."""
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=15)
    # stdout (the JSON) goes to a file so that a full pipe cannot stall the script
    # while stderr is being read.
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(
            [sys.executable, script, *arguments, "--json"],
            cwd=PROJECT_ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line.rstrip("\n"))
            print(f"[{group} {time.monotonic() - start:4.0f}s] {line}", end="", file=sys.stderr,
                  flush=True)  # fmt: skip
        if process.wait() != 0:
            return {"error": f"exit code {process.returncode}", "stderr_tail": "\n".join(tail)}
        stdout.seek(0)
        figures: dict[str, Any] = json.loads(stdout.read())
    figures["bench_seconds"] = round(time.monotonic() - start, 1)
    return figures


def _delta_row(row: dict[str, Any]) -> str:
    delta, full = row["delta"], row["full"]
    goal = f" (goal at most {row['goal']:.0%})" if row.get("goal") else ""
    return (
        f"{delta['served_bytes'] / 1e6:.1f} MB, {row['delta_share']:.2%} of the bundle{goal}, "
        f"applied in {delta['seconds']} s; full bundle {full['served_bytes'] / 1e6:.1f} MB "
        f"in {full['seconds']} s"
    )


# The table: (label, group, how to read the figure from that group's JSON).
HEADLINES: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("cold build (empty package cache)", "build", lambda f: f"{f['cold_build_s']} s"),
    ("cold build, downloads cached (goal at most 60 s)", "build",
     lambda f: f"{f['cold_build_downloads_cached_s']} s"),
    ("warm rebuild, one overlay file changed (median; goal at most 15 s)", "build",
     lambda f: f"{f['warm_rebuild_s']} s  {f['warm_rebuild_runs_s']}"),
    ("  by step (median)", "build",
     lambda f: ", ".join(f"{k} {v}" for k, v in f["warm_rebuild_steps_s"].items())),
    ("root image (erofs)", "build", lambda f: f"{f['root_image_mib']} MiB"),
    ("initrd", "build", lambda f: f"{f['initrd_mib']} MiB"),
    ("disk.qcow2", "build", lambda f: f"{f['qcow2_mib']} MiB"),
    ("update bundle", "bundle", lambda f: f"{f['bundle_bytes'] / 2**20:.1f} MiB"),
    ("keel run to SSH ready (median; goal at most 20 s)", "boot",
     lambda f: f"{f['median_ssh_ready_seconds']} s  {f['ssh_ready_seconds']}"),
    ("  where it goes (median)", "boot",
     lambda f: ", ".join(f"{k} {v}" for k, v in f["median_systemd_analyze"].items())),
    ("idle RAM, MemTotal - MemAvailable (goal at most 120 MB)", "runtime",
     lambda f: ", ".join(f"{m['boot']} {m['used_mb']:.0f} MB"
                         for m in f["idle_memory"]["samples"])),
    ("power-on to declared container running", "runtime",
     lambda f: f"{f['container_start']['container_running_seconds']} s"),
    ("update apply: download + verify + write", "update",
     lambda f: f"{f['update_seconds']} s  {f['phases']}"),
    ("update downtime: reboot to SSH in new version", "update",
     lambda f: f"{f['downtime_reboot_to_ssh_seconds']} s  (shutdown "
               f"{f.get('downtime_shutdown_seconds')} s, then boot to SSH "
               f"{f.get('downtime_boot_seconds')} s; now {f['booted_version_after']})"),
    *(
        (f"delta update, {label}", "delta",
         lambda f, change=change: _delta_row(f[change]))
        for change, label in (
            ("a_version_only", "(a) version only"),
            ("b_one_package", "(b) one package added"),
            ("c_kernel", "(c) kernel changed"),
        )
    ),
    ("bookworm: cold build", "bookworm build", lambda f: f"{f['cold_build_s']} s"),
    ("bookworm: root image (erofs), initrd", "bookworm build",
     lambda f: f"{f['root_image_mib']} MiB, {f['initrd_mib']} MiB"),
    ("bookworm: update bundle", "bookworm build", lambda f: f"{f['bundle_mib']} MiB"),
    ("bookworm: keel run to SSH ready (median)", "bookworm boot",
     lambda f: f"{f['median_ssh_ready_seconds']} s  {f['ssh_ready_seconds']}"),
)  # fmt: skip


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for label, group, read in HEADLINES:
        figures = results["figures"].get(group, {})
        if "error" in figures:
            rows.append((label, f"FAILED ({group}: {figures['error']})"))
            continue
        try:
            rows.append((label, read(figures)))
        except (KeyError, TypeError):
            rows.append((label, "not measured"))
    return rows


def print_table(results: dict[str, Any]) -> None:
    print("machine:")
    for key, value in results["machine"].items():
        print(f"  {key:<22} {value}")
    rows = headline_rows(results)
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for group, figures in results["figures"].items():
        if "error" in figures:
            print(f"\n{group} failed:\n{figures['stderr_tail']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    shutil.rmtree(IMAGES, ignore_errors=True)
    write_bookworm_definition()
    results: dict[str, Any] = {"machine": machine(), "figures": {}}
    started = time.monotonic()
    for group, script, arguments in SCRIPTS:
        print(f"==> {script}", file=sys.stderr, flush=True)
        results["figures"][group] = run_script(group, script, arguments)
    results["machine"]["bench_minutes"] = round((time.monotonic() - started) / 60, 1)
    HISTORY.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    RESULTS.write_text(text)
    (HISTORY / time.strftime("%Y%m%d-%H%M%S.json")).write_text(text)
    if args.json:
        print(text, end="")
    else:
        print_table(results)
        print(f"\nwritten to {RESULTS.relative_to(PROJECT_ROOT)} and {HISTORY.name}/")
    return 1 if any("error" in f for f in results["figures"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
