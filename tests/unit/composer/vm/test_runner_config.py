"""RunOptions.fw_cfg_config: a VM booted as bare metal would be gets no provisioning
config through fw_cfg, so the guest reads the one on its ESP (`keel install`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.vm import runner, state
from composer.vm.command import FW_CFG_CONFIG
from composer.vm.firmware import Firmware
from composer.vm.ports import pick_free_port
from composer.vm.vmdir import VmDir

FW = Firmware(Path("/fw.json"), Path("/CODE.fd"), Path("/VARS.fd"))


def argv_of(tmp_path: Path, options: runner.RunOptions) -> list[str]:
    """The QEMU command line the runner would start (a stand-in exits at once)."""
    vm = VmDir(tmp_path / "vm")
    vm.path.mkdir(parents=True)
    vm_state = state.VmState(name="vm", image="/x.qcow2", accel="tcg", memory_mib=256, cpus=1)
    seen: list[list[str]] = []

    def launch(argv: list[str], vm: VmDir, die: bool) -> subprocess.Popen[bytes]:
        seen.append(argv)
        vm.qemu_log.write_text("qemu-system-x86_64: stand-in\n")
        return subprocess.Popen(["false"])

    with pytest.raises(KeelError):
        runner._start_qemu(vm, vm_state, FW, options, launch, pick_free_port)
    return seen[0]


def test_the_config_goes_through_fw_cfg_by_default(tmp_path: Path) -> None:
    assert f"name={FW_CFG_CONFIG}," in " ".join(argv_of(tmp_path, runner.RunOptions()))


def test_a_bare_metal_boot_gets_no_config_through_fw_cfg(tmp_path: Path) -> None:
    argv = " ".join(argv_of(tmp_path, runner.RunOptions(fw_cfg_config=False)))
    assert FW_CFG_CONFIG not in argv
    assert "opt/org.keel/debug-shell" in argv  # the test harness's shell stays
