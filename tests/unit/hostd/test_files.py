"""hostd's one way to replace a file: the old content or the new, never a mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostd.files import replacing, write_atomically


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
