"""The build verbs of `keel`: build, doctor, docker-cli, schema."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from composer.core import commands
from composer.core.paths import DEFAULT_IMAGE, SCHEMA_FILE
from composer.core.verbs import VerbGroup
from composer.tools import doctor


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cmd_build(args: argparse.Namespace) -> int:
    from composer.build.pipeline import build_image

    commands.echo_commands = not args.json
    if args.keys is not None:
        use_key_folder(args.keys)
    result = build_image(
        args.definition,
        out_dir=args.out,
        quiet=args.json,
        keep_work=args.keep_work,
        keys=args.keys,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "out_dir": str(result.out_dir),
                    "manifest": str(result.manifest),
                    "seconds": round(result.seconds, 1),
                    "package_cache_hit": result.cached_packages,
                    "steps": {k: round(v, 1) for k, v in result.timings.items()},
                    "artifacts": [
                        {"name": a.name, "path": str(a.path), "size": a.size, "sha256": a.sha256}
                        for a in result.artifacts
                    ],
                },
                indent=2,
            )
        )
        return 0
    width = max(len(a.name) for a in result.artifacts)
    print(f"\nbuilt {result.out_dir} in {result.seconds:.0f}s", file=sys.stderr)
    print(f"{'artifact':<{width}}  {'size':>10}  sha256")
    for a in result.artifacts:
        print(f"{a.name:<{width}}  {human_size(a.size):>10}  {a.sha256}")
    return 0


def use_key_folder(keys: Path) -> None:
    """--keys DIR: DIR/root.json is the trust root, unless the definition's update.root
    names one (it still wins, as over $KEEL_UPDATE_ROOT, which --keys replaces)."""
    from composer.core.errors import KeelError
    from composer.publish.keys import ROOT_METADATA

    if not keys.is_dir():
        raise KeelError(
            f"--keys {keys}: no such folder", hint="make one with `keel keygen --out DIR`"
        )
    root = keys / ROOT_METADATA
    if root.is_file():
        os.environ["KEEL_UPDATE_ROOT"] = str(root.absolute())


def cmd_doctor(args: argparse.Namespace) -> int:
    text, status = doctor.report()
    print(text)
    return status


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(SCHEMA_FILE.read_text())
    return 0


def cmd_docker_cli(args: argparse.Namespace) -> int:
    from composer.tools.dockercli import docker_client

    print(docker_client(args.definition))
    return 0


def register(verbs: VerbGroup) -> None:
    build = verbs.add_parser("build", help="build a disk image from an image definition")
    build.add_argument(
        "definition",
        nargs="?",
        type=Path,
        default=DEFAULT_IMAGE,
        help="image definition (YAML); default: images/docker-host.yaml",
    )
    build.add_argument("--out", type=Path, help="output folder (default build/NAME/VERSION)")
    build.add_argument("--json", action="store_true", help="print the result as JSON, no progress")
    build.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the staging tree (in /dev/shm when it has room, else OUT/.work; printed)",
    )
    build.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="the folder `keel keygen` wrote: its root.json becomes the update trust root, "
        "and its secure-boot/ keys sign the boot chain (boot.secure_boot)",
    )
    build.set_defaults(func=cmd_build)

    check = verbs.add_parser("doctor", help="list missing host tools and their Debian packages")
    check.set_defaults(func=cmd_doctor)

    client = verbs.add_parser(
        "docker-cli", help="print the path of the image's own docker command, for ssh://"
    )
    client.add_argument(
        "definition",
        nargs="?",
        type=Path,
        default=DEFAULT_IMAGE,
        help="image definition (YAML), built before; default: images/docker-host.yaml",
    )
    client.set_defaults(func=cmd_docker_cli)

    schema = verbs.add_parser("schema", help="print the image definition JSON Schema")
    schema.set_defaults(func=cmd_schema)
