"""Writing into a root directory (/ on a host, a temporary folder in tests) through
safefs (no link is ever followed), logging each change and leaving what is already
as asked untouched (so a second run is a no-op)."""

from __future__ import annotations

import stat
from pathlib import Path

from hostd.ignition.safefs import Root


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fs = Root(root)
        self.log: list[str] = []

    def close(self) -> None:
        self.fs.close()

    def note(self, message: str) -> None:
        self.log.append(message)

    def write_file(self, path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> bool:
        """Atomically make path hold data with mode; False if it already did."""
        info = self.fs.lstat(path)
        if info is not None and stat.S_ISREG(info.st_mode) and self.fs.read(path) == data:
            owner_ok = uid in (-1, info.st_uid) and gid in (-1, info.st_gid)
            if stat.S_IMODE(info.st_mode) != mode or not owner_ok:
                if not owner_ok:
                    self.fs.chown(path, uid, gid)
                self.fs.chmod(path, mode)
                self.note(f"set mode {mode:04o} on {path}")
                return True
            self.note(f"unchanged: {path}")
            return False
        self.fs.write_file(path, data, mode, uid, gid)
        self.note(f"wrote {path} ({len(data)} bytes, mode {mode:04o})")
        return True

    def symlink(self, path: str, target: str) -> bool:
        if self.fs.readlink(path) == target:
            self.note(f"unchanged: {path} -> {target}")
            return False
        self.fs.symlink(path, target)
        self.note(f"linked {path} -> {target}")
        return True
