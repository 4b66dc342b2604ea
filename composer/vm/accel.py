"""Choose the QEMU accelerator: KVM where it really works, otherwise TCG.

An openable /dev/kvm is not enough: nested hypervisors can expose /dev/kvm without
hardware virtualisation (no vmx/svm flag) and then hang ordinary guest kernels, so
both conditions must hold before Keel picks KVM on its own."""

from __future__ import annotations

import os
import re
from pathlib import Path

from composer.core.errors import KeelError

ACCELS = ("kvm", "tcg")

_VIRT_FLAG = re.compile(r"^flags\s*:.*\b(vmx|svm)\b", re.MULTILINE)


def kvm_problem(
    kvm_device: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")
) -> str | None:
    """Why KVM cannot be used here, or None when it can."""
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{kvm_device} does not exist (no KVM module loaded, or not exposed)"
    except OSError as e:
        return f"{kvm_device} cannot be opened read-write: {e.strerror}"
    os.close(fd)
    try:
        text = cpuinfo.read_text()
    except OSError as e:
        return f"cannot read {cpuinfo}: {e.strerror}"
    if not _VIRT_FLAG.search(text):
        return f"the CPU flags in {cpuinfo} show neither vmx nor svm"
    return None


def choose_accel(
    requested: str | None,
    kvm_device: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> tuple[str, str]:
    """(accelerator, reason) for the requested one (None = automatic)."""
    if requested is not None and requested not in ACCELS:
        raise KeelError(f"unknown accelerator {requested!r}", hint="use --accel kvm or tcg")
    if requested == "tcg":
        return "tcg", "forced with --accel tcg"
    problem = kvm_problem(kvm_device, cpuinfo)
    if requested == "kvm":
        if problem:
            raise KeelError(
                f"--accel kvm was requested but KVM is not usable: {problem}",
                hint="add your user to the `kvm` group, load kvm_intel/kvm_amd, "
                "or use --accel tcg (slower, always works)",
            )
        return "kvm", "forced with --accel kvm"
    if problem:
        return "tcg", f"KVM not usable: {problem}"
    return "kvm", "KVM is usable"
