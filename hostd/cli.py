"""keelctl: the host-side command line (filled in by the update work)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("keelctl: no commands yet; hostd arrives with the update work", file=sys.stderr)
    return 2
