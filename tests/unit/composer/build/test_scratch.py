"""The build's scratch folder: in memory when there is room, removed whatever happens."""

import os
import stat
from pathlib import Path

import pytest

from composer.build import pipeline, scratch
from composer.core.errors import KeelError
from tests.unit.conftest import Project


def test_with_room_the_folder_is_private_and_fresh_in_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "SHARED_MEMORY", shm)
    monkeypatch.setattr(scratch, "room_in", lambda folder: scratch.MIN_FREE_MEMORY)
    one = scratch.make_work_folder(tmp_path / "out")
    two = scratch.make_work_folder(tmp_path / "out")
    assert one.parent == shm and two.parent == shm and one != two
    # mkdtemp: only the build's user may enter, and the name is not known in advance.
    assert stat.S_IMODE(one.stat().st_mode) == 0o700
    assert list(one.iterdir()) == []


def test_without_room_the_folder_is_a_fresh_work_folder_beside_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "room_in", lambda folder: scratch.MIN_FREE_MEMORY - 1)
    stale = tmp_path / "out/.work/root/etc/left-over"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier build")
    work = scratch.make_work_folder(tmp_path / "out")
    assert work == tmp_path / "out/.work"
    assert list(work.iterdir()) == []


def test_room_of_a_missing_folder_is_none(tmp_path: Path) -> None:
    assert scratch.room_in(tmp_path / "missing") == 0


def test_a_filesystem_programs_cannot_run_from_has_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.statvfs(tmp_path)
    assert scratch.room_in(tmp_path) > 0

    class NoExec:
        f_flag = real.f_flag | os.ST_NOEXEC
        f_bavail = real.f_bavail
        f_frsize = real.f_frsize

    monkeypatch.setattr(scratch.os, "statvfs", lambda folder: NoExec())
    assert scratch.room_in(tmp_path) == 0


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))


def test_a_failed_build_removes_its_scratch_folder(
    project: Project, minimal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "SHARED_MEMORY", shm)
    monkeypatch.setattr(scratch, "room_in", lambda folder: scratch.MIN_FREE_MEMORY)
    seen: list[Path] = []

    def fail(ctx: pipeline.BuildContext) -> None:
        (ctx.work / "root").mkdir()
        seen.append(ctx.work)
        raise KeelError("bootstrap failed")

    monkeypatch.setattr(pipeline, "STAGES", (((("bootstrap", fail),),),))
    project.load(minimal(""))
    with pytest.raises(KeelError, match="bootstrap failed"):
        pipeline.build_image(project.images / "test.yaml", out_dir=tmp_path / "out", quiet=True)
    assert seen and seen[0].parent == shm
    assert list(shm.iterdir()) == []


def test_a_failed_lane_stops_the_build_after_the_other_lane_finished(
    project: Project, minimal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "room_in", lambda folder: 0)
    finished: list[str] = []

    def fail(ctx: pipeline.BuildContext) -> None:
        raise KeelError("qcow2 failed")

    def slow_but_fine(ctx: pipeline.BuildContext) -> None:
        finished.append("bundle")

    monkeypatch.setattr(pipeline, "STAGES", (((("qcow2", fail),), (("bundle", slow_but_fine),)),))
    project.load(minimal(""))
    with pytest.raises(KeelError, match="qcow2 failed"):
        pipeline.build_image(project.images / "test.yaml", out_dir=tmp_path / "out", quiet=True)
    assert finished == ["bundle"]
    assert not (tmp_path / "out/.work").exists()
