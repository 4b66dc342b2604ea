"""A host for the updater tests, on files: a real TUF repository (keel keygen +
publish), slots as plain files, the ESP as a folder (the `host` fixture is in
conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from composer.build import bundle
from composer.publish import keys, repository
from hostd.formats import bootentry
from hostd.policy import Policy
from hostd.updater import HostPaths, Updater

SLOT_SIZE = 4 * 1024 * 1024
# What the test host's var looks like to `keelctl status` (hostd/growvar.py's summary).
VAR_SIZES = {
    "filesystem": 19 * 1024**3,
    "available": 18 * 1024**3,
    "partition": 19 * 1024**3,
    "disk": 20 * 1024**3,
    "device": "vda4",
}
T = TypeVar("T")


def make_bundle(
    work: Path,
    version: str,
    *,
    name: str = "docker-host",
    root_size: int = 65536,
    verity: Callable[[Path], str] | None = None,
    uki: bytes | None = None,
    root: bytes | None = None,
) -> Path:
    """verity: given the root image file, append a tree to it and return the kernel
    argument that names it (what the build does with boot.verity)."""
    payload = work / f"payload-{version}"
    payload.mkdir(parents=True)
    root_file = payload / "root.erofs"
    root_file.write_bytes(root if root is not None else os.urandom(root_size))
    cmdline = ["console=ttyS0", "panic=10"]
    if verity is not None:
        cmdline.append(verity(root_file))
    files = {
        "root": ("root.erofs", root_file.read_bytes()),
        "uki": ("keel.efi", uki or f"unified kernel image {version}".encode()),
    }
    records = {}
    for role, (filename, data) in files.items():
        (payload / filename).write_bytes(data)
        records[role] = {
            "file": filename,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    (payload / "payload.json").write_text(json.dumps({
        "format": 1, "name": name, "version": version, "architecture": "x86-64",
        "kernel_version": "6.1.0-test", "cmdline": cmdline, "files": records,
    }))  # fmt: skip
    return bundle.write_bundle(payload, work / f"bundle-{version}")


@dataclass
class Host:
    root: Path
    updater: Updater
    repo: Path
    keys: Path
    reboots: list[str]

    def slot_digest(self, slot: str) -> str:
        return hashlib.sha256((self.root / f"dev/root-{slot}").read_bytes()).hexdigest()

    def publish(self, version: str, **kwargs: object) -> Path:
        path = make_bundle(self.root / "work", version, **kwargs)  # type: ignore[arg-type]
        repository.publish(self.repo, path, self.keys)
        return path


def make_host(tmp_path: Path) -> Host:
    """A host booted from slot a with 1.0.0, and an empty repository it trusts."""
    keys.generate_keys(tmp_path / "keys")
    dev = tmp_path / "dev"
    dev.mkdir()
    for slot in "ab":
        (dev / f"root-{slot}").write_bytes(b"\0" * SLOT_SIZE)
    esp = tmp_path / "esp"
    bootentry_a = bootentry.BootEntry("docker-host", "1.0.0", "a", ("console=ttyS0",))
    (esp / "loader/entries").mkdir(parents=True)
    (esp / "loader/entries/keel-1.0.0-a.conf").write_text(bootentry_a.render())
    (tmp_path / "release").write_text(
        "KEEL_IMAGE_NAME=docker-host\nKEEL_IMAGE_VERSION=1.0.0\nKEEL_ARCHITECTURE=x86-64\n"
    )
    repo = tmp_path / "repo"
    reboots: list[str] = []
    booted = {"slot": "a"}
    paths = HostPaths(
        state_dir=tmp_path / "state",
        esp=esp,
        partlabels=dev,
        release=tmp_path / "release",
        trust_root=tmp_path / "keys/root.json",
        tuf_cache=tmp_path / "state/tuf",
        kernel_arguments=tmp_path / "kernel-arguments.json",
        booted_slot=lambda: booted["slot"],
        reboot=lambda: reboots.append("reboot"),
        # The full bundle: most tests here are about its download and write;
        # test_update_delta.py turns deltas on.
        policy=lambda: Policy(repository=f"file://{repo}", delta=False),
        var_sizes=lambda: dict(VAR_SIZES),
        root_verity=lambda: "verified",
        secure_boot=lambda: False,
    )
    return Host(tmp_path, Updater(paths), repo, tmp_path / "keys", reboots)


def boot(host: Host, slot: str, version: str) -> None:
    """What a reboot changes for hostd: the booted slot and /usr/lib/keel/release."""
    host.updater.paths.booted_slot = lambda: slot
    (host.root / "release").write_text(
        f"KEEL_IMAGE_NAME=docker-host\nKEEL_IMAGE_VERSION={version}\nKEEL_ARCHITECTURE=x86-64\n"
    )
    host.updater = Updater(host.updater.paths)


def entries(host: Host) -> list[str]:
    return sorted(p.name for p in (host.root / "esp/loader/entries").iterdir())


def bounded(call: Callable[[], T], seconds: float) -> T:
    """call() in a thread, failing the test if it has not returned within seconds: a
    hang fails one test instead of hanging the suite (the thread is left behind)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s (hung)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def leftovers(host: Host) -> list[str]:
    """Files under the state dir besides the state, the history and ngclient's cache:
    bundles, whole or partial, that nothing uses any more."""
    state_dir = host.root / "state"
    kept = {"state.json", "history.jsonl", "health.json"}
    return sorted(
        str(path.relative_to(state_dir))
        for path in state_dir.rglob("*")
        if not path.is_dir() and path.name not in kept and "tuf" not in path.parts
    )


def lock_is_free(updater: Updater) -> bool:
    """Whether another thread can take the update lock (status, rollback, scheduler)."""

    def take() -> bool:
        if not updater.lock.acquire(timeout=1):
            return False
        updater.lock.release()
        return True

    return bounded(take, 5)
