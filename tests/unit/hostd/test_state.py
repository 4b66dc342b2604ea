"""The update state machine: allowed transitions, atomic persistence, history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostd.state import StateStore, TransitionError, UpdateState


def test_a_fresh_host_is_idle(tmp_path: Path) -> None:
    assert StateStore(tmp_path).load() == UpdateState()


def test_the_happy_path_persists_each_phase(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = store.load()
    for phase in ("downloading", "writing-slot", "installing", "installed", "trial"):
        state = store.transition(state, phase, target_version="2.0.0", target_slot="b")
        assert StateStore(tmp_path).load().phase == phase
    state = store.finish(state, "succeeded", "2.0.0", "booted")
    reloaded = StateStore(tmp_path).load()
    assert reloaded.phase == "idle"
    assert reloaded.last_result is not None and reloaded.last_result.result == "succeeded"
    assert [e["to"] for e in store.history() if e["event"] == "transition"] == [
        "downloading", "writing-slot", "installing", "installed", "trial", "idle",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "phase"),
    [
        ("idle", "installed"),
        ("idle", "trial"),
        ("downloading", "installed"),
        ("trial", "writing-slot"),
    ],
)
def test_skipping_a_step_is_refused(tmp_path: Path, start: str, phase: str) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(TransitionError):
        store.transition(UpdateState(phase=start), phase)


def test_no_temporary_file_is_left_and_the_file_is_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.transition(store.load(), "downloading", target_version="2.0.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl", "state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["phase"] == "downloading"


def test_an_unreadable_state_file_starts_over(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    assert StateStore(tmp_path).load().phase == "idle"


def test_failed_versions_survive_a_reload(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = store.transition(store.load(), "writing-slot", target_version="3.0.0")
    store.finish(state, "failed", "3.0.0", "x", failed_versions={"3.0.0": "health"})
    assert StateStore(tmp_path).load().failed_versions == {"3.0.0": "health"}


def test_a_history_line_cut_by_power_loss_is_skipped(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record("check", {"available": "2.0.0"})
    with store.history_path.open("a") as handle:
        handle.write('{"at": 1, "ev')
    assert [e["event"] for e in store.history()] == ["check"]


def test_keelctl_and_hostd_agree_on_the_socket() -> None:
    from hostd import api, cli

    assert cli.SOCKET == api.SOCKET
