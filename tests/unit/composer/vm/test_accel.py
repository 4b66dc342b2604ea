"""Accelerator choice: KVM needs an openable /dev/kvm and vmx/svm in the CPU flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.vm.accel import choose_accel, kvm_problem

VMX = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n"
SVM = "processor\t: 0\nflags\t\t: fpu svm lm\n"
NONE = "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n"


@pytest.fixture
def kvm(tmp_path: Path) -> Path:
    device = tmp_path / "kvm"  # a regular file stands in for the character device
    device.write_bytes(b"")
    return device


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize("flags", [VMX, SVM])
def test_kvm_when_device_and_flags(tmp_path: Path, kvm: Path, flags: str) -> None:
    assert kvm_problem(kvm, cpuinfo(tmp_path, flags)) is None
    assert choose_accel(None, kvm, cpuinfo(tmp_path, flags))[0] == "kvm"


def test_tcg_without_virt_flags(tmp_path: Path, kvm: Path) -> None:
    accel, reason = choose_accel(None, kvm, cpuinfo(tmp_path, NONE))
    assert accel == "tcg"
    assert "vmx" in reason


def test_vmx_outside_flags_line_does_not_count(tmp_path: Path, kvm: Path) -> None:
    text = "model name\t: vmx-capable marketing\nflags\t\t: fpu sse2\n"
    assert choose_accel(None, kvm, cpuinfo(tmp_path, text))[0] == "tcg"


def test_tcg_without_device(tmp_path: Path) -> None:
    accel, reason = choose_accel(None, tmp_path / "nokvm", cpuinfo(tmp_path, VMX))
    assert accel == "tcg"
    assert "does not exist" in reason


def test_tcg_when_device_not_writable(
    tmp_path: Path, kvm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # File modes do not stop root, so the refusal the kernel gives a user outside the
    # kvm group is simulated at the open() call.
    def refuse(path: object, flags: int, *args: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("composer.vm.accel.os.open", refuse)
    accel, reason = choose_accel(None, kvm, cpuinfo(tmp_path, VMX))
    assert accel == "tcg"
    assert "cannot be opened read-write" in reason


def test_forced_tcg_skips_detection(tmp_path: Path, kvm: Path) -> None:
    assert choose_accel("tcg", kvm, cpuinfo(tmp_path, VMX))[0] == "tcg"


def test_forced_kvm_without_kvm_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeelError) as err:
        choose_accel("kvm", tmp_path / "nokvm", cpuinfo(tmp_path, VMX))
    assert "--accel tcg" in str(err.value)


def test_forced_kvm_with_kvm(tmp_path: Path, kvm: Path) -> None:
    assert choose_accel("kvm", kvm, cpuinfo(tmp_path, SVM))[0] == "kvm"


def test_unknown_accel(tmp_path: Path) -> None:
    with pytest.raises(KeelError):
        choose_accel("hvf")
