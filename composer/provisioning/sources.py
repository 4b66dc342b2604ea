"""Contents for Ignition: butane's data: URLs and its files directory.

make_data_url follows butane's base/util/url.go: of percent-encoding (the dataurl
package's unreserved set) and base64, the shorter wins; then gzip (best
compression) wins when its base64 plus len("gzip") is shorter still. Compression is
"" when butane chose none, so a child config never inherits a parent's. Python's
zlib is not Go's compress/flate, so gzipped bytes differ from butane's (both decode
to the same contents); for contents near the break-even size the choice could too."""

from __future__ import annotations

import base64
import gzip
import os
import stat
from pathlib import Path

_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()")


class LocalFileError(ValueError):
    pass


def escape(data: bytes) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in data)


def make_data_url(
    contents: bytes, compression: str | None, allow_compression: bool
) -> tuple[str, str | None]:
    """(data URL, compression to write or None to leave the user's value)."""
    chosen = None if compression else ""
    opaque = "," + escape(contents)
    b64 = ";base64," + base64.b64encode(contents).decode()
    if len(b64) < len(opaque):
        opaque = b64
    if not compression and allow_compression:
        packed = gzip.compress(contents, compresslevel=9, mtime=0)
        gz = ";base64," + base64.b64encode(packed).decode()
        if len(gz) + len("gzip") < len(opaque):
            opaque, chosen = gz, "gzip"
    return "data:" + opaque, chosen


def _inside(path: Path, files_dir: Path) -> Path:
    """The path lexically (as filepath.Join does), refused if it leaves files_dir."""
    base = Path(os.path.abspath(files_dir))
    # filepath.Join: an absolute local path is still inside the files directory
    target = Path(os.path.normpath(f"{base}/{path}"))
    if target != base and not target.is_relative_to(base):
        raise LocalFileError("local file path traverses outside the files directory")
    return target


def read_local(name: str, files_dir: Path | None) -> bytes:
    if files_dir is None:
        raise LocalFileError(
            "a local file needs a files directory (--files-dir DIR), local paths are relative to it"
        )
    target = _inside(Path(name), files_dir)
    try:
        return target.read_bytes()
    except OSError as error:
        raise LocalFileError(f"cannot read {target}: {error.strerror}") from None


def walk_tree(local: str, files_dir: Path | None) -> list[tuple[str, str, bytes | str, bool]]:
    """(kind 'file' or 'link', path relative to the tree, contents or link target,
    executable) for every file and symlink under the tree, in filepath.Walk's order."""
    if files_dir is None:
        raise LocalFileError(
            "a local file needs a files directory (--files-dir DIR), local paths are relative to it"
        )
    root = _inside(Path(local), files_dir)
    try:
        if not root.is_dir():
            raise LocalFileError("root of tree must be a directory")
    except OSError as error:
        raise LocalFileError(f"cannot read {root}: {error.strerror}") from None
    found: list[tuple[str, str, bytes | str, bool]] = []

    def walk(directory: Path, relative: str) -> None:
        for entry in sorted(os.listdir(directory)):  # filepath.Walk: lexical order
            path = directory / entry
            rel = f"{relative}/{entry}" if relative else entry
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                walk(path, rel)
            elif stat.S_ISREG(info.st_mode):
                found.append(("file", rel, path.read_bytes(), bool(info.st_mode & 0o111)))
            elif stat.S_ISLNK(info.st_mode):
                found.append(("link", rel, os.readlink(path), False))
            else:
                raise LocalFileError(
                    f"{rel}: trees may only contain files, directories, and symlinks"
                )

    try:
        walk(root, "")
    except OSError as error:
        raise LocalFileError(f"cannot read {error.filename}: {error.strerror}") from None
    return found
