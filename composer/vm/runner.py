"""Start, stop and remove VMs: the steps behind `keel run`, `keel stop` and `keel rm`.

A VM is its folder (vmdir.VmDir). Starting one reuses what the folder already holds,
so the NVRAM variables, the disk overlay and the SSH key survive `keel run` restarts
of the same VM; QEMU runs in its own session so it outlives a detached `keel run`."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from composer.build.toolstree import VM_PACKAGES, ToolsTree, tools_tree
from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import build_root
from composer.core.progress import Progress
from composer.vm import bootlog, command, firmware, ignition, keys, qmp, secureboot, ssh, state
from composer.vm.accel import choose_accel
from composer.vm.console import tail
from composer.vm.image import disk_format, image_label, resolve_disk
from composer.vm.ports import is_hostfwd_failure, pick_free_port
from composer.vm.vmdir import VmDir, vm_dir

DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 2
DEFAULT_BOOT_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 60.0
# QEMU creates the sockets and logs in the VM folder: owner only (sockets 0700, files
# 0600), a second guard after the folder's own mode.
QEMU_UMASK = 0o077
PORT_ATTEMPTS = 5
QMP_STARTUP_TIMEOUT = 30.0
LOG_LINES = 50


# Set by `keel run --json`: progress stays off stderr so scripts see only the result.
quiet = False


def say(message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunOptions:
    image: Path | None = None  # artifact dir or disk file; None = default image
    name: str | None = None
    accel: str | None = None  # None = automatic
    memory_mib: int = DEFAULT_MEMORY_MIB
    cpus: int = DEFAULT_CPUS
    config: Path | None = None
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    # Kill QEMU when the starting process dies (test sessions), not for `--detach`.
    die_with_parent: bool = False
    # Disk files (qcow2 or raw) attached after the boot disk: /dev/vdb, /dev/vdc, ...
    # in the guest. A VM started again by name keeps its extra disks if none are given.
    extra_disks: tuple[Path, ...] = ()
    # False: no provisioning config through fw_cfg, as on bare metal, so the guest reads
    # the one on its ESP (keel/provision.ign, `keel install --config`) or its baked
    # one. SSH logins then need the VM key (its folder's id_ed25519.pub) in that config.
    fw_cfg_config: bool = True
    # UEFI Secure Boot with the image's own keys enrolled (the image must be signed).
    # None: a VM started again by name keeps its setting, a new VM boots without.
    secure_boot: bool | None = None


@dataclass
class RunningVm:
    vm: VmDir
    state: state.VmState
    process: subprocess.Popen[bytes]


def _default_name(disk: Path) -> str:
    base = image_label(disk).split("/")[0].removesuffix(".qcow2").removesuffix(".raw")
    return f"{base}-{secrets.token_hex(2)}"


def extra_disks(paths: tuple[Path, ...], boot_disk: Path) -> tuple[command.ExtraDisk, ...]:
    """The extra disks, checked: existing files, each once, none the boot image."""
    disks: list[command.ExtraDisk] = []
    for path in paths:
        if not path.is_file():
            raise KeelError(
                f"extra disk not found: {path}",
                hint="make a blank one with `qemu-img create -f qcow2 data.qcow2 1G`",
            )
        resolved = path.resolve()
        if resolved == boot_disk.resolve() or any(d.path == resolved for d in disks):
            raise KeelError(f"{path} is attached twice (or is the image booted)")
        disks.append(command.ExtraDisk(resolved, disk_format(resolved)))
    return tuple(disks)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to send SIGTERM when the
    # parent goes away, so a killed test session cannot leave QEMU behind.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def vm_tools() -> ToolsTree | None:
    """The VM tools tree, for its QEMU and OVMF (Debian 13's: docker-host reached SSH
    under TCG in 16.8 s instead of 23.1 s with Debian 12's), made first if missing;
    None when it cannot be made (no network to Debian): the build machine's QEMU and
    OVMF boot the VM then."""
    try:
        with tempfile.TemporaryDirectory(prefix="keel-tools-") as scratch:
            return tools_tree(Progress(quiet=quiet), Path(scratch), packages=VM_PACKAGES)
    except KeelError as error:
        say(f"    note: {error.message}; booting with the build machine's QEMU and OVMF instead")
        return None


def _prepare(vm: VmDir, disk: Path, fw: firmware.Firmware, config: Path | None) -> bool:
    """Create what the folder lacks; return whether the guest config holds the VM key."""
    # Without state.json the folder is left by a start that failed early, and its NVRAM
    # may be for the other firmware: it is made again.
    new_nvram = not (vm.nvram.exists() and vm.state_file.exists())
    # Looked up before the folder is made, so an unsigned image leaves no VM behind.
    certificates = secureboot.image_certificates(disk) if fw.secure_boot and new_nvram else None
    vm.create()
    vm.check_socket_paths()
    if certificates is not None:
        secureboot.write_enrolled_vars(fw.vars_template, certificates, vm.nvram)
    elif new_nvram:
        shutil.copyfile(fw.vars_template, vm.nvram)
    if not vm.overlay.exists():
        commands.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk_format(disk),
             "-b", disk, vm.overlay],
            hint="qemu-img comes with the Debian package `qemu-utils`",
        )  # fmt: skip
    public_key = keys.ensure_key(vm.key, comment=f"keel-vm-{vm.name}")
    user_config = config.read_bytes() if config is not None else None
    guest = ignition.guest_config(user_config, public_key)
    vm.guest_config.write_bytes(guest.data)
    return guest.has_vm_key


def _reuse_or_new(root: Path, options: RunOptions) -> tuple[VmDir, Path]:
    """The VM folder and the disk it boots; an existing stopped VM keeps its disk."""
    if options.name is not None and (root / options.name / "state.json").is_file():
        vm = vm_dir(root, options.name)
        previous = state.load(vm)
        if state.qemu_alive(vm, previous.pid):
            raise KeelError(
                f"VM {vm.name!r} is already running (pid {previous.pid})",
                hint=f"`keel ssh {vm.name}`, or `keel stop {vm.name}` first",
            )
        disk = Path(previous.image)
        if options.image is not None and resolve_disk(options.image, build_root()) != disk:
            raise KeelError(
                f"VM {vm.name!r} was created from {disk}, not {options.image}",
                hint=f"`keel rm {vm.name}` first, or choose another --name",
            )
        if options.secure_boot is not None and options.secure_boot != previous.secure_boot:
            # Its NVRAM was made for one firmware: enrolled keys, or an empty store.
            made = "with" if previous.secure_boot else "without"
            raise KeelError(
                f"VM {vm.name!r} was created {made} Secure Boot",
                hint=f"`keel rm {vm.name}` first, or choose another --name",
            )
        if not disk.is_file():
            raise KeelError(f"the image of VM {vm.name!r} is gone: {disk}")
        return vm, disk
    disk = resolve_disk(options.image, build_root())
    return vm_dir(root, options.name or _default_name(disk)), disk


def _launch(argv: list[str], vm: VmDir, die_with_parent: bool) -> subprocess.Popen[bytes]:
    with vm.qemu_log.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=vm.path,
            # Own session: Ctrl-C in the terminal reaches Keel, which shuts the guest
            # down properly, instead of killing QEMU mid-write.
            start_new_session=True,
            umask=QEMU_UMASK,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def _wait_for_qmp(vm: VmDir, process: subprocess.Popen[bytes]) -> bool:
    """True once QEMU answers QMP (it finished setting up devices), False if it exited."""
    deadline = time.monotonic() + QMP_STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            qmp.status(vm.qmp_socket)
            return True
        except qmp.QmpUnavailable:
            time.sleep(0.1)
    return process.poll() is None


def _kill(process: subprocess.Popen[bytes], vm: VmDir) -> None:
    if process.poll() is None:
        qmp.quit_now(vm.qmp_socket)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _failure(vm: VmDir, what: str) -> KeelError:
    return KeelError(
        f"{what}\n  last {LOG_LINES} lines of {vm.serial_log}:\n{tail(vm.serial_log, LOG_LINES)}",
        hint=f"the whole boot log is {vm.serial_log}; QEMU's own messages are in {vm.qemu_log}",
    )


def start(
    options: RunOptions,
    root: Path,
    launch: Callable[[list[str], VmDir, bool], subprocess.Popen[bytes]] = _launch,
    port_picker: Callable[[], int] = pick_free_port,
) -> RunningVm:
    """Boot a VM and return once SSH answers; on any failure no QEMU is left running."""
    started_at = time.time()
    vm, disk = _reuse_or_new(root, options)
    if vm.state_file.exists():
        # A VM started again keeps its Secure Boot setting, and its disks if none are given.
        previous = state.load(vm)
        options = dataclasses.replace(
            options,
            extra_disks=options.extra_disks or tuple(Path(p) for p in previous.extra_disks),
            secure_boot=previous.secure_boot,
        )
    disks = extra_disks(options.extra_disks, disk)  # checked before the folder is made
    tools = vm_tools()
    fw = firmware.find_firmware(secure_boot=bool(options.secure_boot), tools=tools)
    accel, reason = choose_accel(options.accel)
    secure = ", Secure Boot" if fw.secure_boot else ""
    say(f"==> VM {vm.name}: {image_label(disk)}{secure}, accel {accel} ({reason})")
    has_key = _prepare(vm, disk, fw, options.config)
    if not has_key:
        say(
            f"    note: {options.config} is not Ignition JSON; passed through unchanged, "
            "the VM key is not in it, so `keel ssh` may not work"
        )
    vm_state = state.VmState(
        name=vm.name,
        image=str(disk),
        accel=accel,
        memory_mib=options.memory_mib,
        cpus=options.cpus,
        created_at=state.load(vm).created_at if vm.state_file.exists() else started_at,
        started_at=started_at,
        config_file=str(options.config.absolute()) if options.config else "",
        extra_disks=[str(d.path) for d in disks],
        secure_boot=fw.secure_boot,
    )
    sshd_watch = bootlog.SshdStartWatch(vm.serial_log)
    qemu = command.qemu_program(tools)
    process = _start_qemu(vm, vm_state, fw, options, launch, port_picker, disks, qemu)
    try:
        ready = ssh.wait_until_ready(
            vm_state.ssh_port,
            vm.key,
            deadline=time.monotonic() + options.boot_timeout,
            still_running=lambda: process.poll() is None,
            report=say,
            sshd_started=sshd_watch.started,
        )
        if not ready:
            exited = process.poll() is not None
            _kill(process, vm)
            vm_state.phase = "failed"
            state.save(vm, vm_state)
            if exited:
                raise _failure(vm, f"QEMU exited (status {process.returncode}) during boot")
            raise _failure(vm, f"no SSH login within {options.boot_timeout:.0f}s")
    except BaseException:
        # Ctrl-C or any error while waiting: never leave a half-booted QEMU behind.
        if process.poll() is None:
            _kill(process, vm)
            vm_state.phase = "failed"
            state.save(vm, vm_state)
        raise
    vm_state.phase = "running"
    vm_state.ssh_ready_at = time.time()
    state.save(vm, vm_state)
    say(f"    SSH ready on 127.0.0.1:{vm_state.ssh_port} after {time.time() - started_at:.1f}s")
    return RunningVm(vm, vm_state, process)


def _start_qemu(
    vm: VmDir,
    vm_state: state.VmState,
    fw: firmware.Firmware,
    options: RunOptions,
    launch: Callable[[list[str], VmDir, bool], subprocess.Popen[bytes]],
    port_picker: Callable[[], int],
    disks: tuple[command.ExtraDisk, ...] = (),
    qemu: tuple[str, ...] = (command.QEMU,),
) -> subprocess.Popen[bytes]:
    """Launch QEMU until it holds its SSH port (the port race is handled by retrying)."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = port_picker()
        spec = command.VmSpec(
            vm=vm,
            firmware=fw,
            accel=vm_state.accel,
            memory_mib=options.memory_mib,
            cpus=options.cpus,
            ssh_port=port,
            config_file=vm.guest_config if options.fw_cfg_config else None,
            extra_disks=disks,
            qemu=qemu,
        )
        argv = command.qemu_argv(spec)
        ssh.write_ssh_config(vm, port)
        process = launch(argv, vm, options.die_with_parent)
        vm_state.ssh_port, vm_state.pid, vm_state.qemu_argv = port, process.pid, argv
        vm_state.phase = "starting"
        state.save(vm, vm_state)
        if _wait_for_qmp(vm, process):
            return process
        _kill(process, vm)
        qemu_output = vm.qemu_log.read_text(errors="replace") if vm.qemu_log.exists() else ""
        if is_hostfwd_failure(qemu_output) and attempt < PORT_ATTEMPTS:
            say(f"    port {port} was taken before QEMU bound it; retrying with another")
            continue
        vm_state.phase = "failed"
        state.save(vm, vm_state)
        raise KeelError(
            f"QEMU failed to start (exit status {process.returncode}):\n{qemu_output.strip()}",
            hint=f"the command line is in {vm.state_file} (qemu_argv)",
        )
    raise AssertionError("unreachable")


def wait_exit(vm: VmDir, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not state.qemu_alive(vm, pid):
            return True
        time.sleep(0.2)
    return not state.qemu_alive(vm, pid)


def stop(vm: VmDir, timeout: float = DEFAULT_STOP_TIMEOUT, hard: bool = False) -> bool:
    """Shut the VM down (ACPI power button, then hard stop after timeout).

    Returns True when the guest shut down cleanly, False when it had to be killed."""
    vm_state = state.load(vm)
    clean = True
    if state.qemu_alive(vm, vm_state.pid):
        if not hard:
            # With QMP broken, the hard stop below still works.
            with contextlib.suppress(qmp.QmpUnavailable):
                qmp.powerdown(vm.qmp_socket)
        if hard or not wait_exit(vm, vm_state.pid, timeout):
            clean = False
            qmp.quit_now(vm.qmp_socket)
            if not wait_exit(vm, vm_state.pid, 10):
                os.kill(vm_state.pid, signal.SIGKILL)
                wait_exit(vm, vm_state.pid, 10)
    vm_state.phase = "stopped"
    state.save(vm, vm_state)
    return clean


def remove(vm: VmDir, force: bool = False) -> None:
    vm_state = state.load(vm)
    if state.qemu_alive(vm, vm_state.pid):
        if not force:
            raise KeelError(
                f"VM {vm.name!r} is running",
                hint=f"`keel stop {vm.name}` first, or `keel rm --force {vm.name}`",
            )
        stop(vm, hard=True)
    shutil.rmtree(vm.path)
