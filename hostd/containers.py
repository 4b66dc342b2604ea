"""Load the container image archives baked into this OS version (docker save or OCI
tars under /usr/lib/keel/containers) into the engine: each archive once, remembered
by its SHA-256 in /var/lib/keel/containers-loaded/, so an A/B update that brings new
archives loads them on its first boot and an unchanged one loads nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from hostd.formats.sizes import MIB

ARCHIVES = Path("/usr/lib/keel/containers")
LOADED = Path("/var/lib/keel/containers-loaded")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def load_archives(archives: Path = ARCHIVES, loaded: Path = LOADED) -> int:
    """docker load every archive not loaded yet; returns the number of failures."""
    failures = 0
    loaded.mkdir(parents=True, exist_ok=True)
    for archive in sorted(archives.glob("*.tar")):
        stamp = loaded / sha256_file(archive)
        if stamp.exists():
            print(f"keel-containers: {archive.name} already loaded")
            continue
        result = subprocess.run(
            ["docker", "load", "--input", str(archive)], capture_output=True, text=True
        )
        if result.returncode != 0:
            print(f"keel-containers: loading {archive.name} failed: {result.stderr.strip()}")
            failures += 1
            continue
        print(f"keel-containers: {archive.name}: {result.stdout.strip()}")
        stamp.write_text(archive.name + "\n")
    return failures


if __name__ == "__main__":
    sys.exit(1 if load_archives() else 0)
