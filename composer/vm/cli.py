"""The VM verbs of the `keel` CLI: run, ps, ssh, console, stop, rm."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import vm_root
from composer.core.verbs import VerbGroup
from composer.provisioning.butane import looks_like_butane, translate_file
from composer.vm import console, runner, ssh, state
from composer.vm.accel import ACCELS
from composer.vm.image import image_label
from composer.vm.vmdir import VmDir, all_vms, existing_vm


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _ignition_config(config: Path | None) -> Path | None:
    """A Butane --config translated to Ignition (contents.local relative to its folder)."""
    if config is None or not config.is_file() or not looks_like_butane(config.read_bytes()):
        return config
    data = translate_file(config)
    translated = (
        vm_root() / ".configs" / f"{config.stem}-{hashlib.sha256(data).hexdigest()[:12]}.ign"
    )
    translated.parent.mkdir(parents=True, exist_ok=True)
    translated.write_bytes(data)
    runner.say(f"==> translated Butane {config} to Ignition {translated}")
    return translated


def cmd_run(args: argparse.Namespace) -> int:
    if args.json and not args.detach:
        raise KeelError(
            "keel run --json needs --detach",
            hint="in the foreground keel run shows the console; "
            "use `keel run --detach --json` in scripts",
        )
    runner.quiet = args.json
    commands.echo_commands = not args.json
    if args.config is not None and not args.config.is_file():
        raise KeelError(f"config file not found: {args.config}")
    args.config = _ignition_config(args.config)
    options = runner.RunOptions(
        image=args.path,
        name=args.name,
        accel=args.accel,
        memory_mib=args.memory,
        cpus=args.cpus,
        config=args.config,
        boot_timeout=args.timeout,
        extra_disks=tuple(args.disk or ()),
        secure_boot=args.secure_boot,
    )
    if args.config is not None and not args.config.is_file():
        raise KeelError(f"config file not found: {args.config}")
    if args.detach:
        running = runner.start(options, vm_root())
        name = running.vm.name
        if args.json:
            print(json.dumps(_run_summary(running), indent=2))
            return 0
        print(name)
        runner.say(f"    keel ssh {name}    keel console {name}    keel stop {name}")
        return 0
    # In the foreground the VM lives as long as this command: if the terminal goes away
    # (SIGHUP kills keel), QEMU goes too.
    return _run_foreground(dataclasses.replace(options, die_with_parent=True))


def _run_summary(running: runner.RunningVm) -> dict[str, object]:
    """What a script needs to reach a VM started with `keel run --detach --json`."""
    vm, vm_state = running.vm, running.state
    return {
        "name": vm.name,
        "ssh_port": vm_state.ssh_port,
        "ssh_key": str(vm.key),
        "ssh_config": str(vm.ssh_config),
        "accel": vm_state.accel,
        "pid": vm_state.pid,
        "boot_seconds": round(vm_state.ssh_ready_at - vm_state.started_at, 1),
        "serial_log": str(vm.serial_log),
        "image": vm_state.image,
    }


def _run_foreground(options: runner.RunOptions) -> int:
    stop_following = threading.Event()
    root = vm_root()
    # The serial log is followed from the start, so the firmware and kernel output shows
    # up live; the log path is known only once the VM is named, hence the small wrapper.
    follower: list[threading.Thread] = []

    def launch(argv: list[str], vm: VmDir, die: bool) -> subprocess.Popen[bytes]:
        if not follower:
            follower.append(console.follow(vm.serial_log, stop_following))
        return runner._launch(argv, vm, die)

    try:
        running = runner.start(options, root, launch=launch)
    finally:
        if not follower:
            stop_following.set()
    name = running.vm.name
    runner.say(f"==> {name} is up: `keel ssh {name}` in another terminal; Ctrl-C shuts it down")
    try:
        running.process.wait()
    except KeyboardInterrupt:
        runner.say(f"\n==> shutting down {name} (Ctrl-C again to pull the plug)")
        try:
            runner.stop(running.vm)
        except KeyboardInterrupt:
            runner.stop(running.vm, hard=True)
    finally:
        stop_following.set()
        for thread in follower:
            thread.join(timeout=2)
    vm_state = state.load(running.vm)
    vm_state.phase = "stopped"
    state.save(running.vm, vm_state)
    runner.say(f"==> {name} stopped; `keel run --name {name}` boots it again")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    rows = []
    for vm in all_vms(vm_root()):
        vm_state = state.load(vm)
        phase = state.effective_phase(vm, vm_state)
        rows.append(
            {
                "name": vm.name,
                "state": phase,
                "ssh_port": vm_state.ssh_port if phase in ("starting", "running") else None,
                "accel": vm_state.accel,
                "image": image_label(Path(vm_state.image)),
                "pid": vm_state.pid if phase in ("starting", "running") else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'NAME':<24} {'STATE':<9} {'SSH':>6}  {'ACCEL':<5}  IMAGE"
    print(header)
    for row in rows:
        port = str(row["ssh_port"] or "-")
        print(f"{row['name']:<24} {row['state']:<9} {port:>6}  {row['accel']:<5}  {row['image']}")
    return 0


def _running(name: str) -> tuple[VmDir, state.VmState]:
    vm = existing_vm(vm_root(), name)
    vm_state = state.load(vm)
    if not state.qemu_alive(vm, vm_state.pid):
        raise KeelError(f"VM {name!r} is not running", hint=f"`keel run --name {name}`")
    return vm, vm_state


def cmd_ssh(args: argparse.Namespace) -> int:
    vm, _ = _running(args.name)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    # The system ssh client, with the terminal inherited: this is an interactive
    # session, which composer.core.commands (built for logged, captured commands) does not offer.
    return subprocess.call(ssh.ssh_argv(vm, command))


def cmd_console(args: argparse.Namespace) -> int:
    vm, _ = _running(args.name)
    console.attach(vm.console_socket)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    vm = existing_vm(vm_root(), args.name)
    vm_state = state.load(vm)
    if not state.qemu_alive(vm, vm_state.pid):
        runner.say(f"{args.name} is not running")
        runner.stop(vm)  # records the stopped phase if QEMU died behind our back
        return 0
    runner.say(f"==> shutting down {args.name} (hard stop after {args.timeout:.0f}s)")
    start = time.monotonic()
    clean = runner.stop(vm, timeout=args.timeout, hard=args.force)
    how = "shut down" if clean else "stopped hard"
    runner.say(f"    {args.name} {how} after {time.monotonic() - start:.1f}s")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    for name in args.names:
        runner.remove(existing_vm(vm_root(), name), force=args.force)
        runner.say(f"removed {name}")
    return 0


def _register_run(subparsers: VerbGroup) -> None:
    """`keel run` and its options."""
    p = subparsers.add_parser("run", help="boot an image in QEMU")
    p.add_argument(
        "path", nargs="?", type=Path,
        help="artifact directory or disk file (.qcow2/.raw); default: newest docker-host build",
    )  # fmt: skip
    p.add_argument(
        "--name",
        help="VM name (default: image name + random suffix); "
        "an existing stopped VM of that name boots again with its disk and NVRAM",
    )
    p.add_argument("--accel", choices=ACCELS, help="force an accelerator (default: detect)")
    p.add_argument(
        "-m",
        "--memory",
        type=_positive,
        default=runner.DEFAULT_MEMORY_MIB,
        help="memory in MiB (default %(default)s)",
    )
    p.add_argument(
        "--cpus",
        type=_positive,
        default=runner.DEFAULT_CPUS,
        help="virtual CPUs (default %(default)s)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="provisioning config (Ignition JSON or Butane YAML) for the guest",
    )
    p.add_argument(
        "--disk",
        type=Path,
        action="append",
        metavar="FILE",
        help="attach FILE (qcow2 or raw) as one more virtio disk: /dev/vdb, then /dev/vdc, "
        "... in the guest (make a blank one with `qemu-img create -f qcow2 FILE 1G`); "
        "repeatable",
    )
    p.add_argument(
        "--secure-boot",
        action=argparse.BooleanOptionalAction,
        help="boot with UEFI Secure Boot: OVMF's Secure Boot firmware (SMM) and NVRAM "
        "enrolled with the image's PK, KEK and db, for an image built with `keel build --keys "
        "DIR` (DIR/secure-boot/ from `keel keygen --secure-boot`); off for a new VM, and a VM "
        "started again by --name keeps its setting",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=runner.DEFAULT_BOOT_TIMEOUT,
        help="seconds to wait for SSH (default %(default)s)",
    )
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="return once SSH answers and leave the VM running",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="with --detach: no progress, print name, SSH port and key, pid as JSON",
    )
    p.set_defaults(func=cmd_run)


def register(subparsers: VerbGroup) -> None:
    """Add the VM verbs to the `keel` argument parser."""
    _register_run(subparsers)

    p = subparsers.add_parser("ps", help="list VMs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ps)

    p = subparsers.add_parser("ssh", help="SSH into a running VM as root")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND to run instead of a shell")
    p.set_defaults(func=cmd_ssh)

    p = subparsers.add_parser("console", help="attach to a VM's serial console (Ctrl-] leaves)")
    p.add_argument("name")
    p.set_defaults(func=cmd_console)

    p = subparsers.add_parser("stop", help="shut a VM down (ACPI, then hard stop)")
    p.add_argument("name")
    p.add_argument(
        "--timeout",
        type=float,
        default=runner.DEFAULT_STOP_TIMEOUT,
        help="seconds before the hard stop (default %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="stop at once without ACPI shutdown")
    p.set_defaults(func=cmd_stop)

    p = subparsers.add_parser("rm", help="delete stopped VMs and their files")
    p.add_argument("names", nargs="+", metavar="name")
    p.add_argument("-f", "--force", action="store_true", help="stop running VMs first")
    p.set_defaults(func=cmd_rm)
