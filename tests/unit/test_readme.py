"""README.md must not drift from the code: every keel command and option it shows
exists, and every make target it shows is defined."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from composer.cli import make_parser
from composer.core.paths import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def shown_commands() -> list[list[str]]:
    """Command lines from README's shell blocks, comments dropped."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def keel_commands() -> list[list[str]]:
    """keel command lines with a verb (a bare `keel` prints its help: test_cli.py)."""
    return [c[1:] for c in shown_commands() if Path(c[0]).name == "keel" and len(c) > 1]


def make_targets() -> list[str]:
    return [c[1] for c in shown_commands() if c[0] == "make"]


def test_readme_shows_the_two_commands_first() -> None:
    assert make_targets()[:2] == ["demo", "test"]


@pytest.mark.parametrize("target", make_targets())
def test_make_target_exists(target: str) -> None:
    result = subprocess.run(
        ["make", "-n", "-B", target], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # A target with no rule would also "succeed" with nothing to do.
    assert "Nothing to be done" not in result.stdout + result.stderr
    assert result.stdout.strip(), f"make {target} has no recipe"


@pytest.mark.parametrize("argv", keel_commands(), ids=lambda argv: " ".join(argv))
def test_keel_command_and_options_exist(argv: list[str]) -> None:
    verb = argv[0]
    verbs = make_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert verb in verbs, f"README shows `keel {verb}`, which does not exist"
    words = [verb]
    # A verb with verbs of its own (`keel fleetlock serve`): the options are the inner one's.
    nested = verbs[verb]._subparsers  # type: ignore[attr-defined]
    if nested is not None and len(argv) > 1:
        inner = nested._group_actions[0].choices
        assert argv[1] in inner, f"README shows `keel {verb} {argv[1]}`, which does not exist"
        words.append(argv[1])
    help_text = subprocess.run(
        [sys.executable, "-m", "composer.cli", *words, "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for option in (a.split("=")[0] for a in argv[len(words) :] if a.startswith("--")):
        assert option in help_text, f"`keel {' '.join(words)}` has no option {option}"


def test_readme_links_point_to_existing_docs() -> None:
    for link in re.findall(r"\]\(([^)#]+)\)", README.read_text()):
        if not link.startswith("http"):
            assert (PROJECT_ROOT / link).exists(), f"README links to missing {link}"
