"""hostd's one way to replace a file: the old content or the new, never a mix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostd.files import (
    UnsafeFile,
    fresh_private_folder,
    open_untrusted,
    replacing,
    write_atomically,
)


def test_write_atomically_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep/folder/state.json"
    write_atomically(target, b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failure_while_streaming_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "vmlinuz"
    target.write_bytes(b"old kernel")
    with pytest.raises(ValueError), replacing(target) as handle:
        handle.write(b"half a new kern")
        raise ValueError("digest mismatch")
    assert target.read_bytes() == b"old kernel"
    assert [p.name for p in tmp_path.iterdir()] == ["vmlinuz"]


def test_the_temporary_file_is_hidden_and_not_a_loader_entry(tmp_path: Path) -> None:
    target = tmp_path / "keel-2.0.0-b+3.conf"
    with replacing(target) as handle:
        temporary = Path(handle.name)
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".") and not temporary.name.endswith(".conf")
    assert not temporary.exists() and target.exists()


def test_an_untrusted_file_is_read_only_if_regular_and_not_a_link(tmp_path: Path) -> None:
    data = tmp_path / "bundle"
    data.write_bytes(b"content")
    with open_untrusted(data) as handle:
        assert handle.read() == b"content"
    (tmp_path / "link").symlink_to(data)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        open_untrusted(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeFile, match="not a regular file"):
        open_untrusted(tmp_path / "fifo")  # returns at once: no writer is waited for
    with pytest.raises(UnsafeFile, match="not a regular file"):
        open_untrusted(tmp_path)


def test_a_private_folder_is_root_only_and_starts_empty(tmp_path: Path) -> None:
    folder = tmp_path / "state/staging"
    folder.mkdir(parents=True, mode=0o777)
    (folder / ".bundle.keelbundle.tmp").write_bytes(b"left by a power cut")
    (folder / "sub").mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"kept")
    (folder / "link").symlink_to(outside)
    assert fresh_private_folder(folder) == folder
    assert folder.stat().st_mode & 0o777 == 0o700
    assert list(folder.iterdir()) == []
    assert outside.read_bytes() == b"kept"  # a link goes, never what it points to


def test_a_private_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_bytes(b"x")
    (tmp_path / "staging").symlink_to(elsewhere)
    with pytest.raises(UnsafeFile, match="not a folder of hostd's own"):
        fresh_private_folder(tmp_path / "staging")
    assert (elsewhere / "precious").exists()
