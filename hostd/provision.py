"""First-boot provisioning: apply an Ignition (spec v3) config before sshd and the
container engine start (keel-provision.service), once per machine.

Sources, first found wins: QEMU fw_cfg under Keel's key, then under Fedora CoreOS's
key (so existing CoreOS launch scripts work), then a file on the ESP (bare metal),
then a config baked into the image by the composer.

The whole config is validated before anything is written (hostd/ignition/). A config
that fails leaves the machine booting: the reason goes to the console and the journal
and into the state file, and nothing of it is applied."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hostd.files import write_atomically
from hostd.ignition.apply import apply_config
from hostd.ignition.config import Config, ConfigError, parse_config

FW_CFG = "sys/firmware/qemu_fw_cfg/by_name"
CONFIG_SOURCES = (
    f"{FW_CFG}/opt/org.keel/config/raw",
    f"{FW_CFG}/opt/com.coreos/config/raw",
    "efi/keel/provision.ign",
    "usr/lib/keel/provision.ign",
)
STATE_FILE = "var/lib/keel/provisioned.json"

__all__ = ["ConfigError", "main", "parse_config", "provision"]


def say(message: str) -> None:
    # stdout goes to the journal and the console (see keel-provision.service).
    print(f"keel-provision: {message}", flush=True)


def find_config(root: Path) -> tuple[str, bytes] | None:
    for source in CONFIG_SOURCES:
        try:
            return f"/{source}", (root / source).read_bytes()
        except OSError:
            continue
    return None


def write_state(root: Path, state: dict[str, Any]) -> None:
    write_atomically(root / STATE_FILE, (json.dumps(state, indent=2) + "\n").encode())


def _activate(config: Config) -> None:
    """On the live system: make systemd see new units and start the enabled ones now
    (provisioning runs while the boot transaction is already under way)."""
    if not config.units:
        return
    subprocess.run(["systemctl", "daemon-reload"], check=False)
    for unit in config.units:
        if unit.enabled and not unit.name.rpartition(".")[0].endswith("@"):
            say(f"starting {unit.name}")
            subprocess.run(["systemctl", "start", "--no-block", unit.name], check=False)


def provision(root: Path = Path("/"), live: bool = False) -> dict[str, Any]:
    """Find, validate and apply the config under root; returns the state written."""
    state: dict[str, Any] = {"time": int(time.time())}
    found = find_config(root)
    if found is None:
        say("no provisioning config found; nothing to apply")
        state.update(result="none")
        write_state(root, state)
        return state
    source, raw = found
    state.update(source=source, sha256=hashlib.sha256(raw).hexdigest())
    try:
        config = parse_config(raw)
        log = apply_config(root, config)
    except ConfigError as error:
        say(f"config from {source} was NOT applied (nothing of it was): {error}")
        state.update(result="failed", error=str(error))
        write_state(root, state)
        return state
    except (OSError, subprocess.SubprocessError) as error:
        # Validation passed but the machine refused a write: say so, keep booting.
        say(f"config from {source} failed while applying: {error}")
        state.update(result="failed", error=str(error))
        write_state(root, state)
        return state
    for line in log:
        say(line)
    say(f"applied config from {source}: {config.summary()}")
    state.update(
        result="applied",
        version=config.version,
        users=[u.name for u in config.users],
        changes=log,
    )
    write_state(root, state)
    if live:
        _activate(config)
    return state


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path("/")
    if argv:  # argparse only when asked: every import costs seconds under emulation
        import argparse

        parser = argparse.ArgumentParser(prog="keel-provision", description=__doc__)
        parser.add_argument("--root", type=Path, default=root, help="apply under this root")
        root = parser.parse_args(argv).root
    provision(root, live=root == Path("/"))
    # Always 0: a bad config must not fail the boot; the reason is logged and kept.
    return 0


if __name__ == "__main__":
    sys.exit(main())
