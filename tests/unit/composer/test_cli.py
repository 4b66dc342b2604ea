"""The root `keel` command: bare help grouped by phase, --version."""

import subprocess
import sys
from importlib.metadata import version

from composer.cli import PHASES, make_parser


def keel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composer.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_bare_keel_prints_its_help_grouped_by_phase() -> None:
    result = keel()
    assert result.returncode == 0, result.stderr
    text = result.stdout
    headings = [f"{title} commands:" for title, _ in PHASES]
    positions = [text.index(heading) for heading in headings]
    assert positions == sorted(positions)
    build_part = text[positions[0] : positions[1]]
    publish_part = text[positions[1] : positions[2]]
    run_part = text[positions[2] : positions[3]]
    provisioning_part = text[positions[3] :]
    assert "  build " in build_part and "  publish " not in build_part
    assert "  publish " in publish_part and "  keygen " in publish_part
    assert "  run " in run_part and "  console " in run_part
    assert "  butane " in provisioning_part and "  config " in provisioning_part
    assert "  run " not in provisioning_part


def test_every_verb_is_listed_once() -> None:
    help_text = make_parser().format_help()
    verbs = make_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for verb in verbs:
        assert help_text.count(f"\n  {verb} ") == 1, verb


def test_version_is_the_package_version() -> None:
    result = keel("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"keel {version('keel')}"
