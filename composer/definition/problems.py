"""How a mistake in a definition is worded and reported: "FILE:LINE: what is wrong;
what to do", every mistake of a load at once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.core.errors import KeelError
from composer.definition.model import Origin

DOCS_HINT = "see docs/image-definition.md"

# A path inside a document: ("templates", 2, "source").
DocPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def raise_if_any(problems: Sequence[Problem]) -> None:
    if not problems:
        return
    unique = dict.fromkeys(problems)  # one error can surface twice (two missing keys)
    ordered = sorted(unique, key=lambda p: (str(p.origin.file), p.origin.line, p.message))
    raise KeelError("\n".join(str(p) for p in ordered), hint=DOCS_HINT)


def display(path: Path) -> Path:
    """A path as people like to read it: relative to the current directory if inside."""
    absolute = Path(os.path.normpath(path.absolute()))
    try:
        return absolute.relative_to(Path.cwd())
    except ValueError:
        return absolute


def dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in path)


def describe_path(path: DocPath) -> str:
    return f"field {dotted(path)!r}" if path else "the top level"


def describe_where(path: DocPath) -> str:
    return f"in {dotted(path)!r}" if path else "at top level"


def describe_value(value: Any, text: str | None) -> str:
    written = text if text is not None else str(value)
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (written {written})"
    if isinstance(value, int | float):
        return f"the number {written}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(written)
