"""A real build of the session's image (no mocks): the keel_definition of
pyproject.toml, tests/integration/images/test-host.yaml, which is images/docker-host.yaml
with the debug shell. Checked from the outside with the same tools a person would use:
sfdisk, blkid, mtools, fsck.erofs, debugfs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from composer.build import uki
from composer.build.partitions import ESP_TYPE, ROOT_X86_64_TYPE, VAR_TYPE
from composer.build.pipeline import build_image
from composer.definition.load import load_definition
from tests.integration.initrd import initrd_names
from tests.integration.keyscan import scan_artifacts

pytestmark = pytest.mark.integration


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def artifacts(keel_image: Path) -> Path:
    if not keel_image.is_dir():
        pytest.fail("these tests need an artifact directory, not a bare disk file")
    return keel_image


@pytest.fixture(scope="module")
def manifest(artifacts: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((artifacts / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def table(artifacts: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sh("sfdisk", "--json", str(artifacts / "disk.raw")))
    return data["partitiontable"]


def partition_offset(table: dict[str, Any], label: str) -> int:
    part = next(p for p in table["partitions"] if p["name"] == label)
    return int(part["start"]) * int(table["sectorsize"])


def probe(artifacts: Path, offset: int) -> dict[str, str]:
    result = subprocess.run(
        ["blkid", "-p", "-o", "export", "-O", str(offset), str(artifacts / "disk.raw")],
        capture_output=True, text=True,
    )  # fmt: skip
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_partition_table_has_labels_types_and_sizes_of_the_definition(
    table: dict[str, Any], keel_definition: Path
) -> None:
    defn = load_definition(keel_definition)
    assert table["label"] == "gpt"
    parts = [(p["name"], p["type"], int(p["size"]) * 512) for p in table["partitions"]]
    assert parts == [
        ("esp", ESP_TYPE, defn.partitions.esp),
        ("root-a", ROOT_X86_64_TYPE, defn.partitions.root),
        ("root-b", ROOT_X86_64_TYPE, defn.partitions.root),
        ("var", VAR_TYPE, defn.partitions.var),
    ]


def test_filesystems_are_vfat_erofs_empty_and_ext4(artifacts: Path, table: dict[str, Any]) -> None:
    assert probe(artifacts, partition_offset(table, "esp"))["TYPE"] == "vfat"
    assert probe(artifacts, partition_offset(table, "root-a"))["TYPE"] == "erofs"
    assert "TYPE" not in probe(artifacts, partition_offset(table, "root-b"))
    var = probe(artifacts, partition_offset(table, "var"))
    assert (var["TYPE"], var["LABEL"]) == ("ext4", "var")


def test_esp_holds_bootloader_unified_kernel_image_and_counted_entry(
    artifacts: Path, table: dict[str, Any], manifest: dict[str, Any], tmp_path: Path
) -> None:
    esp = f"{artifacts / 'disk.raw'}@@{partition_offset(table, 'esp')}"
    listing = sh("mdir", "-/", "-b", "-i", esp, "::/")
    for path in ("::/EFI/BOOT/BOOTX64.EFI", "::/keel/a/keel.efi"):
        assert path in listing.splitlines(), listing
    entry = f"::/loader/entries/keel-{manifest['version']}-a+3.conf"
    assert entry in listing.splitlines(), listing
    text = sh("mtype", "-i", esp, entry)
    assert "efi /keel/a/keel.efi" in text.splitlines()
    assert "root=PARTLABEL=root-a" in text and "rootfstype=erofs" in text
    payload = json.loads((artifacts / "payload/payload.json").read_text())
    verity = next(w for w in payload["cmdline"] if w.startswith("keel.verity="))
    assert verity in text.split()  # the first boot opens root-a through dm-verity
    # A console on the screen and on the first serial port, for bare metal and QEMU.
    assert {"console=tty0", "console=ttyS0,115200"} <= set(text.split())
    assert "default keel-*" in sh("mtype", "-i", esp, "::/loader/loader.conf")
    kernel = sh("mdir", "-i", esp, "::/keel/a/keel.efi")
    assert str((artifacts / "payload/keel.efi").stat().st_size) in kernel.replace(" ", "")
    # The UKI's own command line (what Secure Boot boots with) names no slot.
    own = uki.dump_section(artifacts / "payload/keel.efi", ".cmdline", tmp_path / "cmdline")
    words = own.read_text().split()
    assert words[:3] == ["root=/dev/mapper/keel-root", "rootfstype=erofs", "ro"], words
    assert verity in words and not [w for w in words if w.startswith("keel.slot=")]


def test_manifest_describes_the_build(
    artifacts: Path, manifest: dict[str, Any], keel_definition: Path
) -> None:
    name = load_definition(keel_definition).name
    assert (manifest["name"], manifest["architecture"]) == (name, "x86-64")
    assert manifest["build_time"].endswith("Z")
    assert manifest["kernel"]["version"].endswith("-amd64")
    names = {p["name"]: p["version"] for p in manifest["packages"]}
    assert {"docker.io", "containerd", "runc", "systemd", "openssh-server"} <= names.keys()
    assert len(manifest["definition_sha256"]) == 64
    parts = {p["label"]: p for p in manifest["disk"]["partitions"]}
    root = parts["root-a"]["image"]
    assert root["size"] == (artifacts / "payload/root.erofs").stat().st_size
    assert parts["root-b"]["image"] is None
    assert parts["esp"]["filesystem"] == "vfat" and parts["var"]["filesystem"] == "ext4"
    # The payload on its own is what the update work ships.
    payload = json.loads((artifacts / "payload/payload.json").read_text())
    assert payload["files"]["root"]["sha256"] == root["sha256"]


def test_root_image_carries_a_dm_verity_tree_for_the_signed_root_hash(
    artifacts: Path, manifest: dict[str, Any]
) -> None:
    payload = json.loads((artifacts / "payload/payload.json").read_text())
    arguments = [w for w in payload["cmdline"] if w.startswith("keel.verity=")]
    assert len(arguments) == 1 and manifest["kernel"]["cmdline"] == payload["cmdline"]
    root_hash, blocks, _salt = arguments[0].removeprefix("keel.verity=").split(":")
    image = artifacts / "payload/root.erofs"
    # cryptsetup's own check of the whole tree against that root hash.
    sh("veritysetup", "verify", f"--hash-offset={int(blocks) * 4096}",
       str(image), str(image), root_hash)  # fmt: skip
    # The erofs filesystem ends where the tree begins.
    superblock = image.read_bytes()[1024:1064]
    assert int.from_bytes(superblock[36:40], "little") == int(blocks)


# What common servers and small PCs need to reach their disk and network (issue 14).
DISK_DRIVERS = ("nvme", "ahci", "virtio_blk", "virtio_scsi", "usb-storage", "uas", "sd_mod")
NETWORK_DRIVERS = ("e1000e", "igb", "ixgbe", "i40e", "ice", "r8169", "tg3", "bnxt_en",
                   "mlx5_core", "virtio_net")  # fmt: skip


def module_paths(names: list[str], module: str) -> list[str]:
    return [n for n in names if n.rsplit("/", 1)[-1].split(".ko")[0] == module]


def test_disk_and_network_drivers_are_in_the_image_and_disk_drivers_in_the_initrd(
    artifacts: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    sh("fsck.erofs", f"--extract={root}", str(artifacts / "payload/root.erofs"))
    (kernel,) = (root / "usr/lib/modules").iterdir()
    present = {str(p.relative_to(kernel)) for p in kernel.rglob("*.ko*")}
    dependencies = {}
    for line in (kernel / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        dependencies[module] = needs.split()
    for driver in DISK_DRIVERS + NETWORK_DRIVERS:
        (path,) = module_paths(list(dependencies), driver) or [None]
        assert path in present, f"{driver} is not in the image"
        missing = [d for d in dependencies[path] if d not in present]
        assert not missing, f"{driver} needs {missing}, which the image lacks"
    initrd = uki.dump_section(artifacts / "payload/keel.efi", ".initrd", tmp_path / "initrd.img")
    in_initrd = initrd_names(initrd)
    for driver in DISK_DRIVERS:
        assert module_paths(in_initrd, driver), f"the initrd has no {driver}"
    for driver in ("e1000e", "mlx5_core"):  # loaded from the root, not the initrd
        assert not module_paths(in_initrd, driver)
    # What scripts/local-top/keel-verity opens the root slot with.
    assert module_paths(in_initrd, "dm-verity"), "the initrd has no dm-verity"
    assert any(name.endswith("sbin/dmsetup") for name in in_initrd), "the initrd has no dmsetup"


def test_no_private_key_in_the_root_image_the_bundle_or_the_disk(artifacts: Path) -> None:
    # Each is public: a key in one is every host's key, and anyone's.
    assert scan_artifacts(artifacts) == []


def test_second_build_is_byte_identical(
    artifacts: Path,
    manifest: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    keel_definition: Path,
) -> None:
    out = tmp_path_factory.mktemp("rebuild")
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(manifest["source_date_epoch"])
    try:
        result = build_image(keel_definition, out_dir=out, quiet=True)
    finally:
        if previous is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous
    assert result.cached_packages, "the rebuild should have come from the package cache"
    first = json.loads((artifacts / "manifest.json").read_text())
    second = json.loads((out / "manifest.json").read_text())
    assert (
        first["disk"]["partitions"][1]["image"]["sha256"]
        == (second["disk"]["partitions"][1]["image"]["sha256"])
    )
    assert (artifacts / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
