"""Shared by the QEMU update tests (test_update.py, test_fleet_vms.py): `keel` as a
subprocess, builds of tests/integration/images/up-*.yaml with a session's trust root,
and the waits for a guest that reboots by itself into another version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import paramiko

from composer.core.paths import PROJECT_ROOT, build_root
from composer.testing import KeelVM
from composer.testing.machine import RebootWatch
from composer.vm import ssh

IMAGES = Path(__file__).parent / "images"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def keel(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "composer.cli", *args],
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
    )


def build(definition: str, out: Path, keys: Path) -> Path:
    """Build images/<definition>.yaml into out with the keys `keel keygen` made: it
    trusts their root, and is signed for Secure Boot if they have such keys."""
    keel("build", str(IMAGES / f"{definition}.yaml"), "--out", str(out), "--keys", str(keys))
    return out


def wait_for_hostd(vm: KeelVM) -> None:
    """The boot transaction done (health gate included) and hostd answering."""
    vm.run("systemctl is-system-running --wait", timeout=300)
    vm.run("until keelctl status >/dev/null 2>&1; do sleep 1; done", check=True, timeout=120)


def wait_for_version(vm: KeelVM, version: str, after_boot: str, timeout: float = 900) -> str:
    """Wait (through any reboots the guest does by itself) for SSH in version on a boot
    other than after_boot, then for hostd; returns the new boot ID."""
    deadline = time.monotonic() + timeout
    command = f"cat {BOOT_ID}; . /usr/lib/keel/release; echo $KEEL_IMAGE_VERSION"
    watch = RebootWatch(vm)
    while time.monotonic() < deadline:
        assert vm.is_running(), f"QEMU exited\n{vm.serial_tail()}"
        watch.poll()
        try:
            result = ssh.run_command(vm.ssh_port, vm.key, command, timeout=10)
        except (OSError, paramiko.SSHException, EOFError):
            result = None
        if result is not None and result.exit_status == 0:
            boot_id, seen = result.stdout.split()
            if boot_id != after_boot and seen == version:
                wait_for_hostd(vm)
                return boot_id
        time.sleep(2)
    raise AssertionError(f"no boot of {version} within {timeout:.0f}s\n{vm.serial_tail()}")


class UpdateImages:
    """The update test images (images/up-*.yaml), each built at most once a session,
    all trusting one `keel keygen` root made for the session and signed with its Secure
    Boot keys (test_update.py boots them under Secure Boot, test_fleet_vms.py without:
    a signed image boots either way). Both publish them; each takes its own copy of
    the keys, because test_update.py rotates keys in its copy."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.keys = work / "keys"
        self.built: set[str] = set()

    def path(self, definition: str) -> Path:
        return build_root() / "up" / definition

    def make_keys(self) -> None:
        if not self.keys.exists():
            keel("keygen", "--out", str(self.keys), "--secure-boot", "--owner", "Keel tests")

    def build(self, definition: str) -> Path:
        self.make_keys()
        if definition not in self.built:
            build(definition, self.path(definition), self.keys)
            self.built.add(definition)
        return self.path(definition)

    def copy_keys(self, to: Path) -> Path:
        self.make_keys()
        shutil.copytree(self.keys, to)
        return to
