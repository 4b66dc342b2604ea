"""The update bundle: layout, round trip, reproducibility, damage detection."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from composer.build import bundle
from composer.build.manifest import file_record
from composer.core.errors import KeelError
from hostd.formats.bundle import Part


def fake_build(
    parent: Path,
    version: str = "1.0.0",
    name: str = "demo",
    *,
    root: bytes | None = None,
    uki: bytes | None = None,
) -> Path:
    """A build output folder with a small slot payload, as `keel build` lays it out;
    root and uki: the payload files' bytes (by default compressible and
    version-specific, like a real root image)."""
    out = parent / name / version
    payload = out / "payload"
    payload.mkdir(parents=True)
    if root is None:
        root = f"root of {name} {version}\n".encode() * 4096
    if uki is None:
        uki = b"unified kernel image " + version.encode() + os.urandom(512)
    (payload / "root.erofs").write_bytes(root)
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


def bundle_of(build: Path) -> Path:
    (found,) = (build / "bundle").glob("*.keelbundle")
    return found


def test_bundle_is_named_after_image_and_holds_members_in_order(tmp_path: Path) -> None:
    path = bundle_of(fake_build(tmp_path, "1.2.0"))
    assert path.name == "demo-1.2.0-x86-64.keelbundle"
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["bundle.json", "root.erofs.zst", "keel.efi"]
        assert {(m.uid, m.gid, m.mtime, m.mode) for m in tar.getmembers()} == {(0, 0, 0, 0o644)}


def test_bundle_round_trips_and_verifies(tmp_path: Path) -> None:
    build = fake_build(tmp_path, "1.2.0")
    info = bundle.verify_bundle(bundle_of(build))
    assert (info.name, info.version, info.architecture) == ("demo", "1.2.0", "x86-64")
    assert info.kernel_version == "6.1.0-test-amd64"
    assert info.cmdline == ("console=ttyS0",)
    root = build / "payload/root.erofs"
    assert info.root == Part(
        member="root.erofs.zst",
        compression="zstd",
        size=root.stat().st_size,
        sha256=file_record(root)["sha256"],
    )
    assert info.uki.compression is None


def test_root_image_is_compressed(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    assert bundle_of(build).stat().st_size < (build / "payload/root.erofs").stat().st_size / 4


def test_same_payload_gives_same_bundle_bytes(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    again = bundle.write_bundle(build / "payload", tmp_path / "again")
    assert again.read_bytes() == bundle_of(build).read_bytes()


def _rewrite_member(path: Path, member: str, data: bytes) -> None:
    """Replace one member's bytes, leaving bundle.json (and its sha256) as it was."""
    with tarfile.open(path) as tar:
        contents = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for entry, content in contents:
            if entry.name == member:
                content = data
                entry.size = len(data)
            tar.addfile(entry, io.BytesIO(content))


def test_member_with_wrong_sha256_is_detected(tmp_path: Path) -> None:
    path = bundle_of(fake_build(tmp_path))
    original = (tmp_path / "demo/1.0.0/payload/keel.efi").read_bytes()
    _rewrite_member(path, "keel.efi", original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(KeelError, match=r"member keel.efi \(uki\) does not match"):
        bundle.verify_bundle(path)


def test_root_member_that_decompresses_to_other_bytes_is_detected(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    other = tmp_path / "other.erofs"
    other.write_bytes(b"not the root image" * 100)
    packed = bundle.compress_zstd(other, tmp_path / "other.zst")
    path = bundle_of(build)
    _rewrite_member(path, "root.erofs.zst", packed.read_bytes())
    with pytest.raises(KeelError, match=r"root.erofs.zst \(root\) does not match"):
        bundle.verify_bundle(path)


def test_truncated_bundle_is_refused(tmp_path: Path) -> None:
    path = bundle_of(fake_build(tmp_path))
    with tarfile.open(path) as tar:
        last = tar.getmember("keel.efi")
    # Cut inside the last member: what an interrupted download leaves.
    with path.open("r+b") as handle:
        handle.truncate(last.offset_data + last.size // 2)
    with pytest.raises(KeelError):
        bundle.verify_bundle(path)


def test_other_tar_is_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "x.keelbundle"
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
    with pytest.raises(KeelError, match="not a Keel bundle"):
        bundle.verify_bundle(path)
    path.write_bytes(b"plain text, not a tar at all" * 50)
    with pytest.raises(KeelError, match="not a readable bundle"):
        bundle.verify_bundle(path)


def test_bundle_of_an_earlier_version_in_the_same_folder_is_replaced(tmp_path: Path) -> None:
    build = fake_build(tmp_path, "1.0.0")
    payload = json.loads((build / "payload/payload.json").read_text())
    payload["version"] = "1.0.1"
    (build / "payload/payload.json").write_text(json.dumps(payload))
    bundle.write_bundle(build / "payload", build / "bundle")
    assert [p.name for p in (build / "bundle").iterdir()] == ["demo-1.0.1-x86-64.keelbundle"]
