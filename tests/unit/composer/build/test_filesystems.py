"""Filesystem images: the same files give the same bytes, whatever the order the build
machine's filesystem lists them in."""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.build.filesystems import make_vfat
from hostd.formats.sizes import MIB

FILES = ("EFI/BOOT/BOOTX64.EFI", "EFI/Linux/keel-a.efi", "EFI/Linux/keel-b.efi",
         "loader/entries/a.conf", "loader/entries/b.conf", "loader/loader.conf")  # fmt: skip


@pytest.fixture
def in_memory() -> Iterator[Path]:
    """A folder on tmpfs, which lists a folder newest entry first (ext4 by name hash)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        yield Path(folder)


def write_tree(root: Path, names: tuple[str, ...] | list[str]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 50)
    return root


def test_the_esp_image_does_not_depend_on_the_order_files_were_made(in_memory: Path) -> None:
    forward = write_tree(in_memory / "forward", FILES)
    backward = write_tree(in_memory / "backward", list(reversed(FILES)))
    assert [p.name for p in (forward / "EFI/Linux").iterdir()] != [
        p.name for p in (backward / "EFI/Linux").iterdir()
    ], "tmpfs should list the two folders in different orders"
    images = [
        make_vfat(tree, in_memory / f"{tree.name}.vfat", size=64 * MIB, label="esp",
                  volume_id="12345678", epoch=1_700_000_000)
        for tree in (forward, backward)
    ]  # fmt: skip
    assert images[0].read_bytes() == images[1].read_bytes()
