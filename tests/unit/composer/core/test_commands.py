import pytest

from composer.core import commands
from composer.core.errors import KeelError


def test_output_returns_stdout() -> None:
    assert commands.output(["sh", "-c", "echo hello"]).strip() == "hello"


def test_failure_names_command_exit_code_and_stderr_tail() -> None:
    script = "for i in $(seq 1 40); do echo line$i >&2; done; exit 3"
    with pytest.raises(KeelError) as caught:
        commands.run(["sh", "-c", script])
    message = str(caught.value)
    assert "exit code 3" in message
    assert "sh -c" in message
    assert "line40" in message
    # Only the tail, not the whole stderr.
    assert "line1\n" not in message


def test_missing_command_points_to_keel_doctor() -> None:
    with pytest.raises(KeelError, match="keel doctor"):
        commands.run(["keel-no-such-command"])


def test_stderr_lines_reach_the_callback_and_input_reaches_stdin() -> None:
    seen: list[str] = []
    result = commands.run(
        ["sh", "-c", "cat; echo progress >&2"], input=b"data", capture=True,
        on_stderr_line=seen.append,
    )  # fmt: skip
    assert result.stdout == b"data"
    assert seen == ["progress"]


def test_env_sets_and_removes_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_TEST_GONE", "present")
    out = commands.output(
        ["sh", "-c", 'echo "${KEEL_TEST_GONE:-unset} $KEEL_TEST_SET"'],
        env={"KEEL_TEST_GONE": None, "KEEL_TEST_SET": "set"},
    )
    assert out.strip() == "unset set"
