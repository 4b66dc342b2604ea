"""Which disk `keel run` boots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.vm.image import disk_format, image_label, newest_artifact, resolve_disk


def artifact(build: Path, version: str, disk: str = "disk.qcow2", mtime: float = 0) -> Path:
    directory = build / "docker-host" / version
    directory.mkdir(parents=True)
    (directory / disk).write_bytes(b"QFI\xfb" if disk.endswith("qcow2") else b"\0" * 512)
    if mtime:
        os.utime(directory, (mtime, mtime))
    return directory


def test_newest_version_compares_numerically(tmp_path: Path) -> None:
    artifact(tmp_path, "0.9.0", mtime=3000)
    newest = artifact(tmp_path, "0.10.0", mtime=1000)
    artifact(tmp_path, "0.2.5", mtime=2000)
    assert newest_artifact(tmp_path) == newest
    assert resolve_disk(None, tmp_path) == (newest / "disk.qcow2").resolve()


def test_directories_without_disk_are_ignored(tmp_path: Path) -> None:
    good = artifact(tmp_path, "1.0")
    (tmp_path / "docker-host" / "2.0").mkdir()  # a build in progress
    assert newest_artifact(tmp_path) == good


def test_no_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeelError) as err:
        resolve_disk(None, tmp_path)
    assert "keel build" in str(err.value)


def test_artifact_dir_prefers_qcow2_then_raw(tmp_path: Path) -> None:
    raw_only = artifact(tmp_path, "1.0", disk="disk.raw")
    assert resolve_disk(raw_only, tmp_path).name == "disk.raw"
    (raw_only / "disk.qcow2").write_bytes(b"QFI\xfb")
    assert resolve_disk(raw_only, tmp_path).name == "disk.qcow2"


def test_disk_file_and_errors(tmp_path: Path) -> None:
    disk = artifact(tmp_path, "1.0", disk="disk.raw") / "disk.raw"
    assert resolve_disk(disk, tmp_path) == disk.resolve()
    assert disk_format(disk) == "raw"
    assert image_label(disk) == "docker-host/1.0"
    with pytest.raises(KeelError):
        resolve_disk(tmp_path / "missing.qcow2", tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(KeelError):
        resolve_disk(tmp_path / "notes.txt", tmp_path)
    with pytest.raises(KeelError):
        resolve_disk(tmp_path / "docker-host", tmp_path)  # a directory without a disk
