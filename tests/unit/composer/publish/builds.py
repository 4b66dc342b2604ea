"""Fake builds for the delta tests: root images made of labelled 4 KiB blocks, so two
versions share exactly the blocks whose labels they share."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from composer.build import bundle
from composer.build.manifest import file_record
from hostd.formats.blockindex import BLOCK


def block(label: int) -> bytes:
    """One 4 KiB block, the same for the same label, different for another."""
    return hashlib.sha256(label.to_bytes(4, "little")).digest() * (BLOCK // 32)


def root_image(labels: list[int], tail: bytes = b"") -> bytes:
    """Blocks with these labels, in order, then tail (a short last block)."""
    return b"".join(block(label) for label in labels) + tail


BASE = list(range(40))


def build(
    parent: Path,
    version: str,
    labels: list[int] = BASE,
    *,
    tail: bytes = b"end of image",
    uki: bytes | None = None,
    name: str = "demo",
) -> Path:
    """A build output folder as `keel build` lays it out, with a bundle of this root."""
    out = parent / name / version
    payload = out / "payload"
    payload.mkdir(parents=True)
    (payload / "root.erofs").write_bytes(root_image(labels, tail))
    # The kernel image: two whole blocks shared by every version, then the version.
    (payload / "keel.efi").write_bytes(block(9000) + block(9001) + f"uki {version}".encode())
    if uki is not None:
        (payload / "keel.efi").write_bytes(uki)
    files = {"root": payload / "root.erofs", "uki": payload / "keel.efi"}
    (payload / "payload.json").write_text(
        json.dumps(
            {
                "format": 1,
                "name": name,
                "version": version,
                "architecture": "x86-64",
                "kernel_version": "6.1.0-test-amd64",
                "cmdline": ["console=ttyS0"],
                "files": {role: file_record(path) for role, path in files.items()},
            }
        )
    )
    bundle.write_bundle(payload, out / "bundle")
    return out


def bundle_file(build_dir: Path) -> Path:
    (found,) = (build_dir / "bundle").glob("*.keelbundle")
    return found


def blocks_of(data: bytes) -> list[bytes]:
    return [data[start : start + BLOCK] for start in range(0, len(data), BLOCK)]
