"""Slots: which one is booted (command line and / device must agree), streaming a
zstd root image into a slot with verification."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from hostd.formats.bundle import BundleError, Part
from hostd.slots import SlotError, booted_slot, read_back_sha256, read_release, write_compressed


def mountinfo_for(device: Path) -> str:
    rdev = os.stat(device).st_rdev
    return f"22 1 {os.major(rdev)}:{os.minor(rdev)} / / ro,relatime - erofs /dev/vda2 ro\n"


@pytest.fixture
def partlabels(tmp_path: Path) -> Path:
    """by-partlabel links to two real (character) devices standing in for the slots."""
    folder = tmp_path / "by-partlabel"
    folder.mkdir()
    (folder / "root-a").symlink_to("/dev/null")
    (folder / "root-b").symlink_to("/dev/zero")
    return folder


def test_booted_slot_when_both_sources_agree(partlabels: Path) -> None:
    info = mountinfo_for(partlabels / "root-b")
    assert booted_slot("ro keel.slot=b quiet", info, partlabels) == "b"


def test_disagreement_refuses(partlabels: Path) -> None:
    info = mountinfo_for(partlabels / "root-b")
    with pytest.raises(SlotError, match="says slot a but / is root-b"):
        booted_slot("keel.slot=a", info, partlabels)


def test_no_slot_on_the_command_line_refuses(partlabels: Path) -> None:
    with pytest.raises(SlotError, match="names no Keel slot"):
        booted_slot("ro quiet", mountinfo_for(partlabels / "root-a"), partlabels)


def test_read_release(tmp_path: Path) -> None:
    path = tmp_path / "release"
    path.write_text(
        "KEEL_IMAGE_NAME=docker-host\nKEEL_IMAGE_VERSION=2.0.0\nKEEL_ARCHITECTURE=x86-64\n"
    )
    release = read_release(path)
    assert (release.name, release.version, release.architecture) == (
        "docker-host",
        "2.0.0",
        "x86-64",
    )


def compressed(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def test_write_compressed_fills_the_slot_and_reads_back(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    slot = tmp_path / "root-b"
    slot.write_bytes(b"\0" * (8 * 1024 * 1024))
    part = Part("root.erofs.zst", "zstd", len(data), hashlib.sha256(data).hexdigest())
    seen: list[int] = []
    write_compressed(slot, [compressed(data)], part, seen.append)
    assert seen[-1] == len(data)
    assert read_back_sha256(slot, len(data)) == part.sha256
    assert slot.stat().st_size == 8 * 1024 * 1024  # a device is never truncated


def test_more_data_than_announced_is_never_written(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    slot = tmp_path / "root-b"
    slot.write_bytes(b"\0" * (4 * 1024 * 1024))
    part = Part("root.erofs.zst", "zstd", 1024 * 1024, hashlib.sha256(data).hexdigest())
    with pytest.raises(SlotError, match="more than"):
        write_compressed(slot, [compressed(data)], part)
    assert slot.read_bytes()[1024 * 1024 :] == b"\0" * (3 * 1024 * 1024)


def test_a_wrong_digest_is_reported(tmp_path: Path) -> None:
    data = b"erofs" * 1000
    slot = tmp_path / "root-b"
    slot.write_bytes(b"\0" * 10000)
    part = Part("root.erofs.zst", "zstd", len(data), "0" * 64)
    with pytest.raises(BundleError, match="sha256"):
        write_compressed(slot, [compressed(data)], part)


def test_corrupt_zstd_is_reported(tmp_path: Path) -> None:
    slot = tmp_path / "root-b"
    slot.write_bytes(b"\0" * 10000)
    part = Part("root.erofs.zst", "zstd", 10, "0" * 64)
    with pytest.raises(SlotError, match="zstd failed"):
        write_compressed(slot, [b"this is not zstd"], part)
