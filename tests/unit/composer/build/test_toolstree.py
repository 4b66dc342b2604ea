"""The tools trees: their cache key, how their programs are run, and when they are
extracted."""

import re
from pathlib import Path
from typing import Any

import pytest

from composer.build import toolstree
from composer.core.errors import KeelError
from composer.core.progress import Progress


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_key_follows_recipe_suite_packages_and_mirror(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = toolstree.cache_key("")
    assert toolstree.cache_key("") == base
    assert toolstree.cache_key("", toolstree.BUILD_PACKAGES) == base  # the default
    assert toolstree.cache_key("http://127.0.0.1:9/debian") != base
    # The build's tree and the VMs' never share a folder, and any package change
    # makes a new tree.
    assert toolstree.cache_key("", toolstree.VM_PACKAGES) != base
    assert toolstree.cache_key("", (*toolstree.BUILD_PACKAGES, "zstd")) != base
    for name, value in (
        ("RECIPE_VERSION", toolstree.RECIPE_VERSION + 1),
        ("SUITE", "forky"),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(toolstree, name, value)
            assert toolstree.cache_key("") != base, name


def test_programs_run_through_the_trees_loader_and_libraries_only(tmp_path: Path) -> None:
    argv = toolstree.ToolsTree(tmp_path).command("mkfs.erofs")
    assert argv[0] == str(tmp_path / toolstree.LOADER)
    # The build machine's ld.so.cache would hand out its own (older) libraries.
    assert "--inhibit-cache" in argv
    libraries = argv[argv.index("--library-path") + 1].split(":")
    assert libraries and all(Path(d).is_relative_to(tmp_path) for d in libraries)
    assert argv[-3:] == ["--argv0", "mkfs.erofs", str(tmp_path / "usr/bin/mkfs.erofs")]


def fake_extract(calls: list[list[str]], *, with_loader: bool = True) -> Any:
    def run(cmd: list[str], env: dict[str, str], **_: object) -> None:
        calls.append(cmd)
        assert Path(env["TMPDIR"]).is_dir()  # mmdebstrap works in the build's scratch
        target = Path(next(a for a in cmd if ".partial-" in a))
        if with_loader:
            (target / toolstree.LOADER).parent.mkdir(parents=True)
            (target / toolstree.LOADER).write_bytes(b"\x7fELF")

    return run


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The mmdebstrap commands run, each making a tree with its loader."""
    calls: list[list[str]] = []
    monkeypatch.setattr(toolstree.commands, "run", fake_extract(calls))
    return calls


def test_a_miss_extracts_once_and_a_hit_reuses_the_tree(
    cache: Path, extractions: list[list[str]]
) -> None:
    calls = extractions
    first = toolstree.tools_tree(Progress(quiet=True), cache)
    assert first.root == cache / "tools" / toolstree.cache_key("")
    assert (first.root / toolstree.LOADER).exists()
    assert len(calls) == 1
    assert "--variant=extract" in calls[0] and "--include=erofs-utils" in calls[0]
    assert calls[0][-2] == toolstree.SUITE and ".partial-" in calls[0][-1]
    assert toolstree.tools_tree(Progress(quiet=True), cache) == first
    assert len(calls) == 1
    assert [p.name for p in first.root.parent.iterdir()] == [first.root.name]


def test_the_vms_tree_is_its_own_beside_the_builds(
    cache: Path, extractions: list[list[str]]
) -> None:
    calls = extractions
    build = toolstree.tools_tree(Progress(quiet=True), cache)
    vms = toolstree.tools_tree(Progress(quiet=True), cache, packages=toolstree.VM_PACKAGES)
    assert vms.root == cache / "tools" / toolstree.cache_key("", toolstree.VM_PACKAGES)
    assert vms.root != build.root
    assert "--include=qemu-system-x86,ovmf" in calls[1]
    assert vms.qemu_data == vms.root / "usr/share/qemu"


def test_a_mirror_is_passed_on_and_keys_its_own_tree(
    cache: Path, extractions: list[list[str]]
) -> None:
    calls = extractions
    mirror = "http://127.0.0.1:9/debian"
    tree = toolstree.tools_tree(Progress(quiet=True), cache, mirror)
    assert calls[0][-3] == toolstree.SUITE and calls[0][-1] == mirror
    assert tree.root.name == toolstree.cache_key(mirror)


def test_a_tree_without_the_loader_is_an_error_and_leaves_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(toolstree.commands, "run", fake_extract(calls, with_loader=False))
    with pytest.raises(KeelError, match=re.escape(f"has no {toolstree.LOADER}")):
        toolstree.tools_tree(Progress(quiet=True), cache)
    assert list((cache / "tools").iterdir()) == []


def test_a_failed_extraction_leaves_no_partial_tree(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(cmd: list[str], **_: object) -> None:
        Path(next(a for a in cmd if ".partial-" in a)).mkdir(parents=True)
        raise KeelError("mmdebstrap failed")

    monkeypatch.setattr(toolstree.commands, "run", fail)
    with pytest.raises(KeelError, match="mmdebstrap failed"):
        toolstree.tools_tree(Progress(quiet=True), cache)
    assert list((cache / "tools").iterdir()) == []
