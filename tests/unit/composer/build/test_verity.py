"""The root image's verity tree: made by the real veritysetup, checked by hostd's own
reader (hostd/formats/verity.py), which must agree with it bit for bit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from composer.build.verity import append_hash_tree, salt_for
from composer.core.errors import KeelError
from hostd.formats import verity
from tests.unit.conftest import flip


def superblock_of(path: Path, data_blocks: int) -> verity.Superblock:
    with path.open("rb") as handle:
        handle.seek(data_blocks * verity.BLOCK)
        return verity.parse_superblock(handle.read(verity.SUPERBLOCK))


def image(tmp_path: Path, blocks: int, seed: int = 1, name: str = "root.erofs") -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(blocks * verity.BLOCK))
    return path


# One block; one full hash block; one more (two leaf blocks, a second level); and a
# third level (more than 128 * 128 data blocks).
@pytest.mark.parametrize("blocks", [1, 128, 129, 128 * 128 + 1])
def test_hostd_computes_the_same_tree_and_root_hash_as_veritysetup(
    tmp_path: Path, blocks: int
) -> None:
    path = image(tmp_path, blocks)
    made = append_hash_tree(path, "docker-host", "1.0.0")
    assert made.data_blocks == blocks
    superblock = superblock_of(path, blocks)
    assert superblock.salt.hex() == made.salt == salt_for("docker-host", "1.0.0")
    assert superblock.data_blocks == blocks
    assert path.stat().st_size == made.image_size  # the tree size hostd expects, exactly
    # hostd's own tree from the data gives veritysetup's root hash, and equals the tree
    # veritysetup stored, byte for byte (check raises otherwise).
    verity.check(path, made)
    stream = verity.StreamCheck(made)
    data = path.read_bytes()
    for start in range(0, len(data), 1000):  # chunks that cut blocks anywhere
        stream.feed(data[start : start + 1000])
    stream.finish()


def test_the_same_image_and_identity_give_the_same_bytes(tmp_path: Path) -> None:
    first = image(tmp_path, 300, name="a")
    second = image(tmp_path, 300, name="b")
    assert append_hash_tree(first, "img", "1.0") == append_hash_tree(second, "img", "1.0")
    assert first.read_bytes() == second.read_bytes()  # salt and UUID are not random
    other = image(tmp_path, 300, name="c")
    assert (
        append_hash_tree(other, "img", "1.1").root_hash
        != append_hash_tree(image(tmp_path, 300, name="d"), "img", "1.0").root_hash
    )
    assert superblock_of(other, 300).salt.hex() == salt_for("img", "1.1")
    assert superblock_of(other, 300).salt != superblock_of(first, 300).salt


def test_a_changed_data_byte_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path, 200)
    made = append_hash_tree(path, "img", "1.0")
    flip(path, 150 * verity.BLOCK + 7)
    with pytest.raises(verity.VerityError, match="root hash"):
        verity.check(path, made)


def test_a_changed_tree_byte_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path, 200)
    made = append_hash_tree(path, "img", "1.0")
    flip(path, (made.hash_start_block + 1) * verity.BLOCK + 40)  # a leaf hash block
    with pytest.raises(verity.VerityError, match="stored hash tree"):
        verity.check(path, made)


def test_another_root_hash_or_salt_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path, 10)
    made = append_hash_tree(path, "img", "1.0")
    with pytest.raises(verity.VerityError, match="not the signed"):
        verity.check(path, verity.Verity("00" * 32, made.salt, made.data_blocks))
    with pytest.raises(verity.VerityError, match="salt"):
        verity.check(path, verity.Verity(made.root_hash, "11" * 32, made.data_blocks))
    with pytest.raises(verity.VerityError, match=r"covers 10 data blocks, not 9|no verity"):
        verity.check(path, verity.Verity(made.root_hash, made.salt, 9))


def test_an_image_of_partial_blocks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "root.erofs"
    path.write_bytes(b"x" * (verity.BLOCK + 1))
    with pytest.raises(KeelError, match="whole 4096-byte blocks"):
        append_hash_tree(path, "img", "1.0")


def test_a_stream_that_ends_early_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path, 40)
    made = append_hash_tree(path, "img", "1.0")
    data = path.read_bytes()
    for cut in (10 * verity.BLOCK + 5, made.hash_offset + 100, len(data) - 1):
        stream = verity.StreamCheck(made)
        stream.feed(data[:cut])
        with pytest.raises(verity.VerityError):
            stream.finish()
