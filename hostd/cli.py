"""keelctl: the host's command line. Every verb is a request to hostd's API, but
install, which runs here as root (it copies this host to another disk: hostd/install)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from hostd.install.errors import InstallError

# The same path as hostd.api.SOCKET, not imported from there: that would load the
# updater and python-tuf, and keelctl should start fast on a slow machine.
SOCKET = Path("/run/keel/hostd.sock")
OS_RELEASE = Path("/usr/lib/os-release")
# Writing a slot takes minutes on slow disks (and under emulation); wait for it.
VERB_TIMEOUT = 3600.0
# hostd answers status and history at once, even during an update.
QUERY_TIMEOUT = 60.0


class ApiError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


def call(
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    socket_path: Path = SOCKET,
    timeout: float = VERB_TIMEOUT,
) -> Any:
    connection = _UnixConnection(socket_path, timeout=timeout)
    try:
        payload = json.dumps(body or {}).encode()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = json.loads(response.read() or b"null")
    except (FileNotFoundError, ConnectionRefusedError):
        raise ApiError(
            f"hostd is not running (no {socket_path}); `systemctl status keel-hostd`"
        ) from None
    # systemd holds the socket (keel-hostd.socket) and starts hostd on a connection: a
    # hostd that fails to start leaves the connection unanswered, then closed.
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        raise ApiError(
            "hostd closed the connection without answering (did it fail to start?); "
            "`systemctl status keel-hostd`"
        ) from None
    except TimeoutError:
        raise ApiError(
            f"hostd did not answer within {timeout:.0f}s; `systemctl status keel-hostd`"
        ) from None
    finally:
        connection.close()
    if response.status != 200:
        raise ApiError(
            data.get("error", f"HTTP {response.status}") if isinstance(data, dict) else str(data)
        )
    return data


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def show_status(status: dict[str, Any]) -> str:
    from hostd.state import Phase  # here: only `status` needs it, and keelctl starts fast

    booted, other = status["booted"], status["other"]
    lines = [
        f"image:    {status['image']} ({status['architecture']})",
        f"booted:   {booted['version']} from slot {booted['slot']} ({booted['state']})",
        f"other:    slot {other['slot']}: "
        + (f"{other['version']} ({other['state']})" if other["version"] else "empty"),
    ]
    if other.get("failed"):
        lines.append(f"          failed: {other['failed']}")
    phase = status["phase"]
    if phase != Phase.IDLE:
        progress = status.get("progress") or {}
        done = (
            f" {progress['done'] * 100 // max(progress['total'], 1)}%"
            if progress.get("total")
            else ""
        )
        lines.append(f"update:   {phase} {status.get('target_version') or ''}{done}")
    last = status.get("last_result")
    if last:
        lines.append(f"last:     {last['result']} {last['version'] or ''} at {_when(last['at'])}")
        lines.append(f"          {last['reason']}")
    transfer = status.get("last_transfer")
    if transfer and transfer.get("full"):
        lines.append(
            f"download: {transfer['mode']}, {_mb(transfer['downloaded'])} of a "
            f"{_mb(transfer['full'])} bundle "
            f"({transfer['downloaded'] * 100 / transfer['full']:.1f}%)"
        )
    for version, reason in (status.get("failed_versions") or {}).items():
        lines.append(f"skipped:  {version}: {reason}")
    root_verity = status.get("root_verity")
    if root_verity:
        lines.append(
            "root:     dm-verity, every block read so far matches the signed root hash"
            if root_verity == "verified"
            else "root:     dm-verity found a CHANGED BLOCK in the booted slot"
        )
    if "secure_boot" in status:
        lines.append(
            "boot:     Secure Boot on: the firmware started only what the owner's db key signed"
            if status["secure_boot"]
            else "boot:     Secure Boot off"
        )
    var = status.get("var")
    if var:
        lines.append(
            f"var:      {_gib(var['filesystem'])} ({_gib(var['available'])} free) on "
            f"{var['device']}, a {_gib(var['partition'])} partition of a {_gib(var['disk'])} disk"
        )
    for warning in status.get("warnings") or []:
        lines.append(f"warning:  {warning}")
    lines += _fleet_lines(status.get("fleet") or {})
    policy = status.get("policy")
    if isinstance(policy, dict):
        window = policy["window"]
        lines.append(
            f"policy:   repository {policy['repository'] or '(none)'}, check every "
            f"{policy['check_interval']}, reboot {policy['reboot']}"
            + (
                f" ({','.join(window['days'])} {window['start']} for {window['duration']})"
                if policy["reboot"] == "window"
                else ""
            )
        )
    else:
        lines.append(f"policy:   {policy}")
    return "\n".join(lines)


def _fleet_lines(fleet: dict[str, Any]) -> list[str]:
    """The FleetLock slot and the server's last answer; versions a rollout holds back."""
    lines = []
    lock = fleet.get("lock") or {}
    answer = lock.get("last_answer")
    if lock.get("held") or answer:
        held = (
            f"held for {lock.get('version')} in group {lock.get('group')}"
            if lock.get("held")
            else "not held"
        )
        if lock.get("held_after_failure"):
            held += f" (kept: {lock['held_after_failure']} rolled back)"
        lines.append(f"lock:     {held}")
    if answer:
        said = (
            "200 OK"
            if answer["status"] == 200
            else (f"{answer['status'] or 'no answer'} {answer['kind']}: {answer['value']}")
        )
        lines.append(
            f"          last answer to {answer['endpoint']} at {_when(answer['at'])}: {said}"
        )
    for version, why in (fleet.get("held_back") or {}).items():
        lines.append(f"waiting:  {version}: {why}")
    return lines


def cmd_status(args: argparse.Namespace) -> Any:
    status = call("GET", "/v1/status", timeout=QUERY_TIMEOUT)
    return status if args.json else show_status(status)


def cmd_check(args: argparse.Namespace) -> Any:
    result = call("POST", "/v1/check")
    if args.json:
        return result
    if result["available"]:
        return f"{result['available']} is available (booted: {result['booted']})"
    return f"up to date ({result['booted']})"


def cmd_update(args: argparse.Namespace) -> Any:
    bundle = str(Path(args.bundle).resolve()) if args.bundle else None
    result = call(
        "POST", "/v1/update", {"bundle": bundle, "metadata": args.metadata, "reboot": args.reboot}
    )
    if args.json:
        return result
    if result["result"] == "up-to-date":
        return f"up to date ({result['version']})"
    then = (
        "rebooting now"
        if result.get("rebooting")
        else "reboot to start it (`keelctl update --reboot` or the policy)"
    )
    return f"{result['version']} {result['result']}; {then}"


def cmd_rollback(args: argparse.Namespace) -> Any:
    result = call("POST", "/v1/rollback", {"reboot": not args.no_reboot})
    if args.json:
        return result
    return f"next boot: {result['to']}" + ("; rebooting now" if result["rebooting"] else "")


def cmd_history(args: argparse.Namespace) -> Any:
    events = call("GET", "/v1/history", timeout=QUERY_TIMEOUT)
    if args.json:
        return events
    lines = []
    for event in events:
        detail = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "event") and v)
        lines.append(f"{_when(event.get('at'))}  {event.get('event', '?'):<11} {detail}")
    return "\n".join(lines) or "no update events yet"


def _install_config(path: Path) -> bytes:
    """The config file's bytes, validated as first boot will read them."""
    from hostd.ignition.errors import ConfigError

    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InstallError(f"cannot read {path}: {error.strerror}") from None
    try:
        from hostd.ignition.config import parse_config

        parse_config(raw)
    except ConfigError as error:
        butane = not raw.lstrip().startswith(b"{")
        hint = (
            "; this host reads Ignition JSON: translate Butane on the build machine "
            "(`keel butane FILE.bu -o FILE.ign`)"
            if butane
            else ""
        )
        raise InstallError(f"{path}: {error}{hint}") from None
    return raw


def cmd_install(args: argparse.Namespace) -> Any:
    from hostd.install.installer import install

    if os.geteuid() != 0:
        raise InstallError("keelctl install writes a disk: run it as root")
    config = _install_config(Path(args.config)) if args.config else None

    def confirm(question: str) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InstallError(f"{question} Add --yes to go on; nothing was written")
        return input(f"{question}\nType yes to go on: ").strip() == "yes"

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    done = install(args.target, config, confirm, say)
    if args.json:
        return {
            "version": done.source.version,
            "target": done.disk.node,
            "root_sha256": done.root_sha256,
            "seconds": round(done.seconds, 1),
        }
    with_config = f", with the config from {args.config}" if config else ""
    return (
        f"installed {done.source.name} {done.source.version} on {done.disk.node} "
        f"in {done.seconds:.0f}s{with_config}; root-a verified (sha256 {done.root_sha256[:12]}...)."
        f"\nPower off, remove this boot medium, and boot from {done.disk.node}: its first "
        "boot grows var, makes a new identity and applies the config."
    )


VERBS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "status": cmd_status,
    "check": cmd_check,
    "update": cmd_update,
    "rollback": cmd_rollback,
    "history": cmd_history,
    "install": cmd_install,
}


def version(os_release: Path = OS_RELEASE) -> str:
    """The keel package's version where it is installed (a checkout, a wheel). An image
    carries hostd as bare files, without package metadata: there the image's own
    version stands in, since that build is what put this hostd there."""
    from importlib import metadata

    try:
        return metadata.version("keel")
    except metadata.PackageNotFoundError:
        pass
    fields = _os_release(os_release)
    if "IMAGE_VERSION" in fields:
        return f"from image {fields.get('IMAGE_ID', '?')} {fields['IMAGE_VERSION']}"
    return "(version unknown)"


def _os_release(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.partition("=") for line in lines if "=" in line)
    return {key.strip(): value.strip().strip("\"'") for key, _, value in pairs}


class _PrintVersion(argparse.Action):
    """--version, looked up only when asked: metadata lookups cost keelctl's startup."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"keelctl {version()}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="keelctl", description="Keel host: updates and rollback")
    top.add_argument("--version", action=_PrintVersion, help="print keelctl's version and exit")
    verbs = top.add_subparsers(dest="verb", required=True)
    for name, text in (
        ("status", "booted and other slot, update state, last result, policy"),
        ("check", "ask the update repository for a newer version"),
        ("update", "install the newest version (or --bundle FILE) into the other slot"),
        ("rollback", "boot the other slot's version next (data on /var is kept)"),
        ("history", "update events on this host"),
    ):
        verb = verbs.add_parser(name, help=text, description=text)
        verb.add_argument("--json", action="store_true", help="print JSON")
        if name == "update":
            verb.add_argument(
                "--bundle", metavar="FILE",
                help="a .keelbundle file (offline); it must be listed in the repository's "
                "signed targets metadata, read from --metadata or the policy's repository",
            )  # fmt: skip
            verb.add_argument(
                "--metadata", metavar="URL",
                help="repository to verify against: http(s)://... or file:///path (a copy "
                "of the repository, e.g. on removable media); default: the policy's",
            )  # fmt: skip
            verb.add_argument("--reboot", action="store_true", help="reboot into it when installed")
        if name == "rollback":
            verb.add_argument("--no-reboot", action="store_true", help="only switch, reboot later")
    text = "copy the booted version to another disk (new identity, fresh var), verified"
    verb = verbs.add_parser("install", help=text, description=text)
    verb.add_argument("target", metavar="TARGET", help="a whole disk, such as /dev/nvme0n1")
    verb.add_argument(
        "--config", metavar="FILE.ign",
        help="Ignition config for the new disk's first boot, validated before anything "
        "is written (translate Butane on the build machine with `keel butane`)",
    )  # fmt: skip
    verb.add_argument("--yes", action="store_true", help="do not ask before erasing TARGET")
    verb.add_argument("--json", action="store_true", help="print JSON")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = VERBS[args.verb](args)
    except (ApiError, InstallError) as error:
        print(f"keelctl {args.verb}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if not isinstance(result, str) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
