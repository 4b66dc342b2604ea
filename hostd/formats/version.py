"""One order of image versions for the whole project: `keel publish` refuses to go
backwards with it, and hostd only moves forward with it, so the two must agree.

"1.2.10" and "2.0-rc1" style: dotted numbers compare numerically part by part, missing
parts count as 0 (1.2 == 1.2.0); with equal numbers a version with a suffix comes before
the one without (2.0-rc1 < 2.0); suffixes compare dot-separated part by part, numbers
numerically and before words."""

from __future__ import annotations

import re
from typing import Any

VERSION_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*(-[0-9A-Za-z.]+)?$")


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key of an image version; ValueError for a string that is not one."""
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"not an image version: {version!r}")
    core, _, suffix = version.partition("-")
    numbers = [int(part) for part in core.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    suffix_key = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in suffix.split(".")
    )
    return (tuple(numbers), 0 if suffix else 1, suffix_key if suffix else ())


def is_newer(candidate: str, than: str) -> bool:
    return version_key(candidate) > version_key(than)
