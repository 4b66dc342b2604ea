"""The update state machine: allowed transitions, atomic persistence, history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostd.state import (
    IN_FLIGHT,
    TRANSITIONS,
    Phase,
    Result,
    StateStore,
    TransitionError,
    UpdateState,
)


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


# What state.json held before phases were an enum, byte for byte: hosts keep their
# state file across updates, in both directions.
STATE_FILE = """\
{
  "phase": "writing-slot",
  "target_version": "2.0.0",
  "target_slot": "b",
  "from_version": "1.0.0",
  "progress": {
    "total": 10,
    "done": 5
  },
  "last_result": {
    "result": "refused",
    "version": "1.5.0",
    "reason": "why",
    "at": 1.5
  },
  "failed_versions": {
    "1.5.0": "health"
  },
  "transfer": {
    "mode": "delta",
    "downloaded": 3,
    "full": 100
  }
}
"""


def test_the_state_file_keeps_its_bytes(tmp_path: Path) -> None:
    state = UpdateState(
        phase=Phase.WRITING_SLOT,
        target_version="2.0.0",
        target_slot="b",
        from_version="1.0.0",
        progress={"total": 10, "done": 5},
        last_result=Result("refused", "1.5.0", "why", 1.5),
        failed_versions={"1.5.0": "health"},
        transfer={"mode": "delta", "downloaded": 3, "full": 100},
    )
    StateStore(tmp_path).save(state)
    assert (tmp_path / "state.json").read_text() == STATE_FILE
    (tmp_path / "state.json").write_text(STATE_FILE)
    assert StateStore(tmp_path).load() == state


def test_a_state_file_from_before_transfers_loads() -> None:
    old = json.loads(STATE_FILE)
    del old["transfer"]
    assert UpdateState.from_json(old).transfer == {}


def test_a_loaded_phase_is_the_enum() -> None:
    assert UpdateState.from_json({"phase": "installed"}).phase is Phase.INSTALLED
    assert UpdateState.from_json({}).phase is Phase.IDLE


def test_a_phase_this_hostd_does_not_know_starts_over(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"phase": "verifying"}))
    assert StateStore(tmp_path).load() == UpdateState()


def test_history_records_the_phase_words(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.transition(store.load(), Phase.WRITING_SLOT, target_version="2.0.0")
    line = json.loads(store.history_path.read_text())
    assert (line["from"], line["to"]) == ("idle", "writing-slot")


def test_every_phase_has_its_transitions_and_in_flight_ones_can_fall_back() -> None:
    assert set(TRANSITIONS) == set(Phase)
    for phase in IN_FLIGHT:
        assert Phase.IDLE in TRANSITIONS[phase]
    assert TRANSITIONS[Phase.TRIAL] == {Phase.IDLE}


@pytest.mark.parametrize("start", list(Phase))
def test_transitions_follow_the_table(tmp_path: Path, start: Phase) -> None:
    store = StateStore(tmp_path)
    for phase in Phase:
        if phase in TRANSITIONS[start]:
            assert store.transition(UpdateState(phase=start), phase).phase is phase
        else:
            with pytest.raises(TransitionError):
                store.transition(UpdateState(phase=start), phase)
