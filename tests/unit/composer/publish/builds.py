"""Fake builds for the delta tests: root images made of labelled 4 KiB blocks, so two
versions share exactly the blocks whose labels they share."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hostd.formats.blockindex import BLOCK
from tests.unit.composer.build.test_bundle import fake_build


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
    # The kernel image: two whole blocks shared by every version, then the version.
    kernel_image = uki if uki is not None else block(9000) + block(9001) + f"uki {version}".encode()
    return fake_build(parent, version, name, root=root_image(labels, tail), uki=kernel_image)


def bundle_file(build_dir: Path) -> Path:
    (found,) = (build_dir / "bundle").glob("*.keelbundle")
    return found


def blocks_of(data: bytes) -> list[bytes]:
    return [data[start : start + BLOCK] for start in range(0, len(data), BLOCK)]
