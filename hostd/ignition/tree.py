"""Writing into a root directory (/ on a host, a temporary folder in tests), logging
each change and leaving what is already as asked untouched (so a second run is a
no-op)."""

from __future__ import annotations

import os
from pathlib import Path


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log: list[str] = []

    def host_path(self, path: str) -> Path:
        """Where an absolute guest path lives under the root."""
        return self.root / path.lstrip("/")

    def note(self, message: str) -> None:
        self.log.append(message)

    def make_parents(self, path: Path) -> None:
        # Like Ignition: missing parents are made root-owned 0755.
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir(mode=0o755)
            folder.chmod(0o755)

    def write_file(self, path: str, data: bytes, mode: int) -> bool:
        """Atomically make path hold data with mode; False if it already did."""
        target = self.host_path(path)
        if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
            if target.stat().st_mode & 0o7777 != mode:
                target.chmod(mode)
                self.note(f"set mode {mode:04o} on {path}")
                return True
            self.note(f"unchanged: {path}")
            return False
        self.make_parents(target)
        partial = target.with_name(target.name + ".keel-partial")
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.chmod(mode)
        partial.replace(target)
        self.note(f"wrote {path} ({len(data)} bytes, mode {mode:04o})")
        return True

    def symlink(self, path: str, target: str) -> bool:
        link = self.host_path(path)
        if link.is_symlink() and os.readlink(link) == target:
            self.note(f"unchanged: {path} -> {target}")
            return False
        self.make_parents(link)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
        self.note(f"linked {path} -> {target}")
        return True
