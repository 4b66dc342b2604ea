"""The block index of a version, and the chunks it names: what a delta update is made of
(composer/publish/chunkstore.py writes them, hostd/delta.py reads them).

A version's payload files (the root image and the unified kernel image) are cut into
fixed 4 KiB blocks, erofs's and dm-verity's block size, so a block a host already holds
is found by its content wherever it lies, in either slot or on the ESP. Each block is
stored once in the repository as a chunk: zlib-compressed, named by the sha256 of its
uncompressed bytes, so identical blocks of every version share one file.

The index is a TUF target, signed like the bundle; a chunk is verified against the
sha256 the signed index gives before hostd writes a byte of it. Layout:

    b"KEELIDX1"  u32 LE header length  header (UTF-8 JSON)
    then, for each file of PARTS in order, one 32-byte sha256 per block

The header holds the bundle's own manifest (bundle.json), so a delta needs nothing of
the bundle. The last block of a file may be short; it is hashed as it is.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from hostd.formats.bundle import PARTS, BundleError, BundleInfo, parse_manifest
from hostd.formats.sizes import MIB

MAGIC = b"KEELIDX1"
FORMAT = 1
BLOCK = 4096
DIGEST = 32
COMPRESSION = "zlib"
# Where chunks live, from the repository's base URL.
CHUNK_FOLDER = "chunks"
CHUNK_SUFFIX = ".z"
# A 4 GiB root would need 32 MiB of hashes; nothing sane is bigger.
MAX_INDEX = 64 * MIB
MAX_HEADER = MIB
# zlib never makes 4 KiB more than a few dozen bytes bigger; a chunk beyond this is
# not one (read no more of it).
MAX_CHUNK = BLOCK + 64
_LENGTH = struct.Struct("<I")


class BlockIndexError(Exception):
    """An index or a chunk that is malformed or does not match; the message says why."""


@dataclass(frozen=True)
class FileBlocks:
    """One payload file: its role (root, uki), size, sha256 and block hashes."""

    role: str
    size: int
    sha256: str
    hashes: tuple[bytes, ...]

    def block_size(self, number: int) -> int:
        """The bytes of block number (the last may be short)."""
        return min(BLOCK, self.size - number * BLOCK)


@dataclass(frozen=True)
class BlockIndex:
    info: BundleInfo
    manifest: bytes
    files: tuple[FileBlocks, ...]

    def file(self, role: str) -> FileBlocks:
        return next(f for f in self.files if f.role == role)


def block_count(size: int) -> int:
    return -(-size // BLOCK)


def block_hashes(stream: BinaryIO, size: int) -> Iterator[bytes]:
    """The sha256 of each block of the first size bytes of stream; raises BlockIndexError if
    the stream ends early."""
    remaining = size
    while remaining:
        block = stream.read(min(BLOCK, remaining))
        if len(block) != min(BLOCK, remaining):
            raise BlockIndexError(f"the file ended {remaining} bytes before its size")
        remaining -= len(block)
        yield hashlib.sha256(block).digest()


def encode(manifest: bytes, files: dict[str, list[bytes]]) -> bytes:
    """The index of a bundle whose manifest is bundle.json's bytes; files: role -> the
    block hashes, for every role of PARTS."""
    info = parse_manifest(manifest)
    header = {
        "format": FORMAT,
        "block": BLOCK,
        "compression": COMPRESSION,
        "bundle": json.loads(manifest),
    }
    body = bytearray()
    for role in PARTS:
        part = getattr(info, role)
        hashes = files[role]
        if len(hashes) != block_count(part.size):
            raise BlockIndexError(f"{role}: {len(hashes)} block hashes for {part.size} bytes")
        for digest in hashes:
            body += digest
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + _LENGTH.pack(len(encoded)) + encoded + bytes(body)


def decode(raw: bytes) -> BlockIndex:
    """The index in raw, or BlockIndexError naming what is wrong with it."""
    if len(raw) > MAX_INDEX:
        raise BlockIndexError(f"the index is {len(raw)} bytes, more than {MAX_INDEX}")
    if raw[: len(MAGIC)] != MAGIC or len(raw) < len(MAGIC) + _LENGTH.size:
        raise BlockIndexError("not a Keel block index (bad magic)")
    (length,) = _LENGTH.unpack_from(raw, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    if length > MAX_HEADER or start + length > len(raw):
        raise BlockIndexError(f"the index header claims {length} bytes")
    try:
        header = json.loads(raw[start : start + length])
    except (UnicodeDecodeError, ValueError) as error:
        raise BlockIndexError(f"the index header is not JSON: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise BlockIndexError(f"index format {found!r} is not {FORMAT}")
    if header.get("block") != BLOCK or header.get("compression") != COMPRESSION:
        raise BlockIndexError("the index uses another block size or compression")
    manifest = json.dumps(header.get("bundle"), sort_keys=True).encode()
    try:
        info = parse_manifest(manifest)
    except BundleError as error:
        raise BlockIndexError(f"the index's manifest: {error}") from None
    offset = start + length
    files = []
    for role in PARTS:
        part = getattr(info, role)
        count = block_count(part.size)
        end = offset + count * DIGEST
        if end > len(raw):
            raise BlockIndexError(f"the index ends inside {role}'s {count} block hashes")
        hashes = tuple(raw[i : i + DIGEST] for i in range(offset, end, DIGEST))
        files.append(FileBlocks(role, part.size, part.sha256, hashes))
        offset = end
    if offset != len(raw):
        raise BlockIndexError(f"{len(raw) - offset} bytes after the last block hash")
    return BlockIndex(info, manifest, tuple(files))


def chunk_path(digest: bytes) -> str:
    """A chunk's path from the repository's base: chunks/ab/abcd....z"""
    name = digest.hex()
    return f"{CHUNK_FOLDER}/{name[:2]}/{name}{CHUNK_SUFFIX}"


def compress_chunk(block: bytes) -> bytes:
    return zlib.compress(block, 9)


def decompress_chunk(data: bytes, digest: bytes, size: int) -> bytes:
    """The block a chunk holds, checked: at most size bytes are inflated (no zip bomb),
    and they must hash to digest. Raises BlockIndexError otherwise."""
    if len(data) > MAX_CHUNK:
        raise BlockIndexError(f"chunk {digest.hex()[:16]}… is {len(data)} bytes, too big")
    inflater = zlib.decompressobj()
    try:
        block = inflater.decompress(data, size + 1)
    except zlib.error as error:
        raise BlockIndexError(f"chunk {digest.hex()[:16]}… is not zlib data: {error}") from None
    if len(block) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise BlockIndexError(f"chunk {digest.hex()[:16]}… does not inflate to {size} bytes")
    if hashlib.sha256(block).digest() != digest:
        raise BlockIndexError(f"chunk {digest.hex()[:16]}… does not match its sha256 (tampered?)")
    return block
