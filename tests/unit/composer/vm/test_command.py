"""QEMU command-line assembly."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.build.toolstree import LOADER, ToolsTree
from composer.core.errors import KeelError
from composer.vm.command import ExtraDisk, VmSpec, qemu_argv, qemu_program
from composer.vm.firmware import Firmware
from composer.vm.runner import extra_disks
from composer.vm.vmdir import VmDir

FW = Firmware(Path("/fw/60.json"), Path("/fw/CODE.fd"), Path("/fw/VARS.fd"))


def spec(tmp_path: Path, **changes: object) -> VmSpec:
    values: dict[str, object] = dict(
        vm=VmDir(tmp_path / "vm1"),
        firmware=FW,
        accel="tcg",
        memory_mib=2048,
        cpus=2,
        ssh_port=40022,
        config_file=tmp_path / "vm1" / "config.ign",
    )
    values.update(changes)
    return VmSpec(**values)  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_machine_memory_cpus_accel(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path, memory_mib=4096, cpus=4))
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-machine")[0].startswith("q35")
    assert "ICH9-LPC.noreboot=off" in option(argv, "-global")  # the watchdog may reset
    assert option(argv, "-m") == ["4096"]
    assert option(argv, "-smp") == ["4"]
    assert option(argv, "-accel") == ["tcg"]
    # TCG's default CPU lacks SSSE3/SSE4 and claims SVM; the runner adds the one and
    # drops the other (boot-time levers).
    assert option(argv, "-cpu") == ["qemu64,-svm,+ssse3,+sse4.1,+sse4.2"]
    assert "-no-reboot" not in argv  # guest reboots must stay in the same QEMU
    kvm = qemu_argv(spec(tmp_path, accel="kvm"))
    assert option(kvm, "-accel") == ["kvm"]
    assert option(kvm, "-cpu") == ["host"]


def test_the_tools_trees_qemu_runs_with_its_own_data_folder(tmp_path: Path) -> None:
    tree = ToolsTree(tmp_path / "tree")
    argv = qemu_argv(spec(tmp_path, qemu=qemu_program(tree)))
    assert argv[0] == str(tree.root / LOADER)
    program = argv.index(str(tree.root / "usr/bin/qemu-system-x86_64"))
    # Through the loader QEMU would look for its ROMs in the build machine's folder.
    assert argv[program + 1 : program + 3] == ["-L", str(tree.root / "usr/share/qemu")]
    assert argv[program + 3] == "-name"
    assert qemu_program(None) == ("qemu-system-x86_64",)


def test_firmware_code_readonly_and_vars_per_vm(tmp_path: Path) -> None:
    drives = option(qemu_argv(spec(tmp_path)), "-drive")
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in drives
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/vm1/OVMF_VARS.fd" in drives
    assert not any("VARS.fd" in d and "/fw/" in d for d in drives)  # never the template


def test_disk_is_the_overlay_on_virtio(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path))
    assert any(d.endswith(f"file={tmp_path}/vm1/overlay.qcow2") for d in option(argv, "-drive"))
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in option(argv, "-device")


def test_ssh_forward_on_localhost(tmp_path: Path) -> None:
    (netdev,) = option(qemu_argv(spec(tmp_path, ssh_port=41234)), "-netdev")
    assert "hostfwd=tcp:127.0.0.1:41234-:22" in netdev


def test_serial_socket_with_log_and_qmp(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path))
    chardevs = option(argv, "-chardev")
    serial = next(c for c in chardevs if "id=serial0" in c)
    assert f"path={tmp_path}/vm1/console.sock" in serial
    assert f"logfile={tmp_path}/vm1/serial.log" in serial
    assert "server=on,wait=off" in serial
    assert option(argv, "-serial") == ["chardev:serial0"]
    assert option(argv, "-qmp") == [f"unix:{tmp_path}/vm1/qmp.sock,server=on,wait=off"]


def test_config_and_debug_shell_through_fw_cfg(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path))
    fw_cfg = option(argv, "-fw_cfg")
    assert f"name=opt/org.keel/config,file={tmp_path}/vm1/config.ign" in fw_cfg
    assert "name=opt/org.keel/debug-shell,string=1" in fw_cfg
    assert "virtconsole,chardev=debugsh" in option(argv, "-device")
    # One port only: every port the device offers costs the guest buffers.
    assert "virtio-serial-pci,max_ports=1" in option(argv, "-device")
    assert any(f"path={tmp_path}/vm1/debug.sock" in c for c in option(argv, "-chardev"))


def test_without_config_and_debug_shell(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path, config_file=None, debug_shell=False))
    assert option(argv, "-fw_cfg") == []
    assert "virtconsole,chardev=debugsh" not in argv


def test_extra_disks_follow_the_boot_disk_as_virtio_with_serials(tmp_path: Path) -> None:
    disks = (ExtraDisk(tmp_path / "data.qcow2", "qcow2"), ExtraDisk(tmp_path / "a,b.raw", "raw"))
    argv = qemu_argv(spec(tmp_path, extra_disks=disks))
    drives = [d for d in option(argv, "-drive") if d.startswith("if=none")]
    assert drives == [
        f"if=none,id=disk0,format=qcow2,discard=unmap,file={tmp_path}/vm1/overlay.qcow2",
        f"if=none,id=disk1,format=qcow2,discard=unmap,file={tmp_path}/data.qcow2",
        # QEMU reads ',' as the end of a value unless doubled.
        f"if=none,id=disk2,format=raw,discard=unmap,file={tmp_path}/a,,b.raw",
    ]
    devices = [d for d in option(argv, "-device") if d.startswith("virtio-blk")]
    # In this order the guest names them vda (boot), vdb, vdc.
    assert devices == [
        "virtio-blk-pci,drive=disk0,bootindex=1",
        "virtio-blk-pci,drive=disk1,serial=keel-disk1",
        "virtio-blk-pci,drive=disk2,serial=keel-disk2",
    ]
    assert "serial=" not in " ".join(option(qemu_argv(spec(tmp_path)), "-device"))


def test_extra_disks_must_exist_once_and_not_be_the_image(tmp_path: Path) -> None:
    image, data = tmp_path / "disk.qcow2", tmp_path / "data.raw"
    image.write_bytes(b"QFI\xfb" + bytes(100))
    data.write_bytes(bytes(512))
    assert extra_disks((data,), image) == (ExtraDisk(data.resolve(), "raw"),)
    with pytest.raises(KeelError, match="extra disk not found") as error:
        extra_disks((tmp_path / "none.qcow2",), image)
    assert "qemu-img create" in str(error.value.hint)
    with pytest.raises(KeelError, match="attached twice"):
        extra_disks((data, data), image)
    with pytest.raises(KeelError, match="attached twice"):
        extra_disks((image,), image)


SECURE_FW = Firmware(Path("/fw/50.json"), Path("/fw/CODE.secboot.fd"), Path("/fw/VARS.fd"), True)


def test_secure_boot_machine_has_smm_and_guarded_flash(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path, firmware=SECURE_FW))
    assert option(argv, "-machine") == ["q35,smm=on"]
    assert "driver=cfi.pflash01,property=secure,value=on" in option(argv, "-global")
    drives = option(argv, "-drive")
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.secboot.fd" in drives
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/vm1/OVMF_VARS.fd" in drives


def test_without_secure_boot_no_smm_and_plain_flash(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path))
    assert option(argv, "-machine") == ["q35,smm=off"]
    assert option(argv, "-global") == ["ICH9-LPC.noreboot=off"]
    assert not any("secboot" in a for a in argv)
