"""The update verbs of `keel`: keygen, publish, prune, rotate-key, serve (see
docs/updates.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.progress import Progress
from composer.core.verbs import VerbGroup
from hostd.formats.sizes import MIB

if TYPE_CHECKING:
    from composer.publish.indexes import AddedIndex


def cmd_keygen(args: argparse.Namespace) -> int:
    from composer.publish import keys, secureboot

    has_tuf_keys = (args.out / keys.ROOT_METADATA).exists()
    if not (args.secure_boot and has_tuf_keys):
        created = keys.generate_keys(args.out)
        for role, path in created.private_keys.items():
            print(f"{role:<9}  {path}")
        print(f"root.json  {created.root_metadata}")
        print(
            f"\nkeep {args.out} secret; bake {created.root_metadata} into images with "
            "update.root in the image definition",
            file=sys.stderr,
        )
    if args.secure_boot:
        boot_keys = secureboot.generate(args.out, args.owner)
        for name in secureboot.KEYS:
            print(f"{name:<9}  {boot_keys.key(name)}  {boot_keys.certificate(name)}")
        print(
            f"\nSecure Boot keys (owner GUID {boot_keys.owner_guid}) in {boot_keys.folder}: "
            "enroll the .crt files in a machine's firmware (docs/operations.md); the .key "
            "files never leave this folder",
            file=sys.stderr,
        )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from composer.publish import repository

    commands.echo_commands = False
    expiries = dict(repository.parse_expiry(text) for text in args.expires)
    rollout = repository.parse_rollout(args.rollout) if args.rollout else None
    if rollout is not None and args.artifact is None:
        raise KeelError("--rollout spreads a new version: give the ARTIFACT to publish")
    published = repository.publish(
        args.repo,
        args.artifact,
        args.keys,
        expiries=expiries,
        force=args.force,
        rollout=rollout,
        halt_version=args.halt,
        progress=Progress(quiet=args.json),
    )
    index = published.index
    result: dict[str, Any] = {
        "target": published.target_path,
        "file": str(published.stored_at) if published.stored_at else None,
        "version": published.version,
        "index": {
            "target": index.target_path,
            "file": str(index.stored_at),
            "blocks": index.blocks,
            "new_chunks": index.new_chunks,
            "chunk_bytes_written": index.bytes_written,
            "reused": index.reused,
        }
        if index
        else None,
        "metadata_versions": {
            "targets": published.targets_version,
            "snapshot": published.snapshot_version,
            "timestamp": published.timestamp_version,
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        what = f"published {published.target_path}" if published.target_path else "re-signed"
        if args.halt:
            what += f", {args.halt} halted"
        if rollout is not None:
            what += f", rolled out over {args.rollout}"
        print(
            f"{what} (targets v{published.targets_version}, "
            f"snapshot v{published.snapshot_version}, timestamp v{published.timestamp_version})"
        )
        if index is not None:
            print(f"index {index.target_path}: {_chunk_summary(index)}")
    return 0


def _chunk_summary(index: AddedIndex) -> str:
    if index.reused:
        return f"{index.blocks} blocks; this bundle's index and chunks were already stored"
    return (
        f"{index.blocks} blocks, {index.new_chunks} new chunks written "
        f"({index.bytes_written / MIB:.1f} MiB), the rest already stored"
    )


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


def cmd_prune(args: argparse.Namespace) -> int:
    from composer.publish import prune

    pruned = prune.prune(args.repo, args.keys, args.keep, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({
            "dry_run": pruned.dry_run,
            "kept": [str(v) for v in pruned.kept],
            "removed": [str(v) for v in pruned.removed],
            "unordered": [str(v) for v in pruned.unordered],
            "targets": pruned.targets,
            "files": [str(path) for path in pruned.files],
            "chunks": pruned.chunks,
            "bytes_freed": pruned.bytes_freed,
            "targets_version": pruned.targets_version,
        }, indent=2))  # fmt: skip
        return 0
    for version in pruned.unordered:
        print(f"keel: warning: kept {version}: its version cannot be ordered", file=sys.stderr)
    gone = "would go" if pruned.dry_run else "removed"
    for version in pruned.removed:
        print(f"{gone}: {version}")
    deleted = "would be deleted" if pruned.dry_run else "deleted"
    files = len(pruned.files) - pruned.chunks
    summary = (
        f"{_count(len(pruned.removed), 'version')} {gone}, {_count(files, 'target file')} and "
        f"{_count(pruned.chunks, 'chunk')} {deleted} ({pruned.bytes_freed / MIB:.1f} MiB); "
        f"{_count(len(pruned.kept) + len(pruned.unordered), 'version')} kept"
    )
    if pruned.targets_version is not None:
        summary += f", targets metadata v{pruned.targets_version}"
    print(summary)
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from composer.publish import repository

    rotated = repository.rotate_key(args.repo, args.keys, args.role)
    if args.json:
        print(json.dumps({
            "role": rotated.role,
            "old_keyid": rotated.old_keyid,
            "new_keyid": rotated.new_keyid,
            "root_version": rotated.root_version,
            "retired_key": str(rotated.retired_key),
        }, indent=2))  # fmt: skip
        return 0
    print(
        f"{rotated.role} key {rotated.old_keyid[:16]}… replaced by {rotated.new_keyid[:16]}… "
        f"(root v{rotated.root_version}); the old key is in {rotated.retired_key}"
    )
    print(
        f"hosts follow the new root by themselves; new builds bake {args.keys / 'root.json'}",
        file=sys.stderr,
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from composer.publish import serve

    serve.serve_forever(args.repo, args.bind, args.port)
    return 0


def register(verbs: VerbGroup) -> None:
    """Add keygen, publish, prune, rotate-key and serve to keel's subcommands (argparse
    subparsers)."""
    _add_keygen(verbs)
    _add_publish(verbs)
    _add_prune(verbs)
    _add_rotate_key(verbs)
    _add_serve(verbs)


def _repository_options(parser: argparse.ArgumentParser) -> None:
    """--repo and --keys, which every verb that signs takes."""
    parser.add_argument("--repo", type=Path, required=True, help="repository folder")
    parser.add_argument("--keys", type=Path, required=True, help="folder written by `keel keygen`")


def _add_keygen(verbs: VerbGroup) -> None:
    keygen = verbs.add_parser("keygen", help="create update signing keys and root metadata")
    keygen.add_argument("--out", type=Path, required=True, help="folder for the keys and root.json")
    keygen.add_argument(
        "--secure-boot",
        action="store_true",
        help="also make UEFI Secure Boot keys (PK, KEK, db) in OUT/secure-boot/; "
        "with update keys already in OUT, only those",
    )
    keygen.add_argument(
        "--owner",
        default="Keel",
        help="the owner named in the Secure Boot certificates (default: Keel)",
    )
    keygen.set_defaults(func=cmd_keygen)


def _add_publish(verbs: VerbGroup) -> None:
    publish = verbs.add_parser(
        "publish", help="add a build's update bundle, its block index and chunks to a repository"
    )
    publish.add_argument(
        "artifact",
        type=Path,
        nargs="?",
        help="build output folder (build/NAME/VERSION) or .keelbundle; "
        "none: only re-sign the metadata with fresh expiry dates",
    )
    _repository_options(publish)
    publish.add_argument(
        "--expires",
        action="append",
        default=[],
        metavar="ROLE=DURATION",
        help="lifetime of new metadata, e.g. timestamp=1d (defaults: root=365d, "
        "targets=90d, snapshot=7d, timestamp=1d); 0s or negative: already expired",
    )
    publish.add_argument(
        "--force", action="store_true", help="publish even if the version is not newer"
    )
    publish.add_argument(
        "--rollout",
        metavar="DURATION",
        help="spread the new version over this span from now (e.g. 24h): each host takes "
        "it at its own offset, derived from its id (docs/fleet.md)",
    )
    publish.add_argument(
        "--halt",
        metavar="VERSION",
        help="stop a published version: hosts that have not booted it stop taking it, and "
        "drop it if installed but not booted",
    )
    publish.add_argument("--json", action="store_true", help="print the result as JSON")
    publish.set_defaults(func=cmd_publish)


def _add_prune(verbs: VerbGroup) -> None:
    prune = verbs.add_parser(
        "prune", help="remove all but the newest versions, and the chunks only they need"
    )
    _repository_options(prune)
    prune.add_argument(
        "--keep",
        type=int,
        required=True,
        metavar="N",
        help="versions to keep of each image and architecture, the newest",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, change nothing"
    )
    prune.add_argument("--json", action="store_true", help="print the result as JSON")
    prune.set_defaults(func=cmd_prune)


def _add_rotate_key(verbs: VerbGroup) -> None:
    rotate = verbs.add_parser(
        "rotate-key", help="replace one role's signing key (hosts follow by themselves)"
    )
    rotate.add_argument("role", choices=("root", "targets", "snapshot", "timestamp"))
    _repository_options(rotate)
    rotate.add_argument("--json", action="store_true", help="print the result as JSON")
    rotate.set_defaults(func=cmd_rotate_key)


def _add_serve(verbs: VerbGroup) -> None:
    serve = verbs.add_parser("serve", help="serve a repository over HTTP on loopback")
    serve.add_argument("--repo", type=Path, required=True, help="repository folder")
    serve.add_argument("--bind", default="127.0.0.1", help="loopback address (default %(default)s)")
    serve.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    serve.set_defaults(func=cmd_serve)
