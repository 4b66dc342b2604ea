"""Before the first QEMU test: enough free disk for the suite's builds and VMs.

A full run takes about 12 GB at its peak (builds of several images, their bundles,
VM overlays, the package cache growing); with too little left, builds fail midway with
errors that do not say why. Stop at once instead, naming the folder and what it has."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.core.paths import build_root, cache_root, vm_root
from tests.integration.guests import UpdateImages

NEEDED = 10 * 1024**3


def _free(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


@pytest.fixture(scope="session", autouse=True)
def enough_free_disk(tmp_path_factory: pytest.TempPathFactory) -> None:
    folders = [tmp_path_factory.getbasetemp(), build_root(), cache_root(), vm_root()]
    for folder in folders:
        free = _free(Path(folder))
        if free < NEEDED and not os.environ.get("KEEL_TEST_IGNORE_DISK"):
            pytest.exit(
                f"{folder} has {free / 1024**3:.1f} GB free; the QEMU tests need about "
                f"{NEEDED // 1024**3} GB (builds, bundles, VM disks). Free some space "
                "(old build/ folders, /tmp), or set KEEL_TEST_IGNORE_DISK=1 to try anyway",
                returncode=1,
            )


@pytest.fixture(scope="session")
def update_images() -> Iterator[UpdateImages]:
    # Not tmp_path_factory: other pytest sessions prune its folders, keys included.
    work = Path(tempfile.mkdtemp(prefix="keel-update-images-"))
    try:
        yield UpdateImages(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
