"""Boot the default image N times and report the time from `keel run` to SSH ready.

Also asks the guest where the time went (systemd-analyze: firmware, loader, kernel,
initrd, userspace). Usage: python bench/boot.py [-n 3] [--image PATH] [--secure-boot]
[--json]; --secure-boot needs an image built with Secure Boot keys (keel build --keys)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from composer.core import commands
from composer.core.errors import KeelError
from composer.testing import KeelVM
from composer.vm import runner

PHASES = ("before_kernel", "firmware", "loader", "kernel", "initrd", "kernel_and_initrd",
          "userspace")  # fmt: skip


def parse_systemd_analyze(text: str) -> dict[str, float]:
    """Seconds per phase from `Startup finished in 1.2s (firmware) + 1min 3.4s (...)`."""
    figures: dict[str, float] = {}
    for amount, phase in re.findall(r"((?:[\d.]+(?:min|ms|s)\s*)+)\((\w+)\)", text):
        seconds = 0.0
        for value, unit in re.findall(r"([\d.]+)(min|ms|s)", amount):
            seconds += float(value) * {"min": 60.0, "s": 1.0, "ms": 0.001}[unit]
        figures[phase] = round(seconds, 2)
    return figures


@dataclass
class Boot:
    ssh_ready_seconds: float
    phases: dict[str, float]
    systemd_analyze: str


def boot_once(image: Path | None, accel: str | None, root: Path, secure_boot: bool = False) -> Boot:
    options = runner.RunOptions(
        image=image, accel=accel, die_with_parent=True, secure_boot=secure_boot
    )
    vm = KeelVM.start(options, root)
    try:
        # Host time since `keel run` started minus guest uptime, taken together right
        # after SSH answered: what went by before the kernel started (QEMU start,
        # firmware, systemd-boot). systemd-boot 252 does not export the loader timings
        # that systemd-analyze would need to split this itself.
        uptime = float(vm.run("cat /proc/uptime").stdout.split()[0])
        before_kernel = time.time() - vm.started_at - uptime
        # systemd-analyze fails until the boot transaction finished; wait for that.
        vm.run("systemctl is-system-running --wait", timeout=300)
        analyze = vm.run("systemd-analyze").stdout.strip()
        phases = {"before_kernel": round(before_kernel, 2), **parse_systemd_analyze(analyze)}
        if "kernel" in phases and "initrd" not in phases:
            # initramfs-tools' initrd runs no systemd, so systemd-analyze counts it in
            # "kernel"; say so rather than suggest the initrd took no time.
            phases["kernel_and_initrd"] = phases.pop("kernel")
        return Boot(round(vm.boot_seconds, 1), phases, analyze)
    finally:
        vm.stop(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--boots", type=int, default=3)
    parser.add_argument("--image", type=Path, help="artifact dir or disk (default: newest build)")
    parser.add_argument("--accel", choices=("kvm", "tcg"))
    parser.add_argument("--secure-boot", action="store_true", help="boot under Secure Boot")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    commands.echo_commands = False
    runs = []
    try:
        # The VM tools tree (QEMU, OVMF) is extracted once here if missing, not inside
        # the first timed boot.
        runner.vm_tools()
        with tempfile.TemporaryDirectory(prefix="keel-bench-") as root:
            for i in range(args.boots):
                print(f"==> boot {i + 1}/{args.boots}", file=sys.stderr)
                runs.append(boot_once(args.image, args.accel, Path(root), args.secure_boot))
    except KeelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    seconds = [r.ssh_ready_seconds for r in runs]
    phases = {
        phase: statistics.median(r.phases[phase] for r in runs if phase in r.phases)
        for phase in PHASES
        if any(phase in r.phases for r in runs)
    }
    result = {
        "boots": args.boots,
        "median_ssh_ready_seconds": statistics.median(seconds),
        "ssh_ready_seconds": seconds,
        "median_systemd_analyze": phases,
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"keel run -> SSH ready, median of {args.boots}: {result['median_ssh_ready_seconds']:.1f}s"
    )
    print(f"  each boot: {', '.join(f'{s:.1f}s' for s in seconds)}")
    print("  systemd-analyze (median): " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
