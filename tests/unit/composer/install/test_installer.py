"""keel install end to end on image files: write, grow, read back, config on the ESP;
and nothing written when the config or the target is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.core.progress import Progress
from composer.install.espconfig import read_config
from composer.install.image import load_image
from composer.install.installer import InstallRequest, install
from composer.install.verify import partition_sha256, verify_partitions
from composer.install.write import sync
from composer.provisioning.check import check_config_file
from tests.unit.composer.install.conftest import MIB, needs_tools

pytestmark = needs_tools

BUTANE = """\
variant: keel
version: 1.0.0
storage:
  files:
    - path: /etc/keel-test/installed.txt
      contents:
        inline: written by keel install
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet() -> Progress:
    return Progress(quiet=True)


def test_install_to_a_file_of_a_given_size(build_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "host.bu"
    config.write_text(BUTANE)
    target = tmp_path / "disk.img"
    result = install(InstallRequest(build_folder, target, size=64 * MIB, config=config), quiet())
    assert target.stat().st_size == 64 * MIB
    assert target.stat().st_blocks * 512 < 64 * MIB  # sparse: zeros are not written
    assert result.verified == ("esp", "root-a", "var")
    verify = subprocess.run(["sfdisk", "--verify", str(target)], capture_output=True, text=True)
    assert "No errors detected" in verify.stdout  # the backup header is at the new end
    image = load_image(build_folder)
    on_esp = read_config(target, image.partition("esp"))
    assert on_esp == check_config_file(config).ignition
    assert json.loads(on_esp)["storage"]["files"][0]["path"] == "/etc/keel-test/installed.txt"
    # Every partition but the ESP (which now holds the config) reads back as built.
    for label in ("root-a", "var"):
        part = image.partition(label)
        assert partition_sha256(result.target, part, quiet()) == part.sha256


def test_install_at_the_image_size_without_a_config(build_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "disk.img"
    result = install(InstallRequest(build_folder, target), quiet())
    assert target.stat().st_size == load_image(build_folder).size
    assert result.config is None
    written = target.read_bytes()
    assert written == (build_folder / "disk.raw").read_bytes()


def test_a_bad_config_is_refused_before_anything_is_written(
    build_folder: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bad.ign"
    config.write_text(json.dumps({"ignition": {"version": "3.4.0"}, "passwd": {"users": [{}]}}))
    target = tmp_path / "disk.img"
    with pytest.raises(KeelError, match=r"bad\.ign"):
        install(InstallRequest(build_folder, target, config=config), quiet())
    assert not target.exists()


def test_a_second_install_needs_force_and_leaves_the_target_alone(
    build_folder: Path, tmp_path: Path
) -> None:
    target = tmp_path / "disk.img"
    install(InstallRequest(build_folder, target, size=64 * MIB), quiet())
    before = digest(target)
    with pytest.raises(KeelError, match="already holds a partition table"):
        install(InstallRequest(build_folder, target, size=64 * MIB), quiet())
    assert digest(target) == before
    install(InstallRequest(build_folder, target, size=32 * MIB, force=True), quiet())
    assert target.stat().st_size == 32 * MIB


def test_a_flipped_byte_is_found_when_reading_back(build_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "disk.img"
    result = install(InstallRequest(build_folder, target), quiet())
    image = load_image(build_folder)
    root = image.partition("root-a")
    with target.open("r+b") as handle:
        handle.seek(root.start + 12345)
        byte = handle.read(1)
        handle.seek(root.start + 12345)
        handle.write(bytes([byte[0] ^ 0x01]))
    sync(result.target)
    with pytest.raises(KeelError, match=r"partition root-a reads back with sha256"):
        verify_partitions(image, result.target, quiet())


def test_a_changed_partition_table_is_found_when_reading_back(
    build_folder: Path, tmp_path: Path
) -> None:
    target = tmp_path / "disk.img"
    result = install(InstallRequest(build_folder, target), quiet())
    subprocess.run(["sfdisk", "--quiet", "--part-label", str(target), "3", "root-x"], check=True)
    with pytest.raises(KeelError, match="partition 3 is"):
        verify_partitions(load_image(build_folder), result.target, quiet())
