"""The chunk store of a repository: every 4 KiB block of every published version, stored
once, and the block index of each version that names them (hostd/formats/blockindex.py
has the format and the reasons for it; docs/updates.md the layout).

    chunks/ab/abcd….z    one block, zlib-compressed, named by the sha256 of its bytes

A chunk's name is its content, so a chunk already in the store is never written again,
whichever version put it there. Chunks are plain static files: the signed index
vouches for them, so they need no metadata of their own.

Chunks are written to a temporary name and renamed, without an fsync each (tens of
thousands of them would cost minutes); one os.sync() after the last makes them all
durable before any metadata that names them is signed. Until then a power cut can
leave a chunk under its name with its bytes lost, so a marker file (synced) stands in
the store while chunks are unsynced; a publish that finds it checks every chunk's
content against its name first, and deletes those that fail."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from composer.core.errors import KeelError
from composer.core.files import write_atomically
from composer.core.progress import Progress
from hostd.formats import blockindex
from hostd.formats import bundle as bundle_format
from hostd.formats.sizes import MIB

# Blocks are read, hashed and handed to the writers in pieces of this many bytes.
_PIECE = MIB
# Pieces waiting for a writer, per writer: enough to keep them busy, little memory.
_QUEUED_PER_WRITER = 4
# In chunks/ from before the first chunk of a publish is written until all are synced.
UNSYNCED_MARKER = ".unsynced"


@dataclass(frozen=True)
class Chunked:
    """One version cut into chunks: its index, and what that cost the store."""

    index: bytes
    blocks: int  # in the version's payload files, counting repeats
    new_chunks: int  # written now; the rest were in the store already
    bytes_written: int  # compressed bytes of the new chunks


class ChunkStore:
    """The chunks/ folder of a repository."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.folder = repo / blockindex.CHUNK_FOLDER

    def files(self) -> Iterator[Path]:
        """Every file in the store's two-hex-digit folders, chunk or leftover temporary."""
        if not self.folder.is_dir():
            return
        for entry in sorted(self.folder.iterdir()):
            if entry.is_dir():
                yield from sorted(p for p in entry.iterdir() if p.is_file())

    def digests(self) -> set[bytes]:
        """The sha256 of every chunk in the store, read from the file names (every
        publish lists the store: scandir, not a Path per file)."""
        found: set[bytes] = set()
        if not self.folder.is_dir():
            return found
        with os.scandir(self.folder) as folders:
            for folder in folders:
                if not folder.is_dir():
                    continue
                with os.scandir(folder.path) as names:
                    for entry in names:
                        digest = chunk_digest(entry.name)
                        if digest is not None:
                            found.add(digest)
        return found

    @contextmanager
    def writing(self, progress: Progress) -> Iterator[None]:
        """Write chunks in the block; when it ends without error they are synced. A
        store left unsynced by an earlier publish is repaired first."""
        marker = self.folder / UNSYNCED_MARKER
        if marker.exists():
            progress.say("    a publish stopped before its chunks were synced: checking them all")
            removed = self.repair()
            progress.say(f"    {removed} damaged chunks removed")
        # All 256 folders up front, not one mkdir check per chunk.
        for number in range(256):
            (self.folder / f"{number:02x}").mkdir(parents=True, exist_ok=True)
        write_atomically(marker, b"")
        yield
        # Every chunk on disk before the metadata that will name them is signed.
        os.sync()
        marker.unlink()

    def repair(self) -> int:
        """Delete every file of the store that is not a chunk holding the block its name
        says (and temporaries); how many."""
        removed = 0
        for path in self.files():
            digest = chunk_digest(path.name)
            if digest is None or not _holds(path, digest):
                path.unlink()
                removed += 1
        return removed

    def write(self, blocks: list[tuple[bytes, bytes]]) -> int:
        """Write these (digest, block) pairs as chunks; the compressed bytes written.
        Runs in a writer thread: zlib and the file calls let the others go on."""
        written = 0
        for digest, block in blocks:
            data = blockindex.compress_chunk(block)
            final = os.path.join(self.repo, blockindex.chunk_path(digest))
            temporary = f"{os.path.dirname(final)}/.{os.path.basename(final)}.{os.getpid()}"
            # os.open, not open(): half the time per chunk, and there are tens of thousands.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(f"{temporary}: short write (disk full?)")
            finally:
                os.close(fd)
            os.replace(temporary, final)
            written += len(data)
        return written


def _holds(path: Path, digest: bytes) -> bool:
    """Whether the chunk file inflates to a block (4 KiB or a short last one) whose
    sha256 is digest."""
    data = path.read_bytes()
    if len(data) > blockindex.MAX_CHUNK:
        return False
    inflater = zlib.decompressobj()
    try:
        block = inflater.decompress(data, blockindex.BLOCK + 1)
    except zlib.error:
        return False
    whole = inflater.eof and not inflater.unconsumed_tail and not inflater.unused_data
    return whole and len(block) <= blockindex.BLOCK and hashlib.sha256(block).digest() == digest


def chunk_digest(name: str) -> bytes | None:
    """The sha256 a chunk file's name gives, or None for a name that is no chunk's."""
    stem, suffix = name[: -len(blockindex.CHUNK_SUFFIX)], name[-len(blockindex.CHUNK_SUFFIX) :]
    if suffix != blockindex.CHUNK_SUFFIX or len(stem) != 2 * blockindex.DIGEST:
        return None
    try:
        digest = bytes.fromhex(stem)
    except ValueError:
        return None
    return digest if digest.hex() == stem else None  # lower case only, as chunk_path writes


class _Writers:
    """Compresses and writes new chunks on a few threads while the caller reads and
    hashes; remembers every digest seen, so a block repeated anywhere is written once."""

    def __init__(self, store: ChunkStore, stored: set[bytes]) -> None:
        self.store = store
        self.seen = set(stored)
        self.new_chunks = 0
        self.bytes_written = 0
        workers = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keel-chunks")
        self._limit = workers * _QUEUED_PER_WRITER
        self._pending: list[Future[int]] = []

    def add(self, piece: bytes, size: int) -> list[bytes]:
        """Hash the blocks of piece (size bytes, whole blocks but the file's last); queue
        the new ones for writing. The digests, in order."""
        digests = []
        fresh = []
        for start in range(0, size, blockindex.BLOCK):
            block = piece[start : start + blockindex.BLOCK]
            digest = hashlib.sha256(block).digest()
            digests.append(digest)
            if digest not in self.seen:
                self.seen.add(digest)
                fresh.append((digest, block))
        if fresh:
            self.new_chunks += len(fresh)
            self._pending.append(self._pool.submit(self.store.write, fresh))
            while len(self._pending) > self._limit:
                self.bytes_written += self._pending.pop(0).result()
        return digests

    def finish(self) -> None:
        """Wait for every chunk; the first writer's error, if any, is raised here."""
        try:
            for future in self._pending:
                self.bytes_written += future.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)


def _hash_file(
    stream: IO[bytes], size: int, writers: _Writers, label: str, progress: Progress
) -> list[bytes]:
    """The block hashes of the first size bytes of stream, chunks written on the way."""
    shown = progress.transfer(label, size)
    digests: list[bytes] = []
    done = 0
    while done < size:
        want = min(_PIECE, size - done)
        piece = stream.read(want)
        if len(piece) != want:
            raise KeelError(f"{label}: the data ended {size - done - len(piece)} bytes early")
        digests += writers.add(piece, want)
        done += want
        shown.update(done)
    shown.finish(done)
    return digests


@contextmanager
def _decompressed(packed: IO[bytes], member: str) -> Iterator[IO[bytes]]:
    """packed, a zstd member of the bundle, decompressed by `zstd -dc` as it is read.
    A thread feeds the member to zstd, so it never lands on disk whole."""
    unzstd = subprocess.Popen(
        ["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert unzstd.stdin is not None and unzstd.stdout is not None and unzstd.stderr is not None
    sink = unzstd.stdin

    def feed() -> None:
        # A reader that stops early kills zstd; the broken pipe that follows is expected.
        with contextlib.suppress(BrokenPipeError):
            try:
                shutil.copyfileobj(packed, sink, MIB)
            finally:
                sink.close()

    feeder = threading.Thread(target=feed, name="keel-unzstd-feed", daemon=True)
    feeder.start()
    try:
        yield unzstd.stdout
    except BaseException:
        unzstd.kill()
        raise
    finally:
        # Closed first: a zstd with more to say than was read stops, and so does the feeder.
        unzstd.stdout.close()
        feeder.join()
        errors = unzstd.stderr.read().decode(errors="replace").strip()
        unzstd.stderr.close()
        unzstd.wait()
    if unzstd.returncode != 0:
        raise KeelError(f"{member}: zstd could not decompress it: {errors or unzstd.returncode}")


def _manifest(bundle_path: Path) -> bytes:
    """bundle.json's bytes exactly as the bundle holds them (the index repeats them)."""
    with tarfile.open(bundle_path, mode="r:") as tar:
        member = tar.extractfile(bundle_format.MANIFEST_MEMBER)
        if member is None:
            raise KeelError(f"{bundle_path}: bundle.json is not a regular file")
        return member.read()


def chunk_bundle(bundle_path: Path, repo: Path, progress: Progress) -> Chunked:
    """Cut a verified bundle's payload files (the root image decompressed, and the
    kernel image) into blocks, store every block the store lacks, sync, and return the
    index. The same bundle always gives the same index bytes."""
    store = ChunkStore(repo)
    hashes: dict[str, list[bytes]] = {}
    with store.writing(progress):
        writers = _Writers(store, store.digests())
        try:
            with bundle_format.Bundle(bundle_path) as opened:
                for role in bundle_format.PARTS:
                    part: bundle_format.Part = getattr(opened.info, role)
                    member = opened.open_member(part)
                    label = f"chunking {part.member}"
                    if part.compression == "zstd":
                        with _decompressed(member, part.member) as stream:
                            hashes[role] = _hash_file(stream, part.size, writers, label, progress)
                    else:
                        hashes[role] = _hash_file(member, part.size, writers, label, progress)
        except bundle_format.BundleError as error:
            raise KeelError(f"{bundle_path}: {error}") from None
        finally:
            writers.finish()
    return Chunked(
        index=blockindex.encode(_manifest(bundle_path), hashes),
        blocks=sum(len(digests) for digests in hashes.values()),
        new_chunks=writers.new_chunks,
        bytes_written=writers.bytes_written,
    )


def missing(index: blockindex.BlockIndex, stored: set[bytes]) -> int:
    """How many distinct chunks the index names that the store lacks."""
    return len({d for f in index.files for d in f.hashes} - stored)
