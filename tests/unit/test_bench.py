"""The benchmark scripts' parsing and reporting (the measuring itself needs QEMU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_systemd_analyze_phases_in_seconds() -> None:
    boot = load("boot")
    text = (
        "Startup finished in 2.514s (firmware) + 840ms (loader) + 1min 3.400s (kernel)"
        " + 4.1s (initrd) + 18.802s (userspace) = 1min 29.656s"
    )
    assert boot.parse_systemd_analyze(text) == {
        "firmware": 2.51,
        "loader": 0.84,
        "kernel": 63.4,
        "initrd": 4.1,
        "userspace": 18.8,
    }


def test_update_phases_come_from_the_last_run_only() -> None:
    update = load("update")
    history = [
        {"event": "transition", "to": "downloading", "at": 1.0},
        {"event": "transition", "to": "failed", "at": 2.0},
        {"event": "note", "at": 5.0},
        {"event": "transition", "to": "downloading", "at": 10.0},
        {"event": "transition", "to": "writing", "at": 17.0},
        {"event": "transition", "to": "installed", "at": 33.5},
    ]
    assert update.phase_seconds(history) == {"downloading": 7.0, "writing": 16.5}


def complete_results() -> dict[str, Any]:
    return {
        "build": {
            "cold_build_s": 150.0, "cold_build_downloads_cached_s": 70.0,
            "warm_rebuild_s": 29.0, "warm_rebuild_runs_s": [29.0],
            "warm_rebuild_steps_s": {"make root filesystem (erofs)": 5.5},
            "root_image_mib": 277.0, "initrd_mib": 6.9, "qcow2_mib": 237.0,
        },
        "bundle": {"bundle_bytes": 213 * 2**20},
        "boot": {"median_ssh_ready_seconds": 27.1, "ssh_ready_seconds": [27.1],
                 "median_systemd_analyze": {"kernel": 2.0}},
        "runtime": {"idle_memory": {"samples": [{"boot": "first boot", "used_mb": 146.2}]},
                    "container_start": {"container_running_seconds": 82.0}},
        "update": {"update_seconds": 23.0, "phases": {}, "booted_version_after": "2.0.0",
                   "downtime_reboot_to_ssh_seconds": 31.5},
        "delta": {
            change: {"delta": {"served_bytes": 2_500_000, "seconds": 40.0},
                     "full": {"served_bytes": 232_000_000, "seconds": 30.0},
                     "delta_share": 0.0108, "goal": 0.02}
            for change in ("a_version_only", "b_one_package", "c_kernel")
        },
        "bookworm build": {"cold_build_s": 90.0, "root_image_mib": 277.0, "initrd_mib": 6.9,
                           "qcow2_mib": 237.0, "bundle_mib": 213.0},
        "bookworm boot": {"median_ssh_ready_seconds": 23.0, "ssh_ready_seconds": [23.0],
                          "median_systemd_analyze": {"kernel": 2.0}},
    }  # fmt: skip


def test_headline_table_has_every_figure_the_issue_names() -> None:
    run = load("run")
    rows = dict(run.headline_rows({"figures": complete_results()}))
    assert rows["cold build (empty package cache)"] == "150.0 s"
    assert rows["update bundle"] == "213.0 MiB"
    assert rows["idle RAM, MemTotal - MemAvailable (goal at most 120 MB)"] == "first boot 146 MB"
    assert rows["cold build, downloads cached (goal at most 60 s)"] == "70.0 s"
    assert rows["  by step (median)"] == "make root filesystem (erofs) 5.5"
    assert rows["update downtime: reboot to SSH in new version"].startswith("31.5 s")
    assert rows["bookworm: root image (erofs), initrd"] == "277.0 MiB, 6.9 MiB"
    assert rows["bookworm: keel run to SSH ready (median)"].startswith("23.0 s")
    assert rows["delta update, (a) version only"].startswith("2.5 MB, 1.08% of the bundle")
    assert not any(value in ("not measured",) or "FAILED" in value for value in rows.values())


@pytest.mark.parametrize("broken", ["boot", "update"])
def test_a_failed_or_missing_benchmark_is_shown_not_hidden(broken: str) -> None:
    run = load("run")
    figures = complete_results()
    figures[broken] = {"error": "exit code 1", "stderr_tail": "boom"}
    del figures["runtime"]["container_start"]
    rows = dict(run.headline_rows({"figures": figures}))
    failed = {label for label, value in rows.items() if value.startswith("FAILED")}
    assert failed == {label for label, group, _ in run.HEADLINES if group == broken}
    assert rows["power-on to declared container running"] == "not measured"
    assert rows["cold build (empty package cache)"] == "150.0 s"


def test_disks_bench_reads_a_units_run_time() -> None:
    disks = load("disks")
    show = "ExecMainStartTimestampMonotonic=5000000\nExecMainExitTimestampMonotonic=8250000\n"
    assert disks.unit_run_seconds(show) == 3.25
    journal = "keel-grow-var: growing vda4\nkeel-grow-var: /var: filesystem 18.6 GiB, ... (2.7s)\n"
    assert disks.work_seconds(journal) == 2.7
