"""The host's own kernel arguments (a provisioning config's kernelArguments): kept in
/var/lib/keel/kernel-arguments.json by provisioning, and applied to every loader entry
hostd writes (the booted one at first boot, each update's, a rollback's), so they
survive updates and rollbacks. Keel's own words (root=, keel.slot=...) are refused by
hostd/ignition/kernelargs.py and never edited here."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hostd.ignition.kernelargs import KernelArguments, argument_problem

STATE_FILE = "var/lib/keel/kernel-arguments.json"
ARGUMENTS_PATH = Path("/") / STATE_FILE

log = logging.getLogger("keel.hostd")


def edit(words: Sequence[str], arguments: KernelArguments) -> tuple[str, ...]:
    """words without any shouldNotExist word, then each missing shouldExist word
    appended in order (as Ignition does on Fedora CoreOS); idempotent."""
    kept = [word for word in words if word not in arguments.should_not_exist]
    kept += [word for word in arguments.should_exist if word not in kept]
    return tuple(kept)


def to_json(arguments: KernelArguments) -> bytes:
    state = {
        "should_exist": list(arguments.should_exist),
        "should_not_exist": list(arguments.should_not_exist),
    }
    return (json.dumps(state, indent=2) + "\n").encode()


def load(path: Path = ARGUMENTS_PATH) -> KernelArguments:
    """The host's kernel arguments; none if the file is missing. An unreadable file is
    logged and taken as none: an update must not stop for it (the words were checked
    when provisioning wrote them)."""
    try:
        state = json.loads(path.read_text())
        return KernelArguments(
            _checked(state.get("should_exist", []), path),
            _checked(state.get("should_not_exist", []), path),
        )
    except FileNotFoundError:
        return KernelArguments()
    except (OSError, ValueError, AttributeError, TypeError) as error:
        log.warning("ignoring %s, which cannot be read: %s", path, error)
        return KernelArguments()


def _checked(words: list[object], path: Path) -> tuple[str, ...]:
    """The words of the file that are still acceptable arguments (it is root's to edit,
    but a word like root= would boot the wrong slot)."""
    kept = []
    for word in words:
        problem = argument_problem(str(word), str(path))
        if problem:
            log.warning("ignoring a kernel argument: %s", problem)
        else:
            kept.append(str(word))
    return tuple(kept)
