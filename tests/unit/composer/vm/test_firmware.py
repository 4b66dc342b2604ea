"""Firmware descriptor parsing, on small descriptors modelled on Debian's ovmf files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from composer.build.toolstree import ToolsTree
from composer.core.errors import KeelError
from composer.vm import runner
from composer.vm.firmware import find_firmware, parse_descriptor


def descriptor(
    code: str,
    vars_template: str,
    features: list[str] | None = None,
    machines: list[str] | None = None,
    arch: str = "x86_64",
    interface: str = "uefi",
) -> dict[str, Any]:
    return {
        "description": "test firmware",
        "interface-types": [interface],
        "mapping": {
            "device": "flash",
            "executable": {"filename": code, "format": "raw"},
            "nvram-template": {"filename": vars_template, "format": "raw"},
        },
        "targets": [{"architecture": arch, "machines": machines or ["pc-i440fx-*", "pc-q35-*"]}],
        "features": features if features is not None else ["acpi-s3", "verbose-dynamic"],
        "tags": [],
    }


@pytest.fixture
def fw_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("CODE.fd", "CODE.secboot.fd", "VARS.fd", "VARS.ms.fd"):
        files[name] = tmp_path / name
        files[name].write_bytes(b"\0" * 16)
    return files


def write(directory: Path, name: str, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(data))
    return path


def test_plain_uefi_descriptor_is_usable(tmp_path: Path, fw_files: dict[str, Path]) -> None:
    path = write(tmp_path / "d", "60-edk2.json", descriptor(str(fw_files["CODE.fd"]), "/v.fd"))
    fw = parse_descriptor(path)
    assert fw is not None
    assert fw.code == fw_files["CODE.fd"]
    assert fw.vars_template == Path("/v.fd")


@pytest.mark.parametrize(
    "change",
    [
        {"features": ["secure-boot", "requires-smm"]},
        {"features": ["enrolled-keys", "secure-boot"]},
        {"machines": ["pc-i440fx-*"]},
        {"arch": "aarch64"},
        {"interface": "bios"},
    ],
)
def test_unusable_descriptors_are_skipped(tmp_path: Path, change: dict[str, Any]) -> None:
    path = write(tmp_path, "x.json", descriptor("/c.fd", "/v.fd", **change))
    assert parse_descriptor(path) is None


def test_stateless_or_broken_descriptors_are_skipped(tmp_path: Path) -> None:
    data = descriptor("/c.fd", "/v.fd")
    del data["mapping"]["nvram-template"]
    assert parse_descriptor(write(tmp_path, "a.json", data)) is None
    (tmp_path / "b.json").write_text("{not json")
    assert parse_descriptor(tmp_path / "b.json") is None


def test_priority_order_and_secure_boot_skipped(tmp_path: Path, fw_files: dict[str, Path]) -> None:
    d = tmp_path / "share"
    write(
        d,
        "40-secure-enrolled.json",
        descriptor(
            str(fw_files["CODE.secboot.fd"]),
            str(fw_files["VARS.ms.fd"]),
            features=["enrolled-keys", "requires-smm", "secure-boot"],
        ),
    )
    write(d, "60-plain.json", descriptor(str(fw_files["CODE.fd"]), str(fw_files["VARS.fd"])))
    write(d, "70-later.json", descriptor(str(fw_files["CODE.fd"]), str(fw_files["VARS.ms.fd"])))
    fw = find_firmware((d,))
    assert fw.descriptor.name == "60-plain.json"
    assert fw.vars_template == fw_files["VARS.fd"]


def test_earlier_directory_hides_same_name(tmp_path: Path, fw_files: dict[str, Path]) -> None:
    etc, share = tmp_path / "etc", tmp_path / "share"
    write(etc, "60-edk2.json", descriptor(str(fw_files["CODE.fd"]), str(fw_files["VARS.ms.fd"])))
    write(share, "60-edk2.json", descriptor(str(fw_files["CODE.fd"]), str(fw_files["VARS.fd"])))
    assert find_firmware((etc, share)).descriptor.parent == etc


def test_missing_files_are_skipped_and_none_left_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "60-edk2.json", descriptor("/nonexistent/CODE.fd", "/nonexistent/VARS.fd"))
    with pytest.raises(KeelError) as err:
        find_firmware((tmp_path, tmp_path / "missing"))
    assert "ovmf" in str(err.value)


@pytest.mark.skipif(
    not Path("/usr/share/qemu/firmware/60-edk2-x86_64.json").exists(), reason="no ovmf here"
)
def test_real_debian_descriptors() -> None:
    fw = find_firmware((Path("/usr/share/qemu/firmware"),))
    assert fw.code.name == "OVMF_CODE_4M.fd"
    assert fw.vars_template.name == "OVMF_VARS_4M.fd"


def debian_layout(directory: Path, fw_files: dict[str, Path]) -> None:
    """Debian 12's three descriptors: Microsoft keys enrolled, Secure Boot, plain."""
    secure = ["acpi-s3", "amd-sev", "requires-smm", "secure-boot", "verbose-dynamic"]
    code, template = str(fw_files["CODE.secboot.fd"]), str(fw_files["VARS.fd"])
    write(
        directory,
        "40-edk2-x86_64-secure-enrolled.json",
        descriptor(code, str(fw_files["VARS.ms.fd"]), features=[*secure, "enrolled-keys"]),
    )
    write(directory, "50-edk2-x86_64-secure.json", descriptor(code, template, features=secure))
    write(directory, "60-edk2-x86_64.json", descriptor(str(fw_files["CODE.fd"]), template))


def test_secure_boot_picks_the_smm_build_without_enrolled_keys(
    tmp_path: Path, fw_files: dict[str, Path]
) -> None:
    debian_layout(tmp_path, fw_files)
    fw = find_firmware((tmp_path,), secure_boot=True)
    assert fw.descriptor.name == "50-edk2-x86_64-secure.json"
    assert fw.code == fw_files["CODE.secboot.fd"]
    assert fw.vars_template == fw_files["VARS.fd"]  # empty: Keel enrolls the image's keys
    assert fw.secure_boot
    plain = find_firmware((tmp_path,))
    assert plain.descriptor.name == "60-edk2-x86_64.json"
    assert not plain.secure_boot


@pytest.mark.parametrize(
    ("features", "usable"),
    [
        (["secure-boot", "requires-smm"], True),
        (["secure-boot"], False),  # without SMM the guest OS could rewrite the keys
        (["requires-smm"], False),
        (["secure-boot", "requires-smm", "enrolled-keys"], False),
        ([], False),
    ],
)
def test_secure_boot_descriptor_needs_secure_boot_and_smm(
    tmp_path: Path, features: list[str], usable: bool
) -> None:
    path = write(tmp_path, "x.json", descriptor("/c.fd", "/v.fd", features=features))
    fw = parse_descriptor(path, secure_boot=True)
    assert (fw is not None) == usable
    assert fw is None or fw.secure_boot


def test_no_secure_boot_firmware_names_the_package(
    tmp_path: Path, fw_files: dict[str, Path]
) -> None:
    write(tmp_path, "60-plain.json", descriptor(str(fw_files["CODE.fd"]), str(fw_files["VARS.fd"])))
    with pytest.raises(KeelError) as err:
        find_firmware((tmp_path,), secure_boot=True)
    assert "Secure Boot" in err.value.message
    assert "`ovmf`" in str(err.value.hint) and "secboot" in str(err.value.hint)


@pytest.mark.skipif(
    not Path("/usr/share/qemu/firmware/50-edk2-x86_64-secure.json").exists(), reason="no ovmf here"
)
def test_real_debian_secure_boot_descriptor() -> None:
    fw = find_firmware((Path("/usr/share/qemu/firmware"),), secure_boot=True)
    assert fw.code.name == "OVMF_CODE_4M.secboot.fd"
    assert fw.vars_template.name == "OVMF_VARS_4M.fd"


def tools_tree_with_ovmf(root: Path) -> ToolsTree:
    """A tools tree holding an OVMF the way Debian's package lays it out."""
    (root / "usr/share/OVMF").mkdir(parents=True)
    for name in ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"):
        (root / "usr/share/OVMF" / name).write_bytes(b"\0" * 16)
    tools = ToolsTree(root)
    plain = descriptor("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")
    write(tools.firmware_descriptors, "60-edk2-x86_64.json", plain)
    return tools


def host_firmware(tmp_path: Path, fw_files: dict[str, Path], name: str) -> Path:
    """The build machine's descriptor folder, with one plain firmware named name."""
    host = tmp_path / "host"
    write(host, name, descriptor(str(fw_files["CODE.fd"]), str(fw_files["VARS.fd"])))
    return host


def test_the_tools_trees_firmware_comes_first_with_its_files_inside_the_tree(
    tmp_path: Path, fw_files: dict[str, Path]
) -> None:
    host = host_firmware(tmp_path, fw_files, "50-host.json")
    tools = tools_tree_with_ovmf(tmp_path / "tools")
    fw = find_firmware((host,), tools=tools)
    assert fw.code == tools.root / "usr/share/OVMF/OVMF_CODE_4M.fd"
    assert fw.vars_template == tools.root / "usr/share/OVMF/OVMF_VARS_4M.fd"
    # Without the tree, the build machine's.
    assert find_firmware((host,)).code == fw_files["CODE.fd"]


def test_a_tools_tree_without_the_files_leaves_the_build_machines_firmware(
    tmp_path: Path, fw_files: dict[str, Path]
) -> None:
    host = host_firmware(tmp_path, fw_files, "60-host.json")
    tools = tools_tree_with_ovmf(tmp_path / "tools")
    (tools.root / "usr/share/OVMF/OVMF_CODE_4M.fd").unlink()
    # Also one naming a relative path, which a tree's descriptor must not.
    relative = descriptor("usr/share/OVMF/OVMF_CODE_4M.fd", "usr/share/OVMF/OVMF_VARS_4M.fd")
    write(tools.firmware_descriptors, "10-relative.json", relative)
    assert find_firmware((host,), tools=tools).code == fw_files["CODE.fd"]


def test_a_vm_boots_with_the_build_machines_firmware_when_no_tools_tree_can_be_made(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(*_: object, **__: object) -> ToolsTree:
        raise KeelError("mmdebstrap failed", hint="the tools tree needs network access")

    monkeypatch.setattr(runner, "tools_tree", offline)
    assert runner.vm_tools() is None
    assert "booting with the build machine's QEMU and OVMF instead" in capsys.readouterr().err
