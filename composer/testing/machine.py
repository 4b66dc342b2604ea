"""A booted VM as tests see it: SSH and debug-shell commands, reboots, boot IDs."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import paramiko

from composer.vm import runner, ssh, state
from composer.vm.console import DebugShell, ShellResult, tail
from composer.vm.vmdir import VmDir

BOOT_ID = "/proc/sys/kernel/random/boot_id"
# Under TCG with two vCPUs on a loaded host, a guest reboot now and then never gets
# past the firmware: QEMU runs on, the serial console stays silent after the kernel's
# "reboot: machine restart", and the ESP is intact. A real machine's watchdog would
# reset it; QEMU's reset stops the emulated one, and a QMP system_reset was seen to
# leave such a guest silent too (CI, 2026-12-05). So after this long a silence the
# harness power-cycles the machine once: it ends that QEMU and starts a new one on the
# same VM folder (disk, NVRAM and serial log kept), and says so in the test output.
# The same silence was seen one step later too, after a watchdog reset: the firmware
# printed its hand-over to the boot loader and then nothing for 540 s (CI, 2026-12-06),
# where a good boot prints the kernel's first lines within seconds.
SILENT_AFTER_RESTART = 150.0
RESTART_MESSAGE = b"reboot: machine restart"
FIRMWARE_HANDOVER = b"BdsDxe: starting Boot"


class KeelVM:
    """One running VM started by the plugin (or by your own code through start())."""

    def __init__(
        self,
        running: runner.RunningVm,
        options: runner.RunOptions | None = None,
        root: Path | None = None,
    ) -> None:
        self._running = running
        # How it was started, to start it again in power_cycle().
        self._options = options
        self._root = root

    @classmethod
    def start(cls, options: runner.RunOptions, root: Path) -> KeelVM:
        return cls(runner.start(options, root), options, root)

    @property
    def name(self) -> str:
        return self._running.vm.name

    @property
    def vm_dir(self) -> VmDir:
        return self._running.vm

    @property
    def ssh_port(self) -> int:
        return self._running.state.ssh_port

    @property
    def key(self) -> Path:
        return self._running.vm.key

    @property
    def ssh_config(self) -> Path:
        return self._running.vm.ssh_config

    @property
    def serial_log(self) -> Path:
        return self._running.vm.serial_log

    @property
    def nvram(self) -> Path:
        return self._running.vm.nvram

    @property
    def pid(self) -> int:
        return self._running.process.pid

    @property
    def started_at(self) -> float:
        """time.time() when the start of this VM began (keel run's start)."""
        return self._running.state.started_at

    @property
    def boot_seconds(self) -> float:
        """From the start of `keel run` to the first SSH login."""
        return self._running.state.ssh_ready_at - self._running.state.started_at

    def is_running(self) -> bool:
        return self._running.process.poll() is None

    def run(self, command: str, check: bool = False, timeout: float = 120) -> ssh.CommandResult:
        """Run a shell command as root over SSH; check=True raises on a non-zero exit."""
        result = ssh.run_command(self.ssh_port, self.key, command, timeout=timeout)
        if check and result.exit_status != 0:
            raise AssertionError(
                f"`{command}` exited {result.exit_status} in {self.name}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def serial_command(self, command: str, timeout: float = 60) -> ShellResult:
        """Run a command in the debug root shell on the virtio console (works without SSH)."""
        return DebugShell(self._running.vm.debug_socket).run(command, timeout=timeout)

    def boot_id(self) -> str:
        return self.run(f"cat {BOOT_ID}", check=True).stdout.strip()

    def serial_tail(self, lines: int = 50) -> str:
        return tail(self.serial_log, lines)

    def reboot_and_wait(self, timeout: float = 300) -> str:
        """Reboot from inside the guest and return the new boot ID (asserted to differ)."""
        old = self.boot_id()
        # Detached with a delay, so the SSH command returns before sshd goes away.
        self.run("systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot")
        return self.wait_for_new_boot(old, timeout)

    def wait_for_new_boot(
        self, old: str, timeout: float = 300, watch: RebootWatch | None = None
    ) -> str:
        """Wait until SSH answers with a boot ID other than old (the guest restarted by
        itself, or was made to); return the new one. watch: pass one to learn whether
        it had to power-cycle the guest."""
        deadline = time.monotonic() + timeout
        watch = watch or RebootWatch(self)
        while time.monotonic() < deadline:
            if not self.is_running():
                raise AssertionError(f"QEMU of {self.name} exited during the reboot")
            watch.poll()
            try:
                new = ssh.run_command(self.ssh_port, self.key, f"cat {BOOT_ID}", timeout=10)
            except (OSError, paramiko.SSHException, EOFError):
                new = None
            if new is not None and new.exit_status == 0 and new.stdout.strip() != old:
                return new.stdout.strip()
            time.sleep(1)
        raise AssertionError(
            f"{self.name} did not come back with a new boot ID within {timeout:.0f}s\n"
            f"{self.serial_tail()}"
        )

    def power_cycle(self) -> None:
        """Pull the plug and start the VM again (same folder: disk, NVRAM, key); returns
        once SSH answers. A new QEMU process, so pid and SSH port may change."""
        if self._options is None or self._root is None:
            raise AssertionError(f"{self.name} was not started by KeelVM.start: cannot restart")
        runner.stop(self.vm_dir, hard=True)
        options = dataclasses.replace(self._options, image=None, name=self.name)
        self._running = runner.start(options, self._root)

    def stop(self, timeout: float = runner.DEFAULT_STOP_TIMEOUT) -> None:
        """Shut down (ACPI, then hard stop); safe to call twice."""
        process = self._running.process
        if process.poll() is None:
            runner.stop(self._running.vm, timeout=timeout)
            try:
                process.wait(timeout=10)
            except Exception:
                process.kill()
                process.wait()
        elif self._running.vm.state_file.exists():
            vm_state = state.load(self._running.vm)
            vm_state.phase = "stopped"
            state.save(self._running.vm, vm_state)

    def kill(self) -> None:
        """Last resort for interrupted sessions: no shutdown, just end QEMU."""
        process = self._running.process
        if process.poll() is None:
            process.kill()
            process.wait()

    def __repr__(self) -> str:
        return f"KeelVM({self.name!r}, ssh 127.0.0.1:{self.ssh_port}, pid {self.pid})"


class RebootWatch:
    """For any wait across a guest reboot: power-cycles the guest once if the reboot
    hangs silently in the firmware or boot loader (seen under TCG on a loaded host),
    and says so."""

    def __init__(self, vm: KeelVM) -> None:
        self.vm = vm
        self.silence = _SilenceAfterRestart(vm.serial_log)
        self.power_cycles = 0

    def poll(self) -> None:
        if self.silence.stuck():
            print(
                f"keel: {self.vm.name} stayed silent {SILENT_AFTER_RESTART:.0f}s after its "
                "restart (firmware hang under emulation); power-cycling it once",
                file=sys.stderr,
            )
            self.power_cycles += 1
            self.vm.power_cycle()


class _SilenceAfterRestart:
    """Tells when the serial log has ended on the kernel's restart message or on the
    firmware's hand-over to the boot loader, and not grown since."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.size = -1
        self.since = time.monotonic()
        self.done = False

    def stuck(self) -> bool:
        if self.done:
            return False
        try:
            size = self.log.stat().st_size
        except OSError:
            return False
        if size != self.size:
            self.size, self.since = size, time.monotonic()
            return False
        with self.log.open("rb") as handle:
            handle.seek(max(0, size - 300))
            lines = handle.read().rstrip().splitlines()
        last = lines[-1] if lines else b""
        ends_on_restart = last.endswith(RESTART_MESSAGE) or last.startswith(FIRMWARE_HANDOVER)
        if ends_on_restart and time.monotonic() - self.since > SILENT_AFTER_RESTART:
            self.done = True  # once: a second hang is a failure to report
            return True
        return False
