"""What Keel remembers about a VM (state.json), and whether its QEMU is still alive.

Written atomically (temporary file, fsync, rename) so that `keel ps` never reads a
half-written file while `keel run` updates it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.core.files import write_atomically
from composer.vm.vmdir import VmDir


@dataclass
class VmState:
    name: str
    image: str  # absolute path of the backing disk
    accel: str
    memory_mib: int
    cpus: int
    ssh_port: int = 0
    pid: int = 0
    # starting -> running (SSH answered) -> stopped; "failed" when the boot gave up.
    phase: str = "starting"
    created_at: float = 0.0
    started_at: float = 0.0
    ssh_ready_at: float = 0.0
    config_file: str = ""
    qemu_argv: list[str] = field(default_factory=list)
    extra_disks: list[str] = field(default_factory=list)  # absolute paths, in order
    # Fixed when the VM is made: its NVRAM was made for one firmware (state files from
    # before Secure Boot support read as False, which they were).
    secure_boot: bool = False


def save(vm: VmDir, state: VmState) -> None:
    data = json.dumps(dataclasses.asdict(state), indent=2) + "\n"
    write_atomically(vm.state_file, data.encode(), mode=0o600)


def load(vm: VmDir) -> VmState:
    raw: dict[str, Any] = json.loads(vm.state_file.read_text())
    known = {f.name for f in dataclasses.fields(VmState)}
    return VmState(**{k: v for k, v in raw.items() if k in known})


def qemu_alive(vm: VmDir, pid: int) -> bool:
    """True when pid is a live QEMU of this VM (not a recycled pid of another process)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running any more.
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return str(vm.qmp_socket.absolute()).encode() in cmdline


def effective_phase(vm: VmDir, state: VmState) -> str:
    """The phase corrected by reality: a VM whose QEMU died is stopped."""
    alive = qemu_alive(vm, state.pid)
    if state.phase in ("starting", "running") and not alive:
        return "stopped"
    return state.phase
