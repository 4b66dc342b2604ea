"""Build step: manifest.json and the slot payload's payload.json.

Nothing in them depends on the build machine or the wall clock, so two builds of the
same definition with the same package cache and SOURCE_DATE_EPOCH write the same bytes."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.build.partitions import DiskPlan
from composer.definition.model import ImageDefinition
from hostd.formats.sizes import MIB

if TYPE_CHECKING:
    from composer.build.context import BuildContext

MANIFEST_FORMAT = 1


def sha256_file(path: Path) -> str:
    """sha256 of a file; a build asks for the root image's three times (payload,
    partition table, summary), so unchanged files are hashed once.

    The change time is part of the key: a build clamps its outputs' mtimes to
    SOURCE_DATE_EPOCH and keeps their sizes, and the filesystem may hand the next
    build's file the inode number just freed, so path, size, mtime and inode alone
    matched a rebuilt kernel image in the next build of the same process, and its
    payload.json kept the old hash. Every write or new file sets the change time."""
    stat = path.stat()
    return _sha256_of(path.resolve(), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: Path, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    return {"file": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


@dataclass(frozen=True)
class FilesystemImage:
    label: str
    filesystem: str
    path: Path


def build_manifest(
    defn: ImageDefinition,
    *,
    definition_sha256: str,
    epoch: int,
    plan: DiskPlan,
    filesystems: list[FilesystemImage],
    kernel_version: str,
    packages: tuple[tuple[str, str, str], ...],
    payload: dict[str, Any],
) -> dict[str, Any]:
    by_label = {fs.label: fs for fs in filesystems}
    partitions = []
    for part in plan.partitions:
        fs = by_label.get(part.label)
        partitions.append(
            {
                "number": part.number,
                "label": part.label,
                "type": part.type_guid,
                "uuid": part.uuid,
                "start": part.start,
                "size": part.size,
                "filesystem": fs.filesystem if fs else None,
                "image": file_record(fs.path) if fs else None,
            }
        )
    built = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return {
        "format": MANIFEST_FORMAT,
        "name": defn.name,
        "version": defn.version,
        "description": defn.description,
        "architecture": defn.debian.architecture,
        "suite": defn.debian.suite,
        "build_time": built.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_date_epoch": epoch,
        "definition_sha256": definition_sha256,
        "kernel": {"version": kernel_version, "cmdline": payload["cmdline"]},
        "disk": {"uuid": plan.disk_uuid, "size": plan.size, "partitions": partitions},
        "payload": payload,
        "packages": [{"name": n, "version": v, "architecture": a} for n, v, a in packages],
    }


def payload_metadata(
    defn: ImageDefinition, kernel_version: str, cmdline: tuple[str, ...], files: dict[str, Path]
) -> dict[str, Any]:
    """What the update work needs to know about a slot payload without opening it."""
    return {
        "format": MANIFEST_FORMAT,
        "name": defn.name,
        "version": defn.version,
        "architecture": defn.debian.architecture,
        "kernel_version": kernel_version,
        "cmdline": list(cmdline),
        "files": {role: file_record(path) for role, path in sorted(files.items())},
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def step(ctx: BuildContext) -> None:
    """payload.json for the slot payload, then manifest.json for the whole build."""
    defn, final = ctx.definition, ctx.finalized
    files = {"root": ctx.root_image, "uki": ctx.uki}
    payload = payload_metadata(defn, final.kernel_version, ctx.kernel_cmdline, files)
    write_json(ctx.payload_json, payload)
    data = build_manifest(
        defn,
        definition_sha256=ctx.definition_sha256,
        epoch=ctx.epoch,
        plan=ctx.disk,
        filesystems=[
            FilesystemImage("esp", "vfat", ctx.esp_image),
            FilesystemImage("root-a", "erofs", ctx.root_image),
            FilesystemImage("var", "ext4", ctx.var_image),
        ],
        kernel_version=final.kernel_version,
        packages=final.packages,
        payload=payload,
    )
    write_json(ctx.manifest, data)
