"""Checks the build makes before any slow work."""

from collections.abc import Callable
from pathlib import Path

import pytest

from composer.build import bootstrap, capacity, context, pipeline
from composer.core.errors import KeelError
from hostd.formats.sizes import MIB
from tests.unit.conftest import Project


def test_root_slot_too_small_for_a_known_package_set_is_refused_up_front(
    project: Project,
    minimal: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    defn = project.load(minimal(""))
    (tmp_path / "cache/bootstrap").mkdir(parents=True)
    capacity.remember_root_size(defn, 300 * MIB)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the slow bootstrap ran before the size check")

    monkeypatch.setattr(bootstrap, "bootstrap", must_not_run)
    with pytest.raises(KeelError) as caught:
        pipeline.build_image(defn.source, out_dir=tmp_path / "out", quiet=True)
    message = str(caught.value)
    assert "test.yaml:3" in message  # the partitions line
    assert "needs 300.0 MiB but partitions.root is 256 MiB" in message
    assert "at least 375MiB" in message


def test_source_date_epoch_comes_from_the_environment_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert context.source_date_epoch() == 1700000000
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert context.source_date_epoch() > 0  # the checkout's last commit
