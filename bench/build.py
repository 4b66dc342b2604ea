"""Build figures for docker-host: cold build (empty package cache), cold build again with
only the .deb download cache kept (composer/build/debcache.py), warm rebuild after
changing one overlay file, and the sizes of the root image, initrd, qcow2 and bundle.

Usage: python bench/build.py [--warm-runs 3] [--skip-cold] [--out DIR] [--json]
The cold build uses a fresh, temporary package cache so it really downloads and
installs every package; the warm rebuilds reuse it. With --out the last build's
artifacts are kept there, so the other benchmarks can boot the very image measured."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from composer.build import uki
from composer.build.pipeline import BuildResult, build_image
from composer.core import commands
from composer.core.paths import DEFAULT_IMAGE, OVERLAYS_DIR
from hostd.formats.sizes import MIB

# Changed (and restored) to measure a rebuild after editing one overlay file.
TOUCHED_OVERLAY_FILE = OVERLAYS_DIR / "base/etc/ssh/sshd_config.d/keel.conf"


def timed_build(out: Path, definition: Path = DEFAULT_IMAGE) -> tuple[float, BuildResult]:
    start = time.monotonic()
    result = build_image(definition, out_dir=out)  # steps on stderr
    return time.monotonic() - start, result


def warm_rebuilds(out: Path, runs: int, definition: Path) -> tuple[list[float], dict[str, float]]:
    """Each rebuild's seconds, and the median seconds of each step that took 0.1 s or
    more (the steps of the two last lanes overlap, so they add up to more than the
    whole)."""
    original = TOUCHED_OVERLAY_FILE.read_bytes()
    seconds = []
    steps: dict[str, list[float]] = {}
    try:
        for run in range(runs):
            print(f"==> warm rebuild {run + 1}/{runs}", file=sys.stderr, flush=True)
            TOUCHED_OVERLAY_FILE.write_bytes(original + f"# bench edit {run}\n".encode())
            elapsed, result = timed_build(out, definition)
            assert result.cached_packages, "a warm rebuild must hit the package cache"
            seconds.append(elapsed)
            for step, took in result.timings.items():
                steps.setdefault(step, []).append(took)
    finally:
        TOUCHED_OVERLAY_FILE.write_bytes(original)
    medians = {step: round(statistics.median(took), 1) for step, took in steps.items()}
    return seconds, {step: took for step, took in medians.items() if took >= 0.1}


def artifact_sizes(out: Path) -> dict[str, float]:
    sizes = {
        "root_image_mib": out / "payload/root.erofs",
        "uki_mib": out / "payload/keel.efi",
        "qcow2_mib": out / "disk.qcow2",
    }
    figures = {name: round(path.stat().st_size / MIB, 1) for name, path in sizes.items()}
    with tempfile.TemporaryDirectory() as scratch:
        initrd = uki.dump_section(out / "payload/keel.efi", ".initrd", Path(scratch) / "initrd")
        figures["initrd_mib"] = round(initrd.stat().st_size / MIB, 1)
    bundles = sorted((out / "bundle").glob("*.keelbundle")) if (out / "bundle").exists() else []
    if bundles:
        figures["bundle_mib"] = round(bundles[0].stat().st_size / MIB, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true", help="reuse the normal cache")
    parser.add_argument("--out", type=Path, help="keep the built image here (default: discard)")
    parser.add_argument(
        "--definition", type=Path, default=DEFAULT_IMAGE, help="image definition to build"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    commands.echo_commands = False

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="keel-bench-build-", dir="build") as scratch:
        out = args.out.resolve() if args.out else Path(scratch) / "docker-host"
        if not args.skip_cold:
            print("==> cold build (empty package cache)", file=sys.stderr, flush=True)
            empty = Path(scratch) / "cache"
            os.environ["KEEL_CACHE_DIR"] = str(empty)
            cold, _ = timed_build(out, args.definition)
            figures["cold_build_s"] = round(cold, 1)
            print("==> cold build (only the download cache kept)", file=sys.stderr, flush=True)
            downloads_only = Path(scratch) / "cache-downloads-only"
            shutil.copytree(empty / "debs", downloads_only / "debs", copy_function=os.link)
            os.environ["KEEL_CACHE_DIR"] = str(downloads_only)
            cold, _ = timed_build(out, args.definition)
            figures["cold_build_downloads_cached_s"] = round(cold, 1)
        else:
            timed_build(out, args.definition)  # make sure the cache is warm
        if args.warm_runs:
            warm, steps = warm_rebuilds(out, args.warm_runs, args.definition)
            figures["warm_rebuild_s"] = round(statistics.median(warm), 1)
            figures["warm_rebuild_runs_s"] = [round(s, 1) for s in warm]
            figures["warm_rebuild_steps_s"] = steps
        figures.update(artifact_sizes(out))

    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:<22} {value}")
    return 0


if __name__ == "__main__":
    Path("build").mkdir(exist_ok=True)
    sys.exit(main())
