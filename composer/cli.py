"""keel: the build-side command line. Each phase's folder registers its own verbs;
this module only puts them together, grouped by phase in the help."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

from composer.build import cli as build_cli
from composer.core.errors import KeelError
from composer.core.verbs import VerbGroup, listing
from composer.fleet import cli as fleet_cli
from composer.install import cli as install_cli
from composer.provisioning import cli as provisioning_cli
from composer.publish import cli as publish_cli
from composer.vm import cli as vm_cli

PHASES = (
    ("build", build_cli.register),
    ("publish", publish_cli.register),
    ("run", vm_cli.register),
    ("install", install_cli.register),
    ("provisioning", provisioning_cli.register),
    ("fleet", fleet_cli.register),
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Build immutable A/B container-host images, publish their updates, "
        "and boot them in QEMU.",
        usage="keel [-h] [--version] COMMAND ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"keel {version('keel')}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", help=argparse.SUPPRESS)
    groups = []
    for title, register in PHASES:
        group = VerbGroup(verbs, title)
        register(group)
        groups.append(group)
    parser.epilog = listing(groups) + "\n\nkeel COMMAND --help tells more of each."
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        status: int = args.func(args)
    except KeelError as error:
        print(f"keel: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("keel: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
