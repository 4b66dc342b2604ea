"""Slots: which one is booted (command line and / device must agree), streaming a
zstd root image into a slot with verification."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hostd.formats.bundle import BundleError, Part
from hostd.slots import SlotError, booted_slot, read_back_sha256, read_release, write_compressed
from tests.unit.hostd.hosts import bounded


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


def test_without_a_slot_on_the_command_line_the_device_tells(partlabels: Path) -> None:
    """Under Secure Boot the UKI's own command line names no slot (the same UKI boots
    from either): the mounted device is the answer, and nothing else is."""
    cmdline = "root=/dev/mapper/keel-root ro quiet"
    assert booted_slot(cmdline, mountinfo_for(partlabels / "root-b"), partlabels) == "b"
    with pytest.raises(SlotError, match="not mounted from a Keel root slot"):
        booted_slot(cmdline, mountinfo_for(Path("/dev/full")), partlabels)


def test_a_slot_on_the_command_line_that_is_no_slot_refuses(partlabels: Path) -> None:
    with pytest.raises(SlotError, match="names no Keel slot"):
        booted_slot("keel.slot=c", mountinfo_for(partlabels / "root-a"), partlabels)


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


# A failing slot write (issue 12, item 2): zstd must be ended and the call must return,
# whatever failed. The data is incompressible and larger than both pipes, so zstd and
# the thread feeding it block once nobody reads zstd's output.
BIG = 8 * 1024 * 1024


class RecordedPopen(subprocess.Popen[bytes]):
    started: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "-dc" in self.args:  # type: ignore[operator]
            self.started.append(self)


@pytest.fixture
def zstd_processes(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The decompressing zstd processes started (by write_compressed) from now on."""
    started: list[subprocess.Popen[bytes]] = []
    monkeypatch.setattr(RecordedPopen, "started", started)
    monkeypatch.setattr(subprocess, "Popen", RecordedPopen)
    return started


def failing_writes(monkeypatch: pytest.MonkeyPatch, device: Path, after: int, error: int) -> None:
    """Writes to device fail with errno error once after bytes went to it, like a disk
    going bad (EIO) or a thin volume running out (ENOSPC)."""
    real = os.write
    target = str(device.resolve())
    written = 0

    def write(fd: int, data: Any) -> int:
        nonlocal written
        if os.readlink(f"/proc/self/fd/{fd}") == target:
            if written + len(data) > after:
                raise OSError(error, os.strerror(error))
            written += len(data)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def big_image() -> tuple[bytes, Part]:
    data = os.urandom(BIG)
    return compressed(data), Part("root.erofs.zst", "zstd", BIG, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
def test_a_slot_whose_writes_fail_ends_zstd_and_reports(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    zstd_processes: list[subprocess.Popen[bytes]],
    error: int,
) -> None:
    image, part = big_image()
    slot = tmp_path / "root-b"
    slot.write_bytes(b"\0" * (2 * BIG))
    failing_writes(monkeypatch, slot, after=1024 * 1024, error=error)
    with pytest.raises(OSError) as raised:
        bounded(lambda: write_compressed(slot, [image], part), 30)
    assert raised.value.errno == error
    assert [p.poll() is not None for p in zstd_processes] == [True]


def test_a_full_device_ends_zstd_and_reports(
    zstd_processes: list[subprocess.Popen[bytes]],
) -> None:
    image, part = big_image()
    with pytest.raises(OSError) as raised:  # /dev/full: every write is ENOSPC
        bounded(lambda: write_compressed(Path("/dev/full"), [image], part), 30)
    assert raised.value.errno == errno.ENOSPC
    assert [p.poll() is not None for p in zstd_processes] == [True]


def test_a_progress_callback_that_raises_ends_zstd(
    tmp_path: Path, zstd_processes: list[subprocess.Popen[bytes]]
) -> None:
    image, part = big_image()
    slot = tmp_path / "root-b"
    slot.write_bytes(b"\0" * (2 * BIG))

    def progress(done: int) -> None:
        raise RuntimeError("the state file could not be saved")

    with pytest.raises(RuntimeError, match="could not be saved"):
        bounded(lambda: write_compressed(slot, [image], part, progress), 30)
    assert [p.poll() is not None for p in zstd_processes] == [True]


def test_booted_slot_through_dm_verity(partlabels: Path, tmp_path: Path) -> None:
    # / is dm-0 (253:0) whose one slave is the slot's partition (here /dev/zero).
    slot_b = os.stat(partlabels / "root-b").st_rdev
    slave = tmp_path / "sys/dev/block/253:0/slaves/vda3"
    slave.mkdir(parents=True)
    (slave / "dev").write_text(f"{os.major(slot_b)}:{os.minor(slot_b)}\n")
    info = "22 1 253:0 / / ro,relatime - erofs /dev/mapper/keel-root ro\n"
    assert booted_slot("keel.slot=b", info, partlabels, tmp_path / "sys/dev/block") == "b"
    with pytest.raises(SlotError, match="says slot a but / is root-b"):
        booted_slot("keel.slot=a", info, partlabels, tmp_path / "sys/dev/block")
    # Without the slave link, dm-0 is no slot.
    with pytest.raises(SlotError, match="not mounted from root-b"):
        booted_slot("keel.slot=b", info, partlabels, tmp_path / "elsewhere")
