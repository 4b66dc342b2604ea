"""The install verb of `keel`: write a built image to a disk or an image file."""

from __future__ import annotations

import argparse
from pathlib import Path

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import build_root
from composer.core.verbs import VerbGroup


def _size(text: str) -> int:
    from composer.definition.checks import parse_size

    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 bytes")
    return size


def cmd_install(args: argparse.Namespace) -> int:
    from composer.core.progress import Progress
    from composer.install.image import artifact_folder
    from composer.install.installer import InstallRequest, install

    if args.config is not None and not args.config.is_file():
        raise KeelError(f"config file not found: {args.config}")
    commands.echo_commands = not args.quiet
    request = InstallRequest(
        image=artifact_folder(args.image, build_root()),
        to=args.to,
        size=args.size,
        config=args.config,
        force=args.force,
    )
    result = install(request, Progress(quiet=args.quiet))
    written = result.written
    rate = written.size / 2**20 / max(written.seconds, 1e-6)
    config = f"; {result.config.kind} config {args.config} on the ESP" if result.config else ""
    print(
        f"installed {result.image.name} {result.image.version} to {result.target.path} "
        f"({result.target.size / 2**30:.1f} GiB): {written.size / 2**20:.0f} MiB written in "
        f"{written.seconds:.1f}s ({rate:.0f} MiB/s), verified {', '.join(result.verified)}"
        f"{config}"
    )
    return 0


def register(verbs: VerbGroup) -> None:
    p = verbs.add_parser("install", help="write a built image to a disk or an image file, verified")
    p.add_argument(
        "image",
        nargs="?",
        type=Path,
        metavar="IMAGE",
        help="a build folder such as build/docker-host/1.0.0 (default: the newest "
        "docker-host build)",
    )
    p.add_argument(
        "--to",
        required=True,
        type=Path,
        metavar="DEVICE|FILE",
        help="a whole disk (/dev/sdX; not mounted, not this machine's own) or an image file",
    )
    p.add_argument(
        "--size",
        type=_size,
        metavar="SIZE",
        help="for an image file: its size, such as 20G (sparse; default: the image's); "
        "var grows into the rest on first boot",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE.bu|FILE.ign",
        help="provisioning config (Butane or Ignition), validated as `keel config check` "
        "does and put on the ESP as keel/provision.ign",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite a target that already has partitions or a filesystem",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only the result")
    p.set_defaults(func=cmd_install)
