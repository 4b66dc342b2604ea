"""The finalize step's split of the tree (composer/build/finalize.py): /var becomes the
var partition's seed, and the writable places of the image link into it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.build.finalize import FACTORY_VAR, _split_var


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A Debian-like tree: /usr/local's folders, an empty /opt, /root and /home."""
    root = tmp_path / "tree"
    for folder in ("var/lib/dpkg", "usr/bin", "usr/local/bin", "usr/local/share/man",
                   "opt", "root", "home"):  # fmt: skip
        (root / folder).mkdir(parents=True)
    (root / "usr/local/man").symlink_to("share/man")
    (root / "root/.profile").write_text("# root\n")
    return root


def test_usr_local_and_opt_link_into_var(tree: Path, tmp_path: Path) -> None:
    _split_var(tree, tmp_path / "seed")
    assert os.readlink(tree / "usr/local") == "../var/usrlocal"
    assert os.readlink(tree / "opt") == "var/opt"
    # Relative targets: the image resolves the same mounted anywhere (here, tmp_path).
    assert (tree / "usr/local").resolve() == tree / "var/usrlocal"
    assert (tree / "opt").resolve() == tree / "var/opt"


def test_usr_local_content_moves_to_the_seed_and_the_factory_copy(
    tree: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    _split_var(tree, seed)
    for var in (seed, tree / FACTORY_VAR):
        assert (var / "usrlocal/bin").is_dir()
        assert (var / "usrlocal/share/man").is_dir()
        assert os.readlink(var / "usrlocal/man") == "share/man"
        assert (var / "opt").is_dir()
    assert not (tree / "var/usrlocal").exists()  # the image's /var is an empty mount point
    assert list((tree / "var").iterdir()) == []


def test_a_tree_without_opt_still_gets_the_link(tree: Path, tmp_path: Path) -> None:
    (tree / "opt").rmdir()
    seed = tmp_path / "seed"
    _split_var(tree, seed)
    assert os.readlink(tree / "opt") == "var/opt"
    assert (seed / "opt").is_dir()


def test_root_and_home_still_link_into_var(tree: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    _split_var(tree, seed)
    assert os.readlink(tree / "root") == "var/roothome"
    assert os.readlink(tree / "home") == "var/home"
    assert (seed / "roothome/.profile").read_text() == "# root\n"


def test_the_factory_copy_is_the_whole_seed(tree: Path, tmp_path: Path) -> None:
    """keelctl install makes a fresh var from the factory copy: /root's skeleton, /home
    and /var/lib/keel must be in it as in the seed."""
    seed = tmp_path / "seed"
    _split_var(tree, seed)
    factory = tree / FACTORY_VAR

    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(factory) == listing(seed)
    assert (factory / "roothome/.profile").read_text() == "# root\n"
    assert (factory / "lib/keel").is_dir() and (factory / "home").is_dir()
