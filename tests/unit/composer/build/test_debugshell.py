"""The debug shell is opt-in at build time (composer/build/debugshell.py): off by
default, and then no trace of it in the tree the real overlays build."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from composer.build import presets
from composer.build.debugshell import install_debug_shell
from composer.build.overlay import apply_overlays
from composer.core.paths import DEFAULT_IMAGE, OVERLAYS_DIR, PROJECT_ROOT
from composer.definition.load import load_definition
from tests.unit.conftest import Project

UNIT = "keel-debug-shell.service"


def build_tree(project: Project, minimal: Callable[[str], str], tree: Path, extra: str) -> Path:
    """The overlay steps on a tree: base's files, then the debug shell's step."""
    shutil.copytree(OVERLAYS_DIR / "base", project.overlays / "base", symlinks=True)
    defn = project.load(minimal("overlays: [{source: base}]\n" + extra))
    apply_overlays(defn, tree, project.overlays)
    install_debug_shell(defn, tree)
    return tree


def debug_shell_files(tree: Path) -> list[str]:
    """Files and links of that name (rglob would skip the links: they point into the
    image, not into this machine)."""
    return sorted(
        str((Path(folder) / UNIT).relative_to(tree))
        for folder, dirs, files in os.walk(tree)
        if UNIT in files + dirs
    )


def test_the_schema_leaves_it_off(project: Project, minimal: Callable[[str], str]) -> None:
    assert project.load(minimal("")).debug_shell is False


def test_off_leaves_the_unit_out_of_the_image(
    project: Project, minimal: Callable[[str], str], image_tree: Path
) -> None:
    tree = build_tree(project, minimal, image_tree, "")
    assert (tree / "usr/lib/systemd/system/keel-ssh-keygen.service").is_file()  # base is in
    assert debug_shell_files(tree) == []
    assert UNIT not in presets.enabled_units(tree)
    assert not (tree / "etc/systemd/system/serial-getty@hvc0.service").is_symlink()


def test_on_installs_and_enables_it(
    project: Project, minimal: Callable[[str], str], image_tree: Path
) -> None:
    tree = build_tree(project, minimal, image_tree, "debug_shell: true\n")
    assert debug_shell_files(tree) == [
        f"etc/systemd/system/sysinit.target.wants/{UNIT}",
        f"usr/lib/systemd/system/{UNIT}",
    ]
    assert UNIT in presets.enabled_units(tree)
    # The shell owns hvc0: the getty systemd's generator would put there is masked, or
    # the two take the console from each other (seen as a failing debug-shell test).
    assert (tree / "etc/systemd/system/serial-getty@hvc0.service").readlink() == Path("/dev/null")
    text = (tree / "usr/lib/systemd/system" / UNIT).read_text()
    assert (
        "ConditionPathExists=/sys/firmware/qemu_fw_cfg/by_name/opt/org.keel/debug-shell/raw" in text
    )


@pytest.mark.parametrize(
    ("definition", "wanted"),
    [(DEFAULT_IMAGE, False), (PROJECT_ROOT / "tests/integration/images/test-host.yaml", True)],
    ids=["docker-host", "test-host"],
)
def test_only_test_images_have_it(definition: Path, wanted: bool) -> None:
    assert load_definition(definition).debug_shell is wanted
