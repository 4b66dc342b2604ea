"""The folder of one VM: every file QEMU and Keel keep for it, by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from composer.core.errors import KeelError

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
# The folder holds the VM's SSH key and the sockets of its consoles and of QMP; the
# debug socket of a test image is a root shell in the guest. Only its owner may enter.
FOLDER_MODE = 0o700
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeelError(
            f"invalid VM name {name!r}",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class VmDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def overlay(self) -> Path:
        return self.path / "overlay.qcow2"

    @property
    def nvram(self) -> Path:
        return self.path / "OVMF_VARS.fd"

    @property
    def key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.path / "ssh_config"

    @property
    def guest_config(self) -> Path:
        return self.path / "config.ign"

    @property
    def serial_log(self) -> Path:
        return self.path / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def qmp_socket(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def console_socket(self) -> Path:
        return self.path / "console.sock"

    @property
    def debug_socket(self) -> Path:
        return self.path / "debug.sock"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def create(self) -> None:
        """Make the folder, or take back one an older Keel left open to others."""
        self.path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        self.path.chmod(FOLDER_MODE)

    def check_socket_paths(self) -> None:
        longest = max(
            (self.qmp_socket, self.console_socket, self.debug_socket),
            key=lambda p: len(str(p.absolute())),
        )
        if len(str(longest.absolute())) > MAX_SOCKET_PATH:
            raise KeelError(
                f"VM folder path too long for a UNIX socket: {longest.absolute()}",
                hint="set KEEL_VM_DIR to a shorter directory, or use a shorter --name",
            )


def vm_dir(root: Path, name: str) -> VmDir:
    return VmDir(root / check_name(name))


def existing_vm(root: Path, name: str) -> VmDir:
    vm = vm_dir(root, name)
    if not vm.state_file.is_file():
        raise KeelError(f"no VM named {name!r} in {root}", hint="`keel ps` lists the VMs")
    return vm


def all_vms(root: Path) -> list[VmDir]:
    if not root.is_dir():
        return []
    return [VmDir(d) for d in sorted(root.iterdir()) if (d / "state.json").is_file()]
