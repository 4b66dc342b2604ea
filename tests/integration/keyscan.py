"""Private keys in the artifacts of a build, each scanned as what it holds
(composer/build/privatekeys.py): the root image extracted, the initrd decompressed,
the update bundle member by member, and the disk partition by partition.

The disk's root-a slot is the payload's root image byte for byte (checked here), so
it is scanned as that image; the ESP's files are copied out with mtools and the var
partition's with debugfs, as a person would look at them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

from composer.build.privatekeys import Finding, scan_bundle, scan_erofs, scan_tree, scan_uki
from hostd.formats.sizes import MIB


def scan_artifacts(out: Path) -> list[Finding]:
    """Every private key in a build output folder: payload, bundle and disk image."""
    (bundle,) = (out / "bundle").glob("*.keelbundle")
    root = out / "payload/root.erofs"
    in_root = scan_erofs(root)
    return [
        *inside("payload/root.erofs", in_root),
        *inside("payload/keel.efi", scan_uki(out / "payload/keel.efi")),
        *inside(f"bundle/{bundle.name}", scan_bundle(bundle)),
        *inside("disk.raw", scan_disk(out / "disk.raw", root, in_root)),
    ]


def inside(artifact: str, findings: list[Finding]) -> list[Finding]:
    return [Finding(f"{artifact}:{finding.where}", finding.kind) for finding in findings]


def partitions(disk: Path) -> dict[str, tuple[int, int]]:
    """Partition label -> (offset, size) in bytes."""
    table = json.loads(
        subprocess.run(["sfdisk", "--json", disk], capture_output=True, check=True).stdout
    )["partitiontable"]
    sector = int(table["sectorsize"])
    return {
        p["name"]: (int(p["start"]) * sector, int(p["size"]) * sector) for p in table["partitions"]
    }


def scan_disk(disk: Path, root_image: Path, in_root: list[Finding]) -> list[Finding]:
    """in_root: what scan_erofs found in root_image, which root-a must hold."""
    parts = partitions(disk)
    offset, _ = parts["root-a"]
    assert digest(disk, offset, root_image.stat().st_size) == digest(root_image), (
        "root-a does not hold the payload's root image"
    )
    findings = inside("root-a", in_root)
    with tempfile.TemporaryDirectory(prefix="keel-disk-") as scratch:
        esp, var = Path(scratch) / "esp", Path(scratch) / "var"
        esp.mkdir()
        var.mkdir()
        subprocess.run(["mcopy", "-s", "-n", "-i", f"{disk}@@{parts['esp'][0]}", "::/*", esp],
                       check=True, capture_output=True)  # fmt: skip
        findings += inside("esp", scan_tree(esp))
        for uki in sorted(esp.rglob("keel.efi")):
            findings += inside(f"esp/{uki.relative_to(esp)}", scan_uki(uki))
        subprocess.run(["debugfs", "-R", f"rdump / {var}", f"{disk}?offset={parts['var'][0]}"],
                       check=True, capture_output=True)  # fmt: skip
        assert (var / "lib/keel").is_dir(), "debugfs copied nothing out of the var partition"
        findings += inside("var", scan_tree(var, "/var"))
    return findings


def digest(path: Path, offset: int = 0, size: int | None = None) -> str:
    remaining = path.stat().st_size - offset if size is None else size
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(offset)
        while remaining > 0:
            block = handle.read(min(4 * MIB, remaining))
            if not block:
                break
            sha.update(block)
            remaining -= len(block)
    return sha.hexdigest()
