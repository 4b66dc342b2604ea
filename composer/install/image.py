"""The build an install writes: an artifact folder's disk.raw and what its
manifest.json records of each partition (where it starts, the sha256 of its image)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.core.errors import KeelError
from composer.vm.image import newest_artifact

RAW = "disk.raw"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class WrittenPartition:
    """A partition of the image, in bytes; image_size and sha256 describe the
    filesystem image written at its start (None for an empty slot)."""

    number: int
    label: str
    type: str
    uuid: str
    start: int
    size: int
    image_size: int | None
    sha256: str | None


@dataclass(frozen=True)
class SourceImage:
    folder: Path
    name: str
    version: str
    raw: Path
    size: int  # of disk.raw
    partitions: tuple[WrittenPartition, ...]

    def partition(self, label: str) -> WrittenPartition:
        for part in self.partitions:
            if part.label == label:
                return part
        raise KeelError(f"{self.folder / MANIFEST} has no {label!r} partition")


def artifact_folder(given: Path | None, build_root: Path) -> Path:
    """IMAGE as given (an artifact folder, or a disk.raw in one), else the newest
    docker-host build, as `keel run` picks it."""
    if given is None:
        return newest_artifact(build_root)
    if given.is_file() and given.name == RAW:
        return given.parent
    if not given.is_dir():
        raise KeelError(
            f"{given} is not a build folder",
            hint="pass a folder `keel build` wrote, such as build/docker-host/1.0.0",
        )
    return given


def load_image(folder: Path) -> SourceImage:
    raw, manifest = folder / RAW, folder / MANIFEST
    for path in (raw, manifest):
        if not path.is_file():
            raise KeelError(
                f"{folder} has no {path.name}",
                hint="keel install writes the disk.raw of a build folder (keel build makes it)",
            )
    try:
        data = json.loads(manifest.read_text())
        partitions = tuple(_partition(p) for p in data["disk"]["partitions"])
        name, version = str(data["name"]), str(data["version"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KeelError(f"{manifest} is not a Keel manifest: {error}") from None
    size = raw.stat().st_size
    if size != int(data["disk"]["size"]):
        raise KeelError(f"{raw} is {size} bytes, but {manifest} says {data['disk']['size']}")
    return SourceImage(folder, name, version, raw, size, partitions)


def _partition(entry: dict[str, Any]) -> WrittenPartition:
    image = entry.get("image")
    return WrittenPartition(
        number=int(entry["number"]),
        label=str(entry["label"]),
        type=str(entry["type"]).upper(),
        uuid=str(entry["uuid"]).upper(),
        start=int(entry["start"]),
        size=int(entry["size"]),
        image_size=int(image["size"]) if image else None,
        sha256=str(image["sha256"]) if image else None,
    )
