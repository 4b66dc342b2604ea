"""Which disk file `keel run` boots: an artifact directory, a disk file, or the newest build."""

from __future__ import annotations

import re
from pathlib import Path

from composer.core.errors import KeelError

DEFAULT_IMAGE_NAME = "docker-host"
# Preferred first: the compressed qcow2 is smaller and QEMU reads it just as well.
DISK_FILES = ("disk.qcow2", "disk.raw")


def _version_key(directory: Path) -> tuple[tuple[int, ...], float]:
    # Numeric parts compare as numbers (0.10 > 0.9); mtime breaks ties and orders
    # versions without digits.
    numbers = tuple(int(n) for n in re.findall(r"\d+", directory.name))
    return numbers, directory.stat().st_mtime


def newest_artifact(build_root: Path, name: str = DEFAULT_IMAGE_NAME) -> Path:
    """The newest version directory of build/<name>/ that holds a disk."""
    candidates = [
        d
        for d in (build_root / name).glob("*")
        if d.is_dir() and any((d / f).is_file() for f in DISK_FILES)
    ]
    if not candidates:
        raise KeelError(
            f"no built {name} image under {build_root / name}",
            hint=f"build one with `keel build images/{name}.yaml`, or pass a PATH to boot",
        )
    return max(candidates, key=_version_key)


def resolve_disk(path: Path | None, build_root: Path) -> Path:
    """The absolute disk file to boot for a PATH argument (None = default image)."""
    if path is None:
        path = newest_artifact(build_root)
    if path.is_dir():
        for name in DISK_FILES:
            if (path / name).is_file():
                return (path / name).resolve()
        raise KeelError(
            f"{path} holds no disk image ({' or '.join(DISK_FILES)})",
            hint="pass a build artifact directory such as build/docker-host/<version>",
        )
    if not path.is_file():
        raise KeelError(f"image not found: {path}", hint="check the path, or run `keel build`")
    if path.suffix not in (".qcow2", ".raw", ".img"):
        raise KeelError(f"{path} is not a .qcow2 or .raw disk image")
    return path.resolve()


def disk_format(disk: Path) -> str:
    """qcow2 or raw, from the file's magic bytes rather than trusting its name."""
    with disk.open("rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def image_label(disk: Path) -> str:
    """A short name for listings: <name>/<version> for artifacts, else the file name."""
    if disk.name in DISK_FILES and disk.parent.parent.name:
        return f"{disk.parent.parent.name}/{disk.parent.name}"
    return disk.name
