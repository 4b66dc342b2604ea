"""hostd's reader of the verity superblock refuses what Keel's builds never write."""

from __future__ import annotations

import pytest

from hostd.formats import verity


def superblock(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "signature": verity.SIGNATURE, "version": 1, "hash_type": 1, "uuid": bytes(range(16)),
        "algorithm": b"sha256", "data_bs": 4096, "hash_bs": 4096, "blocks": 300,
        "salt_size": 32, "pad": b"", "salt": b"\x07" * 32, "tail": b"",
    }  # fmt: skip
    fields.update(changes)
    return verity._LAYOUT.pack(*fields.values())


def test_a_good_superblock_reads_back() -> None:
    parsed = verity.parse_superblock(superblock())
    assert parsed == verity.Superblock("00010203-0405-0607-0809-0A0B0C0D0E0F", 300, b"\x07" * 32)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"signature": b"verity\0\1"}, "no verity superblock"),
        ({"version": 0}, "version 0"),
        ({"algorithm": b"sha1"}, "'sha1'"),
        ({"data_bs": 512}, "512/4096"),
        ({"salt_size": 0}, "salt of 0"),
        ({"salt_size": 300}, "salt of 300"),
        ({"blocks": 0}, "0 data blocks"),
    ],
)
def test_a_superblock_keel_never_writes_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(verity.VerityError, match=message):
        verity.parse_superblock(superblock(**changes))


def test_a_short_superblock_is_refused() -> None:
    with pytest.raises(verity.VerityError, match="cut short"):
        verity.parse_superblock(superblock()[:100])


@pytest.mark.parametrize(
    ("data_blocks", "tree"),
    [(1, 0), (2, 1), (128, 1), (129, 3), (128 * 128, 129), (128 * 128 + 1, 132)],
)
def test_tree_size(data_blocks: int, tree: int) -> None:
    assert verity.tree_blocks(data_blocks) == tree
