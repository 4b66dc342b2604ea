"""Debian 12 (bookworm) stays a supported suite: one smoke test builds docker-host on
it, boots it, and runs a container in it from this machine over ssh:// with the
current Docker CLI (the one of the default image's own packages)."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.build.pipeline import build_image
from composer.core.paths import DEFAULT_IMAGE, PROJECT_ROOT, vm_root
from composer.testing import KeelVM
from composer.tools.dockercli import docker_client
from composer.vm import runner
from tests.integration.dockerssh import docker_over_ssh
from tests.integration.images.busybox_archive import DEFAULT_TAG, make_busybox_archive

pytestmark = pytest.mark.integration

DEFINITION = PROJECT_ROOT / "tests/integration/images/bookworm-host.yaml"
BUILD_DIR = PROJECT_ROOT / "build/bookworm"


@pytest.fixture(scope="module")
def bookworm_image() -> Path:
    make_busybox_archive(BUILD_DIR / "busybox.tar")
    return build_image(DEFINITION, out_dir=BUILD_DIR / "bookworm-host", quiet=True).out_dir


@pytest.fixture(scope="module")
def bookworm_vm(bookworm_image: Path) -> Iterator[KeelVM]:
    options = runner.RunOptions(
        image=bookworm_image, name=f"bookworm-{secrets.token_hex(2)}", die_with_parent=True
    )
    vm = KeelVM.start(options, vm_root())
    try:
        yield vm
    finally:
        vm.stop()
        vm.kill()
        shutil.rmtree(vm.vm_dir.path, ignore_errors=True)


def test_bookworm_build_is_debian_12_with_its_own_engine(bookworm_image: Path) -> None:
    manifest = json.loads((bookworm_image / "manifest.json").read_text())
    assert manifest["suite"] == "bookworm"
    packages = {p["name"]: p["version"] for p in manifest["packages"]}
    assert packages["docker.io"].startswith("20.10.")
    assert "docker-cli" not in packages  # bookworm's docker.io carries the client


def test_bookworm_host_runs_a_container_for_the_current_cli_over_ssh(
    bookworm_vm: KeelVM, keel_image: Path, tmp_path: Path
) -> None:
    assert bookworm_vm.run("cat /etc/debian_version", check=True).stdout.startswith("12.")
    # SSH answers before the boot is done; the baked image is loaded during the boot.
    bookworm_vm.run("systemctl is-system-running --wait", timeout=300)
    # keel_image: the default (trixie) image is built, so its client is in the cache.
    client = docker_client(DEFAULT_IMAGE)
    result = docker_over_ssh(
        client, bookworm_vm, tmp_path, "run", "--rm", DEFAULT_TAG, "echo", "hello from bookworm"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from bookworm"
