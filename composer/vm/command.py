"""The QEMU command line for one VM, assembled from a frozen spec (pure, unit-tested)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from composer.build.toolstree import ToolsTree
from composer.vm.firmware import Firmware
from composer.vm.ports import LOCALHOST
from composer.vm.vmdir import VmDir

QEMU = "qemu-system-x86_64"
# The guest reads its provisioning config under either name (Keel's and CoreOS's).
FW_CFG_CONFIG = "opt/org.keel/config"
FW_CFG_DEBUG_SHELL = "opt/org.keel/debug-shell"
SECURE_FLASH = "driver=cfi.pflash01,property=secure,value=on"
# Under TCG, QEMU's default qemu64 model lacks SSSE3 and SSE4, so the guest's libc and
# kernel take their slowest code paths. Adding them booted to SSH 1.3 s faster in
# alternating boots; "max" was slower (docs/benchmarks.md, boot levers). qemu64 also
# claims AMD's SVM, so udev loads kvm, kvm_amd and ccp at every boot (0.7 s of one
# emulated CPU) for nested guests no one runs inside an emulated machine: -svm.
TCG_CPU = "qemu64,-svm,+ssse3,+sse4.1,+sse4.2"


@dataclass(frozen=True)
class ExtraDisk:
    """A disk file attached besides the boot disk, as a further virtio-blk device: the
    guest sees the first as /dev/vdb (and /dev/disk/by-id/virtio-keel-disk1), the
    next as /dev/vdc, and so on."""

    path: Path
    format: str  # qcow2 or raw

    def serial(self, index: int) -> str:
        return f"keel-disk{index}"  # virtio-blk serials hold up to 20 bytes


@dataclass(frozen=True)
class VmSpec:
    vm: VmDir
    firmware: Firmware
    accel: str
    memory_mib: int
    cpus: int
    ssh_port: int
    config_file: Path | None
    debug_shell: bool = True
    extra_disks: tuple[ExtraDisk, ...] = ()
    qemu: tuple[str, ...] = (QEMU,)  # how to run QEMU: qemu_program()


def qemu_program(tools: ToolsTree | None) -> tuple[str, ...]:
    """The start of QEMU's command line: the VM tools tree's QEMU (Debian 13's, through
    the tree's loader, with the tree's data folder), else the build machine's."""
    if tools is None:
        return (QEMU,)
    return (*tools.command(QEMU), "-L", str(tools.qemu_data))


def _socket_chardev(chardev_id: str, path: Path, logfile: Path | None = None) -> str:
    # server=on,wait=off: QEMU listens and boots at once; clients come and go freely.
    spec = f"socket,id={chardev_id},path={path.absolute()},server=on,wait=off"
    if logfile is not None:
        spec += f",logfile={logfile.absolute()},logappend=on"
    return spec


def _option_value(value: object) -> str:
    """A value inside a QEMU -drive/-device option list, where ',' must be doubled."""
    return str(value).replace(",", ",,")


def qemu_argv(spec: VmSpec) -> list[str]:
    vm = spec.vm
    if spec.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", "tcg", "-cpu", TCG_CPU]
    secure_boot = spec.firmware.secure_boot
    argv = [
        *spec.qemu,
        "-name", f"keel-{vm.name},process=keel-{vm.name}",
        "-machine", f"q35,smm={'on' if secure_boot else 'off'}",
        # Secure Boot: only SMM code may write the flash, so the guest OS cannot replace
        # the enrolled keys (edk2's OvmfPkg README).
        *(["-global", SECURE_FLASH] if secure_boot else []),
        # The chipset's TCO watchdog (iTCO_wdt in the guest, petted by PID 1) resets a
        # hung guest only with the "no reboot" strap off, as on real boards. QEMU 7.2's
        # q35 sets it, which left a panicked guest hanging for good (seen here).
        "-global", "ICH9-LPC.noreboot=off",
        *accel,
        "-m", str(spec.memory_mib),
        "-smp", str(spec.cpus),
        "-nodefaults",
        "-display", "none",
        "-vga", "none",
        # Firmware code is shared read-only; the VM's own variables (boot entries,
        # LoaderBootCountPath, ...) live in its folder and persist across reboots.
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={spec.firmware.code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vm.nvram.absolute()}",
        "-drive", f"if=none,id=disk0,format=qcow2,discard=unmap,file={vm.overlay.absolute()}",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
        *[
            arg
            for index, disk in enumerate(spec.extra_disks, start=1)
            for arg in (
                "-drive",
                f"if=none,id=disk{index},format={disk.format},discard=unmap,"
                f"file={_option_value(disk.path.absolute())}",
                "-device", f"virtio-blk-pci,drive=disk{index},serial={disk.serial(index)}",
            )
        ],
        "-netdev", f"user,id=net0,hostfwd=tcp:{LOCALHOST}:{spec.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
        "-chardev", _socket_chardev("serial0", vm.console_socket, vm.serial_log),
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{vm.qmp_socket.absolute()},server=on,wait=off",
    ]  # fmt: skip
    if spec.debug_shell:
        argv += [
            # One port, the debug shell's: with QEMU 10's default of 31 the guest's
            # driver kept about 8 MB more unreclaimable memory (/proc/meminfo's
            # SUnreclaim, 29.9 MB against 23.4 MB), which the idle RAM figure counts.
            "-device", "virtio-serial-pci,max_ports=1",
            "-chardev", _socket_chardev("debugsh", vm.debug_socket),
            "-device", "virtconsole,chardev=debugsh",
            "-fw_cfg", f"name={FW_CFG_DEBUG_SHELL},string=1",
        ]  # fmt: skip
    if spec.config_file is not None:
        argv += ["-fw_cfg", f"name={FW_CFG_CONFIG},file={spec.config_file.absolute()}"]
    return argv
