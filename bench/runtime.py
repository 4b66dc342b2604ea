"""Runtime figures of built images: idle RAM and power-on to a declared container.

1. Boots the docker-host image (no containers), waits until the boot is finished and
   the machine has settled, and reads /proc/meminfo: used = MemTotal - MemAvailable
   (target: at most 200 MB), with the largest processes.
2. Boots an image that declares a container (tests/integration/images/runtime-host.yaml:
   the busybox "counter" container from a baked archive) and reports the time from
   `keel run` starting QEMU to the container running, under the accelerator in use.

Images are built first when missing (into --build-dir, default build/rt/). One VM at
a time. Usage: python bench/runtime.py [--settle 30] [--idle-image DIR]
       [--container-image DIR] [--build-dir DIR] [--json]"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from composer.core.errors import KeelError
from composer.core.paths import PROJECT_ROOT, vm_root
from composer.testing import KeelVM
from composer.vm import runner

DEFAULT_BUILD = PROJECT_ROOT / "build/rt"
IDLE_DEFINITION = PROJECT_ROOT / "images/docker-host.yaml"
CONTAINER_DEFINITION = PROJECT_ROOT / "tests/integration/images/runtime-host.yaml"
CONTAINER = "counter"
TARGET_MB = 200


@dataclass
class IdleMemory:
    boot: str  # "first boot" or "second boot"
    engine_running: bool  # dockerd active when sampled
    mem_total_mb: float
    mem_available_mb: float
    used_mb: float  # MemTotal - MemAvailable
    free_used_mb: float  # `free`'s "used" column, for comparison
    breakdown_mb: dict[str, float] = field(default_factory=dict)
    top_processes: list[str] = field(default_factory=list)
    running_services: list[str] = field(default_factory=list)


@dataclass
class IdleHost:
    boot_seconds: float
    samples: list[IdleMemory]
    # The engine starts on demand (docker.socket): the first `docker info` pays for it.
    first_docker_call_seconds: float


@dataclass
class ContainerStart:
    ssh_ready_seconds: float
    container_running_seconds: float  # from keel run's start (power-on) to StartedAt


def ensure_image(definition: Path, out: Path) -> Path:
    if (out / "manifest.json").exists():
        return out
    from composer.build.pipeline import build_image

    print(f"==> building {definition.name} into {out}", file=sys.stderr, flush=True)
    if definition == CONTAINER_DEFINITION:
        sys.path.insert(0, str(PROJECT_ROOT))
        from tests.integration.images.busybox_archive import make_busybox_archive

        # runtime-host.yaml names the archive relative to build/rt/.
        make_busybox_archive(DEFAULT_BUILD / "busybox.tar")
    return build_image(definition, out_dir=out).out_dir


def boot(image: Path, name: str) -> KeelVM:
    options = runner.RunOptions(image=image, name=name, die_with_parent=True)
    return KeelVM.start(options, vm_root())


def meminfo(vm: KeelVM) -> dict[str, float]:
    text = vm.run("cat /proc/meminfo", check=True).stdout
    return {k: int(v) / 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}


BREAKDOWN = ("AnonPages", "Shmem", "Slab", "SUnreclaim", "KernelStack", "PageTables",
             "Percpu")  # fmt: skip


def sample_idle(vm: KeelVM, boot_name: str, settle: float) -> IdleMemory:
    vm.run("systemctl is-system-running --wait", timeout=600)
    time.sleep(settle)
    info = meminfo(vm)
    free = vm.run("free -m", check=True).stdout.split("\n")[1].split()
    top = vm.run("ps -eo rss=,comm= --sort=-rss | head -8", check=True).stdout
    services = vm.run(
        "systemctl list-units --type=service --state=running --no-legend --plain "
        "| awk '{print $1}'",
        check=True,
    ).stdout.split()
    return IdleMemory(
        boot=boot_name,
        engine_running="docker.service" in services,
        mem_total_mb=round(info["MemTotal"], 1),
        mem_available_mb=round(info["MemAvailable"], 1),
        used_mb=round(info["MemTotal"] - info["MemAvailable"], 1),
        free_used_mb=float(free[2]),
        breakdown_mb={k: round(info.get(k, 0.0), 1) for k in BREAKDOWN},
        top_processes=[" ".join(line.split()) for line in top.splitlines()],
        running_services=services,
    )


def measure_idle(image: Path, settle: float) -> IdleHost:
    """Idle RAM on the first boot and on the second (after the health gate blessed the
    first: its check wakes the on-demand engine on counting boots only)."""
    vm = boot(image, f"rt-bench-idle-{int(time.time()) % 10000}")
    try:
        first = sample_idle(vm, "first boot", settle)
        vm.reboot_and_wait(timeout=600)
        second = sample_idle(vm, "second boot", settle)
        started = time.monotonic()
        vm.run("docker info --format '{{.ID}}'", check=True, timeout=300)
        first_call = time.monotonic() - started
        return IdleHost(round(vm.boot_seconds, 1), [first, second], round(first_call, 1))
    finally:
        vm.stop()
        vm.kill()
        shutil.rmtree(vm.vm_dir.path, ignore_errors=True)


def measure_container_start(image: Path) -> ContainerStart:
    vm = boot(image, f"rt-bench-ctr-{int(time.time()) % 10000}")
    try:
        deadline = time.monotonic() + 600
        while True:
            state = vm.run(f"docker inspect -f '{{{{.State.Running}}}} {{{{.State.StartedAt}}}}' "
                           f"{CONTAINER} 2>/dev/null; cat /proc/uptime; date +%s.%N")  # fmt: skip
            lines = state.stdout.split("\n")
            if lines[0].startswith("true"):
                break
            if time.monotonic() > deadline:
                raise KeelError(f"container {CONTAINER} did not run within 600s")
            time.sleep(1)
        host_now = time.time()
        started = datetime.datetime.fromisoformat(lines[0].split()[1][:26].rstrip("Z"))
        started_wall = started.replace(tzinfo=datetime.UTC).timestamp()
        uptime = float(lines[1].split()[0])
        guest_now = float(lines[2])
        # All in guest clocks except the time before the kernel, taken as in
        # bench/boot.py: host time since keel run's start minus the guest's uptime.
        before_kernel = host_now - vm.started_at - uptime
        since_kernel = uptime - (guest_now - started_wall)
        return ContainerStart(round(vm.boot_seconds, 1), round(before_kernel + since_kernel, 1))
    finally:
        vm.stop()
        vm.kill()
        shutil.rmtree(vm.vm_dir.path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=30.0, help="seconds idle after boot")
    parser.add_argument("--idle-image", type=Path, default=None)
    parser.add_argument("--container-image", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument("--idle-only", action="store_true", help="skip the container boot")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD,
                        help="where missing images are built (default %(default)s)")  # fmt: skip
    args = parser.parse_args()
    build = args.build_dir.resolve()
    try:
        idle_image = args.idle_image or ensure_image(IDLE_DEFINITION, build / "docker-host")
        print("==> idle RAM: first and second boot", file=sys.stderr, flush=True)
        idle = measure_idle(idle_image, args.settle)
        start = None
        if not args.idle_only:
            container_image = args.container_image or ensure_image(
                CONTAINER_DEFINITION, build / "rt-host"
            )
            print("==> power-on to declared container", file=sys.stderr, flush=True)
            start = measure_container_start(container_image)
    except KeelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        figures = {
            "idle_memory": asdict(idle),
            "container_start": asdict(start) if start else None,
            "target_idle_used_mb": TARGET_MB,
        }
        print(json.dumps(figures, indent=2))
        return 0
    rows = [
        (f"idle docker-host RAM used, {m.boot} "
         f"(engine {'running' if m.engine_running else 'not started'})",
         f"{m.used_mb:.0f} MB",
         f"target <= {TARGET_MB} MB: {'met' if m.used_mb <= TARGET_MB else 'NOT met'}")
        for m in idle.samples
    ]  # fmt: skip
    rows += [
        ("  docker-host first boot to SSH", f"{idle.boot_seconds:.0f} s", ""),
        ("  first docker call (engine started on demand)",
         f"{idle.first_docker_call_seconds:.0f} s", "docker.socket -> dockerd"),
    ]  # fmt: skip
    if start is not None:
        rows += [
            ("power-on to declared container running",
             f"{start.container_running_seconds:.0f} s", "keel run start -> docker StartedAt"),
            ("  container image boot to SSH", f"{start.ssh_ready_seconds:.0f} s", ""),
        ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>8}  {note}")
    for m in idle.samples:
        print(f"\n{m.boot}: MemTotal {m.mem_total_mb:.0f} MB; "
              + ", ".join(f"{k} {v:.0f}" for k, v in m.breakdown_mb.items()) + " (MB)")  # fmt: skip
        print("  largest processes (RSS kB): " + "; ".join(m.top_processes))
        print("  running services: " + " ".join(m.running_services))
    return 0


if __name__ == "__main__":
    sys.exit(main())
