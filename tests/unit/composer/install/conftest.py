"""A small build folder for the install tests: a GPT disk.raw with a FAT ESP, a
root-a image, an empty root-b and an ext4 var, and its manifest.json, made with the
build's own disk assembly (sfdisk and dd on files)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from composer.build.disk import assemble
from composer.build.manifest import file_record
from composer.build.partitions import plan_disk
from composer.definition.model import Partitions

MIB = 1024**2

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4", "blkid")),
    reason="needs sfdisk, dosfstools, mtools, e2fsprogs and blkid",
)


def make_build(folder: Path) -> Path:
    folder.mkdir(parents=True)
    work = folder / ".work"
    work.mkdir()
    plan = plan_disk(Partitions(esp=8 * MIB, root=4 * MIB, var=8 * MIB, var_max=0), "t", "1.0")
    esp = work / "esp.vfat"
    with esp.open("wb") as handle:
        handle.truncate(8 * MIB)
    subprocess.run(["mkfs.vfat", "-n", "ESP", str(esp)], capture_output=True, check=True)
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(["mmd", "-i", str(esp), "::keel"], env=env, check=True)
    root = work / "root.erofs"
    root.write_bytes(random.Random(7).randbytes(3 * MIB + 512))
    var = work / "var.ext4"
    with var.open("wb") as handle:
        handle.truncate(8 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(var)], check=True)
    raw = assemble(plan, {"esp": esp, "root-a": root, "var": var}, folder / "disk.raw")
    images = {"esp": esp, "root-a": root, "var": var}
    partitions = [
        {
            "number": p.number,
            "label": p.label,
            "type": p.type_guid,
            "uuid": p.uuid,
            "start": p.start,
            "size": p.size,
            "image": file_record(images[p.label]) if p.label in images else None,
        }
        for p in plan.partitions
    ]
    manifest = {
        "name": "t",
        "version": "1.0",
        "disk": {"uuid": plan.disk_uuid, "size": raw.stat().st_size, "partitions": partitions},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(work)
    return folder


@pytest.fixture(scope="session")
def build_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_build(tmp_path_factory.mktemp("build") / "t" / "1.0")
