"""What keel install refuses to write to, decided before anything is written."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.install.image import load_image
from composer.install.target import check_target
from hostd.ignition.blockdev import Device, Found, Machine
from tests.unit.composer.install.conftest import MIB, needs_tools

pytestmark = needs_tools


def refusal(*args: object, **kwargs: object) -> str:
    with pytest.raises(KeelError) as caught:
        check_target(*args, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def test_a_new_file_takes_the_image_size_or_the_size_asked_for(
    build_folder: Path, tmp_path: Path
) -> None:
    image = load_image(build_folder)
    target = check_target(tmp_path / "a.raw", image)
    assert (target.is_device, target.size) == (False, image.size)
    assert check_target(tmp_path / "a.raw", image, size=64 * MIB).size == 64 * MIB
    assert not (tmp_path / "a.raw").exists()  # checking writes nothing


def test_a_file_smaller_than_the_image_is_refused(build_folder: Path, tmp_path: Path) -> None:
    message = refusal(tmp_path / "a.raw", load_image(build_folder), size=8 * MIB)
    assert "--size 0.0 GiB is smaller than the image" in message


def test_a_file_with_a_partition_table_needs_force(build_folder: Path, tmp_path: Path) -> None:
    image = load_image(build_folder)
    old = tmp_path / "old.raw"
    with old.open("wb") as handle:
        handle.truncate(64 * MIB)
    subprocess.run(["sfdisk", "--quiet", str(old)], input="label: gpt\n,\n", text=True, check=True)
    message = refusal(old, image)
    assert "already holds a partition table (gpt)" in message and "--force" in message
    assert check_target(old, image, force=True).path == old


def test_a_file_with_a_filesystem_needs_force(build_folder: Path, tmp_path: Path) -> None:
    old = tmp_path / "fs.img"
    with old.open("wb") as handle:
        handle.truncate(8 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(old)], check=True)
    assert "already holds a filesystem or other signature (ext4)" in refusal(
        old, load_image(build_folder)
    )


def test_files_of_the_build_itself_and_odd_targets_are_refused(
    build_folder: Path, tmp_path: Path
) -> None:
    image = load_image(build_folder)
    assert "is a file of the build" in refusal(build_folder / "disk.raw", image, force=True)
    link = tmp_path / "innocent.raw"
    link.symlink_to(build_folder / "manifest.json")
    assert "is a file of the build" in refusal(link, image, force=True)
    assert "neither a block device nor a regular file" in refusal(tmp_path, image)
    assert "does not exist" in refusal(tmp_path / "no/such/folder/a.raw", image)


def test_a_file_behind_a_loop_device_is_refused(build_folder: Path, tmp_path: Path) -> None:
    used = tmp_path / "used.raw"
    used.write_bytes(b"")
    sys = tmp_path / "sys"
    (sys / "block/loop3/loop").mkdir(parents=True)
    (sys / "block/loop3/loop/backing_file").write_text(f"{used}\n")
    message = refusal(used, load_image(build_folder), machine=Machine(sys=sys))
    assert "backing file of /dev/loop3" in message and "losetup -d /dev/loop3" in message


# --- block devices: a device node made here, and a machine that describes it -------


class FakeMachine(Machine):
    def __init__(self, sys: Path, **facts: object) -> None:
        super().__init__(sys=sys)
        self.facts = facts

    def device(self, path: str) -> Device | None:
        return self.facts.get("device", Device(path, "sdz", "sdz"))  # type: ignore[return-value]

    def os_disks(self) -> dict[str, str]:
        return self.facts.get("own", {})  # type: ignore[return-value]

    def users(self, device: Device) -> list[str]:
        return self.facts.get("users", [])  # type: ignore[return-value]

    def probe(self, node: str, offset: int | None = None, size: int | None = None) -> Found:
        return self.facts.get("found", Found())  # type: ignore[return-value]


@pytest.fixture
def disk_node(tmp_path: Path) -> Path:
    node = tmp_path / "sdz"
    try:
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(8, 208))
    except PermissionError:
        pytest.skip("cannot make a device node here")
    return node


def fake_sys(tmp_path: Path, size: int, partitions: int = 0) -> Path:
    entry = tmp_path / "sys/class/block/sdz"
    entry.mkdir(parents=True)
    (entry / "size").write_text(f"{size // 512}\n")
    (entry / "ro").write_text("0\n")
    (entry / "queue").mkdir()
    (entry / "queue/logical_block_size").write_text("512\n")
    for number in range(1, partitions + 1):
        (entry / f"sdz{number}").mkdir()
        (entry / f"sdz{number}/partition").write_text(f"{number}\n")
    return tmp_path / "sys"


def test_a_blank_disk_big_enough_is_taken_whole(
    build_folder: Path, tmp_path: Path, disk_node: Path
) -> None:
    machine = FakeMachine(fake_sys(tmp_path, 64 * MIB))
    target = check_target(disk_node, load_image(build_folder), machine=machine)
    assert (target.is_device, target.size) == (True, 64 * MIB)


@pytest.mark.parametrize(
    ("facts", "partitions", "size", "expected"),
    [
        ({"users": ["/dev/sdz1 is mounted at /mnt"]}, 1, None, "is in use: /dev/sdz1 is mounted"),
        ({"own": {"sdz": "/"}}, 2, None, "holds this machine's own filesystems (/ is on it)"),
        ({"device": Device("/dev/sdz1", "sdz1", "sdz", 1)}, 0, None, "not a whole disk"),
        ({}, 2, None, "already has partitions"),
        (
            {"found": Found(type="xfs")},
            0,
            None,
            "already holds a filesystem or other signature (xfs)",
        ),
        ({}, 0, 20 * MIB, "--size is for image files"),
    ],
)
def test_a_disk_is_refused(
    facts: dict[str, object],
    partitions: int,
    size: int | None,
    expected: str,
    build_folder: Path,
    tmp_path: Path,
    disk_node: Path,
) -> None:
    machine = FakeMachine(fake_sys(tmp_path, 64 * MIB, partitions), **facts)
    assert expected in refusal(disk_node, load_image(build_folder), size=size, machine=machine)


def test_a_small_disk_is_refused_even_with_force(
    build_folder: Path, tmp_path: Path, disk_node: Path
) -> None:
    machine = FakeMachine(fake_sys(tmp_path, 16 * MIB))
    message = refusal(disk_node, load_image(build_folder), force=True, machine=machine)
    assert "is smaller than the image" in message


def test_force_overrides_only_existing_partitions(
    build_folder: Path, tmp_path: Path, disk_node: Path
) -> None:
    image = load_image(build_folder)
    machine = FakeMachine(fake_sys(tmp_path, 64 * MIB, 2), found=Found(table="gpt"))
    assert check_target(disk_node, image, force=True, machine=machine).is_device
    busy = FakeMachine(machine.sys, users=["/dev/sdz2 is in use as swap"])
    assert "in use" in refusal(disk_node, image, force=True, machine=busy)
