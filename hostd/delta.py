"""Delta updates: build the new version's files from the 4 KiB blocks this host already
holds, wherever they lie, and fetch only the rest (hostd/formats/blockindex.py).

Sources, each block re-hashed when read, so a source that changed since it was
scanned costs a fetch, never a wrong block:
  - the booted slot (read-only; it is never written);
  - the slot being written: a block already in its place is kept (so a retry after a
    power cut goes on where the last attempt stopped); one at another place is read
    into memory before anything is written (the stash), since writing may cover it;
  - the unified kernel images of both slots on the ESP.
A dm-verity hash tree is not fetched: it differs entirely between versions (its salt
is per version) and follows from the data, so it is computed here from the written
blocks. What ends up in the slot is then read back from the disk and checked against
the signed sha256 and root hash, as a full update's is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hostd.chunkfetch import ChunkFetcher, Wanted
from hostd.files import write_all
from hostd.formats import verity
from hostd.formats.blockindex import BLOCK, FileBlocks
from hostd.formats.sizes import MIB

log = logging.getLogger("keel.hostd")

# Blocks of the target slot needed at other places are kept in memory up to this much;
# beyond it they are fetched.
STASH_LIMIT = 64 * MIB
# Written blocks reach the disk at least this often, before the progress that counts
# them is saved: a retry after a power cut finds them in place.
SYNC_STEP = 32 * MIB
_EROFS_MAGIC = 0xE0F5E1E2
_EROFS_SUPERBLOCK = 1024


class DeltaError(Exception):
    """The delta could not be completed; the full bundle is the way."""


@dataclass
class Stats:
    """What a delta did, block by block, and what it downloaded."""

    blocks: int = 0
    in_place: int = 0
    copied: int = 0
    fetched: int = 0  # distinct chunks
    rebuilt: int = 0  # dm-verity tree blocks computed here
    downloaded: int = 0  # compressed bytes of the chunks

    def add(self, other: Stats) -> None:
        for name in ("blocks", "in_place", "copied", "fetched", "rebuilt", "downloaded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class LocalBlocks:
    """sha256 -> (file, offset) of the blocks this host holds in its sources."""

    where: dict[bytes, tuple[Path, int]] = field(default_factory=dict)

    def scan(self, path: Path, size: int) -> list[bytes]:
        """Hash each block of path's first size bytes, remember where each hash lies
        (first place wins), and return the hashes in order."""
        hashes = []
        with path.open("rb", buffering=0) as handle:
            offset = 0
            while offset < size:
                block = handle.read(min(BLOCK, size - offset))
                if not block:
                    break
                digest = hashlib.sha256(block).digest()
                self.where.setdefault(digest, (path, offset))
                hashes.append(digest)
                offset += len(block)
        return hashes


def image_extent(path: Path) -> int:
    """The bytes of the erofs image (and the dm-verity tree after it) that path holds
    from its start; 0 if there is no erofs image. Cheap: two superblocks."""
    try:
        with path.open("rb") as handle:
            head = handle.read(BLOCK)
            if len(head) < _EROFS_SUPERBLOCK + 0x28:
                return 0
            magic, _, _, bits = struct.unpack_from("<IIIB", head, _EROFS_SUPERBLOCK)
            (blocks,) = struct.unpack_from("<I", head, _EROFS_SUPERBLOCK + 0x24)
            if magic != _EROFS_MAGIC or not 9 <= bits <= 16:
                return 0
            size: int = blocks << bits
            handle.seek(size)
            try:
                superblock = verity.parse_superblock(handle.read(verity.SUPERBLOCK))
            except verity.VerityError:
                return size
            data: int = superblock.data_blocks
            return (data + 1 + verity.tree_blocks(data)) * BLOCK
    except OSError:
        return 0


@contextmanager
def _readers() -> Iterator[Callable[[Path], int]]:
    """Read-only descriptors of source files, opened once each."""
    fds: dict[Path, int] = {}

    def fd_of(path: Path) -> int:
        if path not in fds:
            fds[path] = os.open(path, os.O_RDONLY)
        return fds[path]

    try:
        yield fd_of
    finally:
        for fd in fds.values():
            os.close(fd)


def assemble(
    target: Path,
    blocks: FileBlocks,
    local: LocalBlocks,
    fetcher: ChunkFetcher,
    *,
    in_place: list[bytes] | None = None,
    computed_from: int | None = None,
    progress: Callable[[int], None] = lambda _: None,
) -> Stats:
    """Write blocks' file into target (an open-able file or device) from local blocks
    and fetched chunks. in_place: the hashes target holds now, by position (blocks that
    match are left as they are); computed_from: the first block that is not written
    here (a dm-verity tree, computed after). Every block written was hashed first."""
    stats = Stats(blocks=len(blocks.hashes))
    end = len(blocks.hashes) if computed_from is None else computed_from
    stats.rebuilt = len(blocks.hashes) - end
    wanted: dict[bytes, list[int]] = {}
    stash: dict[bytes, bytes] = {}
    stash_size = 0
    done = synced = 0
    with ExitStack() as stack:
        fd_of = stack.enter_context(_readers())
        out = os.open(target, os.O_WRONLY)
        stack.callback(os.close, out)

        def write(number: int, block: bytes) -> None:
            nonlocal done, synced
            os.pwrite(out, block, number * BLOCK)
            done += len(block)
            if done - synced >= SYNC_STEP:
                os.fdatasync(out)
                synced = done
            progress(done)

        todo: list[tuple[int, bytes]] = []
        for number in range(end):
            digest = blocks.hashes[number]
            if in_place is not None and number < len(in_place) and in_place[number] == digest:
                stats.in_place += 1
                done += blocks.block_size(number)
                continue
            todo.append((number, digest))
        # The stash first: nothing of target may be written before these are read.
        for number, digest in todo:
            source = local.where.get(digest)
            if source is None or source[0] != target or digest in stash:
                continue
            size = blocks.block_size(number)
            if stash_size + size <= STASH_LIMIT:
                block = _read_checked(fd_of(source[0]), source[1], size, digest)
                if block is not None:
                    stash[digest] = block
                    stash_size += size
        for number, digest in todo:
            size = blocks.block_size(number)
            block = stash.get(digest)
            source = local.where.get(digest)
            if block is None and source is not None and source[0] != target:
                block = _read_checked(fd_of(source[0]), source[1], size, digest)
            if block is None:
                wanted.setdefault(digest, []).append(number)
                continue
            write(number, block)
            stats.copied += 1
        before = fetcher.received

        def deliver(item: Wanted, block: bytes) -> None:
            for number in wanted[item.digest]:
                write(number, block)

        fetcher.fetch_all(
            [Wanted(digest, blocks.block_size(numbers[0])) for digest, numbers in wanted.items()],
            deliver,
        )
        stats.fetched = len(wanted)
        stats.downloaded = fetcher.received - before
        os.fsync(out)
    return stats


def _read_checked(fd: int, offset: int, size: int, digest: bytes) -> bytes | None:
    try:
        block = os.pread(fd, size, offset)
    except OSError as error:
        log.warning("delta: reading a local block failed (%s); it is fetched instead", error)
        return None
    if len(block) != size or hashlib.sha256(block).digest() != digest:
        return None
    return block


def write_verity_tree(device: Path, expected: verity.Verity) -> None:
    """Compute the hash tree of the data blocks device holds and write it after the
    superblock; raise DeltaError unless the data gives expected's root hash."""
    salt = bytes.fromhex(expected.salt)
    leaves = []
    fd = os.open(device, os.O_RDWR)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for start in range(0, expected.hash_offset, MIB):
            chunk = os.pread(fd, min(MIB, expected.hash_offset - start), start)
            if len(chunk) % BLOCK or not chunk:
                raise DeltaError(f"{device} ended inside its data blocks")
            for at in range(0, len(chunk), BLOCK):
                leaves.append(hashlib.sha256(salt + chunk[at : at + BLOCK]).digest())
        tree, root = verity.tree_from_leaves(leaves, salt)
        if root != expected.root_hash:
            raise DeltaError(f"the written data's root hash is {root}, not {expected.root_hash}")
        os.lseek(fd, expected.hash_start_block * BLOCK, os.SEEK_SET)
        write_all(fd, tree)
        os.fsync(fd)
    finally:
        os.close(fd)
