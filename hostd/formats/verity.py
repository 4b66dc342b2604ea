"""The dm-verity on-disk format Keel uses, read and checked with the standard library:
the build appends it to the root image with `veritysetup format`, hostd checks a
written slot against it before the slot may boot, and the kernel verifies every block
it reads against the same tree.

Layout of a root image with its tree (kernel Documentation/admin-guide/device-mapper/
verity.rst, cryptsetup's format 1): the erofs data in 4 KiB blocks; at hash_offset
(the data's size) a 512-byte superblock, padded to one hash block; then the hash tree,
its top level first. Every hash is sha256(salt + block); a level is the hashes of the
level below, 128 to a 4 KiB block, the last block zero-padded; the root hash is the
hash of the top level's single block."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

BLOCK = 4096  # data and hash blocks alike
DIGEST = 32  # sha256
HASHES_PER_BLOCK = BLOCK // DIGEST
SIGNATURE = b"verity\0\0"
SUPERBLOCK = 512
# signature, version, hash type, uuid, algorithm, data and hash block sizes, data
# blocks, salt size, padding, salt (up to 256 bytes), padding: 512 bytes, little-endian.
_LAYOUT = struct.Struct("<8sII16s32sIIQH6s256s168s")
_READ = 1024 * 1024
# On the kernel command line: keel.verity=ROOTHASH:DATABLOCKS:SALT (the initrd's
# scripts/local-top/keel-verity reads the first one).
KERNEL_ARGUMENT = "keel.verity="


class VerityError(Exception):
    """The image's verity data is malformed or does not match: never boot it."""


@dataclass(frozen=True)
class Superblock:
    uuid: str
    data_blocks: int
    salt: bytes


@dataclass(frozen=True)
class Verity:
    """What the kernel needs to open the image: the root hash and where the tree is."""

    root_hash: str  # hex
    salt: str  # hex
    data_blocks: int

    def kernel_argument(self) -> str:
        return f"{KERNEL_ARGUMENT}{self.root_hash}:{self.data_blocks}:{self.salt}"

    @property
    def hash_offset(self) -> int:
        """Where the superblock begins: right after the data."""
        return self.data_blocks * BLOCK

    @property
    def hash_start_block(self) -> int:
        """The tree's first (top-level) block, in hash blocks from the start: dm-verity's
        <hash_start_block>, one past the superblock's block."""
        return self.data_blocks + 1

    @property
    def image_size(self) -> int:
        """The bytes of data, superblock block and tree: what a slot holds."""
        return (self.hash_start_block + tree_blocks(self.data_blocks)) * BLOCK


def from_cmdline(words: tuple[str, ...] | list[str]) -> Verity | None:
    """The first keel.verity= of a command line, as the initrd takes it; None if none."""
    for word in words:
        if word.startswith(KERNEL_ARGUMENT):
            fields = word[len(KERNEL_ARGUMENT) :].split(":")
            root_hash, blocks, salt = fields if len(fields) == 3 else ("", "", "")
            if not (
                _is_hex(root_hash, 64)
                and blocks.isdigit()
                and int(blocks) > 0
                and _is_hex(salt, 64)
            ):
                raise VerityError(f"malformed {word!r}: want keel.verity=ROOTHASH:BLOCKS:SALT")
            return Verity(root_hash, salt, int(blocks))
    return None


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def parse_superblock(raw: bytes) -> Superblock:
    if len(raw) < SUPERBLOCK:
        raise VerityError(f"the verity superblock is cut short ({len(raw)} of 512 bytes)")
    fields = _LAYOUT.unpack(raw[:SUPERBLOCK])
    signature, version, hash_type, uuid, algorithm, data_bs, hash_bs, blocks, salt_size = fields[:9]
    salt = fields[10]
    if signature != SIGNATURE:
        raise VerityError("no verity superblock where the tree should begin")
    if (version, hash_type) != (1, 1):
        raise VerityError(f"verity superblock version {version}, hash type {hash_type}: not 1, 1")
    name = algorithm.rstrip(b"\0").decode(errors="replace")
    if name != "sha256" or (data_bs, hash_bs) != (BLOCK, BLOCK):
        raise VerityError(
            f"verity with {name!r} and blocks of {data_bs}/{hash_bs} bytes: "
            "Keel uses sha256 and 4096"
        )
    if not 0 < salt_size <= len(salt) or blocks <= 0:
        raise VerityError(f"verity superblock with {blocks} data blocks, salt of {salt_size}")
    return Superblock(str(UUID(bytes=uuid)).upper(), blocks, salt[:salt_size])


def tree_blocks(data_blocks: int) -> int:
    """Hash blocks of the tree (the superblock's block not counted). A single data
    block needs none: its own hash is the root hash."""
    total, level = 0, data_blocks
    while level > 1:
        level = -(-level // HASHES_PER_BLOCK)
        total += level
    return total


def tree_from_leaves(leaves: list[bytes], salt: bytes) -> tuple[bytes, str]:
    """The tree as stored (top level first) and the root hash (hex), from the salted
    hashes of the data blocks. A single data block's own hash is the root."""
    if len(leaves) == 1:
        return b"", leaves[0].hex()
    levels: list[bytes] = []
    digests = leaves
    while True:
        blocks = [
            b"".join(digests[i : i + HASHES_PER_BLOCK]).ljust(BLOCK, b"\0")
            for i in range(0, len(digests), HASHES_PER_BLOCK)
        ]
        levels.append(b"".join(blocks))
        if len(blocks) == 1:
            root = hashlib.sha256(salt + blocks[0]).hexdigest()
            return b"".join(reversed(levels)), root
        digests = [hashlib.sha256(salt + block).digest() for block in blocks]


class StreamCheck:
    """check() in one pass over an image's bytes in order, as they are read: hostd
    feeds it the read-back of a written slot, which it reads anyway for the sha256.
    Keeps the data blocks' hashes (32 bytes per 4 KiB) and the tree's bytes only."""

    def __init__(self, expected: Verity) -> None:
        self.expected = expected
        self.salt = bytes.fromhex(expected.salt)
        self._data_left = expected.hash_offset
        self._partial = b""
        self._leaves: list[bytes] = []
        self._tail = bytearray()
        self._tail_size = expected.image_size - expected.hash_offset

    def feed(self, chunk: bytes) -> None:
        if self._data_left:
            data, chunk = chunk[: self._data_left], chunk[self._data_left :]
            self._data_left -= len(data)
            data = self._partial + data
            whole = len(data) - len(data) % BLOCK
            for start in range(0, whole, BLOCK):
                self._leaves.append(
                    hashlib.sha256(self.salt + data[start : start + BLOCK]).digest()
                )
            self._partial = data[whole:]
        if chunk and len(self._tail) < self._tail_size:
            self._tail += chunk[: self._tail_size - len(self._tail)]

    def finish(self) -> None:
        """Raise VerityError unless what was fed gives exactly the expected root hash."""
        if self._data_left or self._partial:
            raise VerityError("the image ends before its last data block")
        superblock = parse_superblock(bytes(self._tail[:SUPERBLOCK]))
        if superblock.data_blocks != self.expected.data_blocks:
            raise VerityError(
                f"the verity superblock covers {superblock.data_blocks} data blocks, "
                f"not {self.expected.data_blocks}"
            )
        if superblock.salt != self.salt:
            raise VerityError("the verity salt differs from the signed one")
        tree, root = tree_from_leaves(self._leaves, self.salt)
        if root != self.expected.root_hash:
            raise VerityError(
                f"the data's root hash is {root}, not the signed {self.expected.root_hash}"
            )
        if bytes(self._tail[BLOCK:]) != tree:
            raise VerityError("the stored hash tree does not match the data (a block differs)")


def check(path: Path, expected: Verity) -> None:
    """Raise VerityError unless path (a slot, or an image file) holds data, superblock
    and tree that give exactly expected's root hash. Reads all of it."""
    stream = StreamCheck(expected)
    end = expected.image_size
    with path.open("rb") as handle:
        while handle.tell() < end:
            chunk = handle.read(min(_READ, end - handle.tell()))
            if not chunk:
                break
            stream.feed(chunk)
    stream.finish()
