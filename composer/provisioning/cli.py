"""The provisioning verbs of `keel`: butane (translate like the butane tool) and
config check (validate a Butane or Ignition file as a host would, without a host)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from composer.core.errors import KeelError
from composer.core.verbs import VerbGroup


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as error:
        raise KeelError(f"{name}: cannot read: {error.strerror}") from None


def cmd_butane(args: argparse.Namespace) -> int:
    from composer.provisioning.butane import butane

    name = "<stdin>" if args.file == "-" else args.file
    try:
        result = butane(_read(args.file), name=name, files_dir=args.files_dir, strict=args.strict)
    except RecursionError:
        raise KeelError(f"{name}: nested too deeply") from None
    for warning in result.warnings:
        print(f"keel: warning: {warning}", file=sys.stderr)
    data = result.json(pretty=args.pretty)
    if args.output is None:
        sys.stdout.buffer.write(data)
        return 0
    try:
        Path(args.output).write_bytes(data)
    except OSError as error:
        raise KeelError(f"{args.output}: cannot write: {error.strerror}") from None
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from composer.provisioning.check import check_config

    files_dir = args.files_dir or Path(args.file).parent
    checked = check_config(_read(args.file), name=args.file, files_dir=files_dir)
    print(f"{args.file}: a valid {checked.kind} config for a Keel host")
    return 0


def register(verbs: VerbGroup) -> None:
    tool = verbs.add_parser(
        "butane", help="translate a Butane config to Ignition JSON, as the butane tool does"
    )
    tool.add_argument("file", metavar="FILE", help="the Butane YAML file (- for stdin)")
    tool.add_argument(
        "--files-dir",
        "-d",
        type=Path,
        help="the folder that local, contents_local, *_local and trees are relative to",
    )
    tool.add_argument("--output", "-o", metavar="OUT", help="write here instead of stdout")
    tool.add_argument("--strict", "-s", action="store_true", help="fail on any warning")
    tool.add_argument("--pretty", "-p", action="store_true", help="indent the JSON")
    tool.set_defaults(func=cmd_butane)

    config = verbs.add_parser(
        "config", help="check a provisioning config (Butane or Ignition) as a host would"
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate FILE: Butane is translated, then parsed by the host's own parser",
        description="Validate a Butane or Ignition file exactly as a Keel host would "
        "(Butane is translated first, local files relative to its folder), without "
        "booting anything. Every problem is listed.",
    )
    check.add_argument("file", metavar="FILE", help="the Butane YAML or Ignition JSON file")
    check.add_argument(
        "--files-dir", "-d", type=Path, help="for Butane: local files (default: FILE's folder)"
    )
    check.set_defaults(func=cmd_config_check)
