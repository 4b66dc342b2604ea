"""Where a build stages its tree: in memory when the machine has room, else on disk.

A warm rebuild unpacks about 0.55 GB of root tree, reads it once into the erofs image
and throws it away. On disk, that tree competed with the writeback of the previous
build's output: back to back, unpacking took 8-9 s instead of 0.4 s in memory, and
the whole rebuild 22.5 s instead of 12.7 s (issue 18). mmdebstrap makes its chroot
here too (dpkg syncs every file: 36 s in memory, 44-53 s on disk). The folder in /dev/shm is made
by mkdtemp (mode 0700, a name no other user can guess or plant in advance), and is
removed when the build ends, failed or not, unless --keep-work."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hostd.formats.sizes import GIB

SHARED_MEMORY = Path("/dev/shm")
# The tree, the ESP and var images of docker-host take under 1 GiB; ask for room to
# spare, so a bigger image or a second build at once never fills the machine's memory.
MIN_FREE_MEMORY = 4 * GIB


def room_in(folder: Path) -> int:
    """Free bytes in folder's filesystem; none when programs cannot run from it (noexec:
    mmdebstrap runs the packages' scripts in a chroot made in the scratch folder)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return 0
    if stat.f_flag & os.ST_NOEXEC:
        return 0
    return stat.f_bavail * stat.f_frsize


def make_work_folder(out: Path) -> Path:
    """A fresh, empty scratch folder for one build of out."""
    if room_in(SHARED_MEMORY) >= MIN_FREE_MEMORY:
        return Path(tempfile.mkdtemp(prefix="keel-build-", dir=SHARED_MEMORY))
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work
