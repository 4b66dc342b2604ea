"""Delta updates against full bundles, side by side in one run (issue 16): for three
kinds of change, the bytes a host downloads and how long `keelctl update` takes (TUF
refresh, download, slot write, read-back check, boot files), once by delta and once
with the full bundle, on the same booted host.

  (a) version only        docker-host 1.0.0 -> 1.0.1
  (b) one package added   1.0.0 -> 1.0.2 (jq and its two libraries)
  (c) kernel change       1.0.0 -> 1.0.3 with another kernel package (the cloud
                          flavour: the archive offers one kernel version, so a
                          flavour change stands in for a kernel update; it replaces
                          the kernel, the initrd and every module, which a point
                          release would also do)

Builds the four versions with one fresh key set (or takes them), boots 1.0.0 once, and
for each change publishes 1.0.0 and the new version to a fresh repository served on
loopback by a server that counts every byte it sends. Between runs the host forgets
the installed version (state, slot b zeroed, slot b's kernel image removed), so each
run starts from the same place: only slot a and the ESP's slot a kernel image to
reuse.

Usage: python bench/delta.py [--builds DIR] [--keys DIR] [--json]
  --builds  where the four builds go (kept, reused when present); default a temp dir"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from composer.core.paths import PROJECT_ROOT, vm_root
from composer.publish import repository
from composer.testing import KeelVM
from composer.testing.countingserver import counting
from composer.vm import runner

BASE = PROJECT_ROOT / "images" / "docker-host.yaml"
CHANGES = {
    "base": ("1.0.0", ""),
    "a_version_only": ("1.0.1", ""),
    "b_one_package": ("1.0.2", "packages:\n  - jq\n"),
    "c_kernel": ("1.0.3", "kernel:\n  package: linux-image-cloud-amd64\n"),
}
GOALS = {"a_version_only": 0.02, "b_one_package": 0.10}
MB = 1000 * 1000


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def keel(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "composer.cli", *args],
        check=True,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
    )


def build_all(builds: Path, keys: Path) -> dict[str, Path]:
    out = {}
    for change, (version, extra) in CHANGES.items():
        artifact = builds / change
        if not list(artifact.glob("bundle/*.keelbundle")):
            definition = builds / f"{change}.yaml"
            definition.write_text(f'extends: {BASE}\nversion: "{version}"\n{extra}')
            say(f"building {change} ({version})")
            keel("build", str(definition), "--out", str(artifact), "--keys", str(keys))
        out[change] = artifact
    return out


def reset(vm: KeelVM) -> None:
    """Forget any installed version: nothing of it is left to reuse."""
    vm.run(
        "systemctl stop keel-hostd && "
        "rm -rf /var/lib/keel/update/state.json /var/lib/keel/update/tuf "
        "/var/lib/keel/update/delta && "
        "rm -f /efi/loader/entries/*-b.conf /efi/loader/entries/*-b+*.conf /efi/keel/b/* && "
        "dd if=/dev/zero of=/dev/disk/by-partlabel/root-b bs=4M count=100 conv=fsync "
        "status=none && systemctl start keel-hostd",
        check=True,
        timeout=600,
    )


def run_update(vm: KeelVM, url: str, delta: bool) -> dict[str, Any]:
    policy = json.dumps(
        {"repository": url, "reboot": "manual", "check_interval": "never", "delta": delta}
    )
    vm.run(f"echo '{policy}' > /etc/keel/update.json", check=True)
    began = time.monotonic()
    result = vm.run("keelctl update", timeout=3600)
    seconds = time.monotonic() - began
    if result.exit_status != 0:
        raise RuntimeError(f"keelctl update failed: {result.stdout}{result.stderr}")
    status = json.loads(vm.run("keelctl status --json", check=True).stdout)
    return {"seconds": round(seconds, 1), **status["last_transfer"]}


def measure(builds: dict[str, Path], keys: Path, work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    name = f"bench-delta-{secrets.token_hex(2)}"
    vm = KeelVM.start(
        runner.RunOptions(image=builds["base"], name=name, die_with_parent=True), vm_root()
    )
    try:
        vm.run("systemctl is-system-running --wait", timeout=300)
        vm.run("mkdir -p /etc/keel", check=True)
        for change in list(CHANGES)[1:]:
            repo = work / f"repo-{change}"
            say(f"publishing 1.0.0 and {change}")
            repository.publish(repo, builds["base"], keys)
            repository.publish(repo, builds[change], keys)
            with counting(repo) as (server, url):
                guest_url = url.replace("127.0.0.1", "10.0.2.2")
                row: dict[str, Any] = {}
                for mode in ("delta", "full"):
                    reset(vm)
                    server.reset()
                    say(f"{change}: update by {mode}")
                    row[mode] = run_update(vm, guest_url, delta=mode == "delta")
                    row[mode]["served_bytes"] = server.sent
                    row[mode]["requests"] = server.requests
                    row[mode]["connections"] = server.connections
                full = row["full"]["full"]
                row["delta_share"] = round(row["delta"]["served_bytes"] / full, 4)
                row["goal"] = GOALS.get(change)
                figures[change] = row
        reset(vm)
    finally:
        vm.stop()
        vm.kill()
        shutil.rmtree(vm.vm_dir.path, ignore_errors=True)
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(
        "| change | delta: downloaded | share of bundle | goal | delta apply "
        "| full bundle | full apply |"
    )
    print("|---|---|---|---|---|---|---|")
    for change, row in figures.items():
        delta, full = row["delta"], row["full"]
        goal = f"≤ {row['goal']:.0%}" if row["goal"] else "-"
        print(
            f"| {change} | {delta['served_bytes'] / MB:.1f} MB | {row['delta_share']:.2%} | {goal} "
            f"| {delta['seconds']} s | {full['served_bytes'] / MB:.1f} MB | {full['seconds']} s |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=Path)
    parser.add_argument("--keys", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-delta-") as scratch:
        work = Path(scratch)
        keys = args.keys or (args.builds / "keys" if args.builds else work / "keys")
        if not (keys / "root.json").exists():
            say("keygen")
            keel("keygen", "--out", str(keys), "--secure-boot")
        builds_dir = args.builds or work / "builds"
        builds_dir.mkdir(parents=True, exist_ok=True)
        builds = build_all(builds_dir.resolve(), keys)
        figures = measure(builds, keys, work)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
