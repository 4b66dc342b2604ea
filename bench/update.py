"""Update figures under the current accelerator (TCG here): how long a host takes to
download, verify and write an update, and the downtime from reboot to SSH ready in
the new version.

Builds (or takes) two versions of docker-host with a fresh trust root, publishes the
second to a repository served on loopback, boots the first and runs `keelctl update`.
The phase times come from hostd's own history (transition timestamps).

Usage: python bench/update.py [--from DIR --to DIR --keys DIR] [--json]
  --from/--to  artifact dirs already built with KEEL_UPDATE_ROOT=KEYS/root.json"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from composer.core.paths import PROJECT_ROOT, vm_root
from composer.publish import repository, serve
from composer.testing import KeelVM
from composer.testing.machine import RESTART_MESSAGE, RebootWatch
from composer.vm import runner

IMAGES = PROJECT_ROOT / "tests/integration/images"


def keel(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "composer.cli", *args],
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
    )


def phase_seconds(history: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in each update phase, from the last run's transitions."""
    moves = [e for e in history if e.get("event") == "transition"]
    start = max(i for i, e in enumerate(moves) if e["to"] == "downloading")
    figures: dict[str, float] = {}
    for here, after in zip(moves[start:], moves[start + 1 :], strict=False):
        figures[here["to"]] = round(after["at"] - here["at"], 1)
    return figures


class RestartSeen(threading.Thread):
    """Notes (time.monotonic) when the serial log first shows the kernel restarting
    after it was created: the end of the old version's shutdown."""

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.offset = log.stat().st_size
        self.at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and self.at is None:
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                if RESTART_MESSAGE in handle.read():
                    self.at = time.monotonic()
            time.sleep(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path)
    parser.add_argument("--to", dest="target", type=Path)
    parser.add_argument("--keys", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Two builds and a repository: about 2 GB, removed when done.
    with tempfile.TemporaryDirectory(prefix="keel-bench-update-") as scratch:
        figures = measure(args, Path(scratch))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"bundle: {figures['bundle_bytes'] / 2**20:.0f} MiB")
        print(f"download + verify + write: {figures['update_seconds']} s {figures['phases']}")
        print(
            f"downtime, reboot to SSH in {figures['booted_version_after']}: "
            f"{figures['downtime_reboot_to_ssh_seconds']} s"
        )
    return 0


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    keys = args.keys or work / "keys"
    if args.keys is None:
        print("==> keygen", file=sys.stderr, flush=True)
        keel("keygen", "--out", str(keys))
    env = {"KEEL_UPDATE_ROOT": str(keys / "root.json")}
    source, target = args.source, args.target
    if source is None or target is None:
        source, target = work / "v1", work / "v2"
        print("==> building versions 1.0.0 and 2.0.0", file=sys.stderr, flush=True)
        keel("build", str(IMAGES / "up-v1.yaml"), "--out", str(source), env=env)
        keel("build", str(IMAGES / "up-v2.yaml"), "--out", str(target), env=env)
    repo = work / "repo"
    print("==> publishing 2.0.0, booting 1.0.0", file=sys.stderr, flush=True)
    published = repository.publish(repo, target, keys)
    with serve.serving(repo) as url:
        guest_url = url.replace("127.0.0.1", "10.0.2.2")
        vm = KeelVM.start(
            runner.RunOptions(image=source, name=f"bench-up-{secrets.token_hex(2)}",
                              die_with_parent=True),
            vm_root(),
        )  # fmt: skip
        try:
            vm.run("systemctl is-system-running --wait", timeout=300)
            policy = json.dumps({"repository": guest_url, "reboot": "manual"})
            vm.run(f"mkdir -p /etc/keel && echo '{policy}' > /etc/keel/update.json", check=True)
            print("==> keelctl update", file=sys.stderr, flush=True)
            began = time.monotonic()
            vm.run("keelctl update", check=True, timeout=1800)
            update_seconds = time.monotonic() - began
            history = json.loads(vm.run("keelctl history --json", check=True).stdout)
            old = vm.boot_id()
            print("==> reboot into 2.0.0", file=sys.stderr, flush=True)
            restart = RestartSeen(vm.serial_log)
            vm.run("systemd-run --on-active=1 systemctl reboot")
            watch = RebootWatch(vm)
            began = time.monotonic()
            restart.start()
            vm.wait_for_new_boot(old, timeout=600, watch=watch)
            downtime = time.monotonic() - began
            restart.stop()
            shutdown = restart.at - began if restart.at is not None else None
            version = vm.run(". /usr/lib/keel/release; echo $KEEL_IMAGE_VERSION").stdout.strip()
        finally:
            vm.stop()
            vm.kill()
            shutil.rmtree(vm.vm_dir.path, ignore_errors=True)
    assert published.stored_at is not None, "publish did not store the bundle"
    bundle_bytes = published.stored_at.stat().st_size
    return {
        "bundle_bytes": bundle_bytes,
        "update_seconds": round(update_seconds, 1),
        "phases": phase_seconds(history),
        "downtime_reboot_to_ssh_seconds": round(downtime, 1),
        # The split: until the kernel's restart message (services stopped, disks
        # synced), then firmware, boot and start-up until SSH answers in 2.0.0.
        "downtime_shutdown_seconds": round(shutdown, 1) if shutdown is not None else None,
        "downtime_boot_seconds": round(downtime - shutdown, 1) if shutdown is not None else None,
        # A power cycle after a silent firmware hang (TCG under load) inflates it.
        "downtime_includes_power_cycle": watch.power_cycles > 0,
        "booted_version_after": version,
    }


if __name__ == "__main__":
    sys.exit(main())
