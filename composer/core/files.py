"""Files that appear whole or not at all: the one atomic-write helper of the build side.

The new content goes to a temporary file in the destination's folder, is flushed to
disk, and then takes the destination's name in one rename, so a reader (a TUF client,
`keel ps`, the next build) sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hostd.formats.sizes import MIB


@contextlib.contextmanager
def replacing(dest: Path, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """A file handle whose content replaces dest when the block ends without error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def write_atomically(dest: Path, data: bytes, *, mode: int = 0o644) -> None:
    with replacing(dest, mode=mode) as handle:
        handle.write(data)


def copy_atomically(source: Path, dest: Path, *, mode: int = 0o644) -> None:
    with replacing(dest, mode=mode) as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 4 * MIB)


def _fsync_dir(path: Path) -> None:
    """The rename itself must reach the disk too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
