"""`keel fleetlock serve|holders|release`: reboot coordination for fleets (docs/fleet.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core.errors import KeelError
from composer.core.verbs import VerbGroup

if TYPE_CHECKING:
    from composer.fleet.semaphore import Semaphores


def _semaphores(args: argparse.Namespace) -> Semaphores:
    from composer.fleet.etcd import Etcd, EtcdError, tls_context
    from composer.fleet.semaphore import Semaphores

    if (args.etcd_cert is None) != (args.etcd_key is None):
        raise KeelError("--etcd-cert and --etcd-key go together")
    try:
        tls = None
        if args.etcd_ca or args.etcd_cert:
            tls = tls_context(args.etcd_ca, args.etcd_cert, args.etcd_key)
        etcd = Etcd(args.etcd, tls=tls)
    except EtcdError as error:
        raise KeelError(
            str(error), hint="--etcd http://127.0.0.1:2379 (comma-separated for several)"
        ) from None
    groups = {}
    for text in getattr(args, "groups", None) or []:
        name, sep, slots = text.partition("=")
        if not sep or not slots.isdigit() or int(slots) < 1:
            raise KeelError(f"not a group: {text!r}", hint="write NAME=SLOTS, e.g. workers=2")
        groups[name] = int(slots)
    return Semaphores(etcd, getattr(args, "slots", 1), groups)


def cmd_serve(args: argparse.Namespace) -> int:
    from composer.fleet import server

    if args.slots < 1:
        raise KeelError("--slots must be at least 1")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise KeelError("--tls-cert and --tls-key go together")
    http = server.make_server(_semaphores(args), args.bind, args.port, args.tls_cert, args.tls_key)
    server.serve_forever(http)
    return 0


def _fail(error: Exception) -> KeelError:
    return KeelError(f"etcd: {error}", hint="is etcd running at --etcd?")


def cmd_holders(args: argparse.Namespace) -> int:
    from composer.fleet.etcd import EtcdError
    from composer.fleet.semaphore import SemaphoreError

    semaphores = _semaphores(args)
    try:
        if args.group:
            semaphore, version = semaphores.read(args.group)
            found = {args.group: semaphore} if version else {}
        else:
            found = semaphores.all()
    except (EtcdError, SemaphoreError) as error:
        raise _fail(error) from None
    if args.json:
        print(
            json.dumps(
                {g: {"total_slots": s.total_slots, "holders": s.holders} for g, s in found.items()},
                indent=2,
            )
        )
        return 0
    if not found:
        print("no semaphores in etcd" + (f" for group {args.group}" if args.group else ""))
    for group, semaphore in sorted(found.items()):
        holders = ", ".join(semaphore.holders) or "-"
        print(f"{group}: {len(semaphore.holders)}/{semaphore.total_slots} held: {holders}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from composer.fleet.etcd import EtcdError
    from composer.fleet.semaphore import SemaphoreError

    semaphores = _semaphores(args)
    try:
        _, version = semaphores.read(args.group)
        if version == 0:
            raise KeelError(f"group {args.group} has no semaphore in etcd")
        semaphore, held = semaphores.unlock(args.group, args.id)
    except (EtcdError, SemaphoreError) as error:
        raise _fail(error) from None
    if not held:
        raise KeelError(
            f"{args.id} holds no slot in group {args.group}",
            hint=f"`keel fleetlock holders --etcd {args.etcd} {args.group}` lists the holders",
        )
    print(
        f"released {args.id} in group {args.group}; "
        f"{len(semaphore.holders)}/{semaphore.total_slots} held"
    )
    return 0


def register(verbs: VerbGroup) -> None:
    fleetlock = verbs.add_parser(
        "fleetlock", help="FleetLock reboot coordination on etcd: serve, holders, release"
    )
    sub = fleetlock.add_subparsers(dest="fleetlock_verb", metavar="VERB", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--etcd", required=True, metavar="URL", help="etcd client URL(s), comma-separated"
        )
        parser.add_argument("--etcd-ca", type=Path, help="CA of etcd's https certificate (PEM)")
        parser.add_argument("--etcd-cert", type=Path, help="client certificate for etcd (PEM)")
        parser.add_argument("--etcd-key", type=Path, help="the client certificate's key (PEM)")

    serve = sub.add_parser("serve", help="answer FleetLock requests; state in etcd")
    common(serve)
    serve.add_argument("--bind", default="127.0.0.1", help="address (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=3333, help="port (default %(default)s; 0: free one)"
    )
    serve.add_argument("--slots", type=int, default=1, help="slots of groups not named (default 1)")
    serve.add_argument(
        "--group", action="append", default=[], metavar="NAME=SLOTS", dest="groups",
        help="slots of one group, when its semaphore is first created (repeatable)",
    )  # fmt: skip
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    serve.set_defaults(func=cmd_serve)

    holders = sub.add_parser("holders", help="list each group's slots and holders")
    common(holders)
    holders.add_argument("group", nargs="?", help="only this group")
    holders.add_argument("--json", action="store_true", help="print JSON")
    holders.set_defaults(func=cmd_holders)

    release = sub.add_parser("release", help="free the slot of a holder that is gone")
    common(release)
    release.add_argument("group")
    release.add_argument("id")
    release.set_defaults(func=cmd_release)
