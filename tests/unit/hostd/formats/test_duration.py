"""The one duration grammar: definitions, hostd's policy and `keel publish --expires`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from composer.core.paths import SCHEMA_FILE
from hostd.formats.duration import (
    PATTERN,
    UNIT_SECONDS,
    DurationError,
    parse_duration,
    parse_signed_duration,
    split_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10min", timedelta(minutes=10)),
        ("10m", timedelta(minutes=10)),
        ("6h", timedelta(hours=6)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("0s", timedelta(0)),
        (" 6h\n", timedelta(hours=6)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_signed_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "6", "h", "6 h", "6hours", "1.5h", "6H", "6M", "1y", "+6h", "-6h", "6h6m"]
)
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError, match="such as 30s, 10min"):
        parse_duration(text)


def test_only_the_signed_reading_takes_a_minus() -> None:
    assert parse_signed_duration("-1h") == timedelta(hours=-1)
    assert parse_signed_duration("-0s") == timedelta(0)
    for text in ("--1h", "- 1h", "-", "-h"):
        with pytest.raises(DurationError):
            parse_signed_duration(text)


def test_split_names_minutes_by_their_main_spelling() -> None:
    assert split_duration("10m") == split_duration("10min") == (10, "min")
    assert split_duration("3w") == (3, "w")


def test_the_pattern_takes_exactly_the_units() -> None:
    for unit in (*UNIT_SECONDS, "m"):
        assert re.match(PATTERN, f"12{unit}")
    assert not re.match(PATTERN, "12ms")


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_the_image_definition_schema_uses_this_grammar() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$defs"]["duration"]["pattern"] == PATTERN
    # No second spelling of a duration hides elsewhere in the schema (a pattern that
    # takes "10min" but not "10minutes" is one).
    durations = [
        p for p in _patterns(schema) if re.match(p, "10min") and not re.match(p, "10minutes")
    ]
    assert durations == [PATTERN]
