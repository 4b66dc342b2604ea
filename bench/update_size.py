"""The update bundle of an image: how big it is, and what it costs to make and check.

Reads an existing build output folder (payload/ with payload.json), or builds the image
first. Writes a fresh bundle into a temporary folder to time it, then times the
verification `keel publish` does (decompress and hash every member).

Usage: python bench/update_size.py [--build-dir DIR | --definition YAML --out DIR] [--json]"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from composer.build import bundle
from composer.build.pipeline import build_image
from composer.core.errors import KeelError
from composer.core.paths import DEFAULT_IMAGE

ISSUE_TARGET_BYTES = 300 * 1000 * 1000  # issue 5: a docker-host bundle of at most 300 MB
MB = 1000 * 1000


def ensure_build(build_dir: Path | None, definition: Path, out: Path) -> Path:
    if build_dir is not None:
        if not (build_dir / "payload" / "payload.json").is_file():
            raise KeelError(f"{build_dir} has no payload/payload.json: not a `keel build` output")
        return build_dir
    if (out / "payload" / "payload.json").is_file():
        return out
    print(f"building {definition} into {out} ...", file=sys.stderr)
    return build_image(definition, out_dir=out).out_dir


def measure(build: Path) -> dict[str, Any]:
    payload = json.loads((build / "payload" / "payload.json").read_text())
    payload_bytes = sum(record["size"] for record in payload["files"].values())
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as scratch:
        start = time.monotonic()
        path = bundle.write_bundle(build / "payload", Path(scratch))
        write_seconds = time.monotonic() - start
        start = time.monotonic()
        bundle.verify_bundle(path)
        verify_seconds = time.monotonic() - start
        size = path.stat().st_size
    return {
        "image": payload["name"],
        "version": payload["version"],
        "zstd_options": " ".join(bundle.ZSTD_OPTIONS),
        "root_image_bytes": payload["files"]["root"]["size"],
        "payload_bytes": payload_bytes,
        "bundle_bytes": size,
        "bundle_mb": round(size / MB, 1),
        "ratio_to_payload": round(size / payload_bytes, 3),
        "write_seconds": round(write_seconds, 1),
        "verify_seconds": round(verify_seconds, 1),
        "within_300_mb": size <= ISSUE_TARGET_BYTES,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, help="an existing `keel build` output folder")
    parser.add_argument("--definition", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("build/bench/docker-host"),
        help="where to build when there is no build yet (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    try:
        figures = measure(ensure_build(args.build_dir, args.definition, args.out))
    except KeelError as error:
        print(f"update_size: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{figures['image']} {figures['version']} update bundle ({figures['zstd_options']})")
    payload_mb = figures["payload_bytes"] / MB
    verdict = "met" if figures["within_300_mb"] else "MISSED"
    print(
        f"  size    {figures['bundle_mb']} MB ({figures['ratio_to_payload']:.0%} of the "
        f"{payload_mb:.1f} MB payload; target 300 MB: {verdict})"
    )
    print(f"  write   {figures['write_seconds']} s (compress root image, write tar)")
    print(f"  verify  {figures['verify_seconds']} s (decompress, sha256 every member)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
