"""How each phase's folder adds its verbs to `keel`, so the root parser can list them
grouped by phase (build, publish, run) instead of as one alphabet soup."""

from __future__ import annotations

import argparse
from typing import Any


class VerbGroup:
    """The verbs of one phase: add_parser as on argparse's subparsers, remembering each
    verb's one-line help for the root parser's grouped listing."""

    def __init__(self, verbs: argparse._SubParsersAction[argparse.ArgumentParser], title: str):
        self._verbs = verbs
        self.title = title
        self.listed: list[tuple[str, str]] = []

    def add_parser(self, name: str, *, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        self.listed.append((name, help))
        # No help= to argparse: the root parser lists verbs itself, by group.
        return self._verbs.add_parser(name, description=help, **kwargs)


def listing(groups: list[VerbGroup]) -> str:
    width = max(len(name) for group in groups for name, _ in group.listed)
    lines = []
    for group in groups:
        lines.append(f"{group.title} commands:")
        lines += [f"  {name:<{width}}  {text}" for name, text in group.listed]
        lines.append("")
    return "\n".join(lines).rstrip()
