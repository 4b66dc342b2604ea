"""One way to write a time span for the whole project: a whole number and a unit, in
systemd's spellings: s, min (or m), h, d, w. "30s", "10min", "6h", "1d", "2w".

The image definition (update policy, container health checks; its JSON Schema carries
PATTERN), hostd's policy files and `keel publish --expires` all read it with this
module, so a span that one of them accepts the others accept too."""

from __future__ import annotations

import re
from datetime import timedelta

UNIT_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# systemd reads "m" as minutes too; `keel publish --expires` has always taken it.
ALIASES = {"m": "min"}
# The JSON Schema's "pattern" for a duration, character for character (a test holds
# the schema to it); Python and ECMAScript read it the same way.
PATTERN = r"^[0-9]+(s|min|m|h|d|w)$"
EXAMPLES = "30s, 10min, 6h, 1d or 2w"

_DURATION = re.compile(PATTERN)


class DurationError(ValueError):
    pass


def split_duration(text: str) -> tuple[int, str]:
    """'10m' -> (10, 'min'): the number and the unit's main spelling."""
    return _split(text, signed=False)


def parse_duration(text: str) -> timedelta:
    number, unit = _split(text, signed=False)
    return timedelta(seconds=number * UNIT_SECONDS[unit])


def parse_signed_duration(text: str) -> timedelta:
    """A duration that may start with a minus: a span into the past (`keel publish
    --expires timestamp=-1h` signs metadata that has already expired)."""
    number, unit = _split(text, signed=True)
    return timedelta(seconds=number * UNIT_SECONDS[unit])


def _split(text: str, *, signed: bool) -> tuple[int, str]:
    stripped = text.strip()
    negative = signed and stripped.startswith("-")
    magnitude = stripped[1:] if negative else stripped
    match = _DURATION.match(magnitude)
    if not match:
        raise DurationError(f"{text!r} is not a duration such as {EXAMPLES}")
    unit = match[1]
    number = int(magnitude[: -len(unit)])
    return -number if negative else number, ALIASES.get(unit, unit)
