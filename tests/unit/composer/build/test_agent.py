"""hostd's dependencies are picked for the image's own Python (agent.py)."""

from pathlib import Path

import pytest

from composer.build.agent import guest_python_version
from composer.core.errors import KeelError


@pytest.mark.parametrize(("target", "version"), [("python3.13", "3.13"), ("python3.11", "3.11")])
def test_guest_python_version_comes_from_the_tree(
    tmp_path: Path, target: str, version: str
) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").symlink_to(target)
    assert guest_python_version(tmp_path) == version


def test_an_image_without_python3_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(KeelError, match="hostd runs on"):
        guest_python_version(tmp_path)
