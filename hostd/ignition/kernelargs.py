"""kernelArguments (Ignition spec 3.3.0+): words the host's kernel command line must
have (shouldExist) or must not have (shouldNotExist). Validated here, with the rest of
the config; hostd/cmdline.py keeps them for the host and edits loader entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Words Keel writes into every loader entry itself: which slot to mount, and how. A
# config changing them would boot another slot than hostd believes, or none.
KEEL_OWNED = {
    "root": "Keel's loader entries choose the root slot (A/B updates)",
    "rootfstype": "the root filesystem is the image's erofs",
    "ro": "the root filesystem is read-only",
    "rw": "the root filesystem is read-only",
    "keel.slot": "hostd tells the booted slot by it (A/B updates)",
}
MAX_ARGUMENT = 4096
_FORBIDDEN = "\0\n\r"


@dataclass(frozen=True)
class KernelArguments:
    should_exist: tuple[str, ...] = ()
    should_not_exist: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.should_exist or self.should_not_exist)


NO_KERNEL_ARGUMENTS = KernelArguments()


def argument_problem(word: str, field: str) -> str | None:
    """Why word cannot be one kernel argument of a Keel host (None if it can)."""
    if not word:
        return f"field '{field}' is empty"
    if any(c in _FORBIDDEN or c.isspace() for c in word):
        return f"field '{field}' is {word!r}: one argument, without whitespace or NUL"
    if len(word.encode()) > MAX_ARGUMENT:
        return f"field '{field}' is longer than {MAX_ARGUMENT} bytes"
    key = word.split("=", 1)[0]
    if key in KEEL_OWNED:
        return f"field '{field}' is {word!r}, which Keel sets itself: {KEEL_OWNED[key]}"
    return None


def _words(section: dict[str, Any], key: str, problems: list[str]) -> tuple[str, ...]:
    words: list[str] = []
    for index, word in enumerate(section.get(key) or []):
        field = f"kernelArguments.{key}[{index}]"
        problem = argument_problem(word, field)
        if problem:
            problems.append(problem)
        elif word in words:
            problems.append(f"field '{field}': {word!r} is listed twice")
        else:
            words.append(word)
    return tuple(words)


def kernel_arguments(document: dict[str, Any], problems: list[str]) -> KernelArguments:
    """The config's kernelArguments, validated (types were checked by config.py)."""
    section = document.get("kernelArguments") or {}
    wanted = _words(section, "shouldExist", problems)
    unwanted = _words(section, "shouldNotExist", problems)
    for word in sorted(set(wanted) & set(unwanted)):
        problems.append(f"kernelArguments: {word!r} is in both shouldExist and shouldNotExist")
    return KernelArguments(wanted, unwanted)
