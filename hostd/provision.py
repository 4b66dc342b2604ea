"""First-boot provisioning: apply an Ignition (spec v3) config before sshd and the
container engine start (keel-provision.service), once per machine.

Sources, first found wins: QEMU fw_cfg under Keel's key, then under Fedora CoreOS's
key (so existing CoreOS launch scripts work), then a file on the ESP (bare metal),
then a config baked into the image by the composer.

The whole config is validated before anything is written (hostd/ignition/). A config
that fails leaves the machine booting: the reason goes to the console and the journal
and into the state file, and nothing of it is applied. Whatever goes wrong, even a bug
(an unexpected exception while applying), is caught, logged and recorded the same
way: main() never raises, and the state file stops a failed config from being
retried blindly on every boot.

kernelArguments are written into the booted slot's loader entry on the ESP (its
`options` line) and kept in /var/lib/keel/kernel-arguments.json, from which hostd adds
them to every entry it writes later. The running kernel keeps its command line: they
take effect from the next boot (provisioning never reboots the machine).

storage.disks and storage.filesystems are partitioned and formatted first (see
hostd/ignition/storage.py). The config's mount and swap units (Butane's
with_mount_unit makes them, `RequiredBy=local-fs.target`) are started here, waiting
until they are active, before this unit ends: keel-provision.service is ordered before
docker.service and containerd.service, so on the first boot /var/lib/docker is mounted
before the engine starts, as local-fs.target makes sure on every later boot."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostd.formats import bootentry
from hostd.ignition.apply import apply_config
from hostd.ignition.config import Config, ConfigError, parse_config
from hostd.ignition.document import MAX_CONFIG_BYTES
from hostd.ignition.errors import ApplyError
from hostd.ignition.resolve import resolve
from hostd.ignition.safefs import Root
from hostd.ignition.tree import Tree

if TYPE_CHECKING:
    from hostd.esp import Entry, EspTree
    from hostd.ignition.blockdev import Machine
    from hostd.ignition.kernelargs import KernelArguments

FW_CFG = "sys/firmware/qemu_fw_cfg/by_name"
CONFIG_SOURCES = (
    f"{FW_CFG}/opt/org.keel/config/raw",
    f"{FW_CFG}/opt/com.coreos/config/raw",
    f"efi/{bootentry.ESP_CONFIG}",
    "usr/lib/keel/provision.ign",
)
STATE_FILE = "var/lib/keel/provisioned.json"
# A mount or swap unit of the config gets this long to become active (its fsck too).
MOUNT_TIMEOUT = 300

__all__ = ["ConfigError", "main", "parse_config", "provision"]


def say(message: str) -> None:
    # stdout goes to the journal and the console (see keel-provision.service).
    print(f"keel-provision: {message}", flush=True)


def find_config(root: Path) -> tuple[str, bytes] | None:
    for source in CONFIG_SOURCES:
        try:
            with (root / source).open("rb") as handle:
                # One byte over the limit is enough for parse_config to refuse it.
                return f"/{source}", handle.read(MAX_CONFIG_BYTES + 1)
        except OSError:
            continue
    return None


def write_state(root: Path, state: dict[str, Any]) -> None:
    """Atomically, through descriptors: a link at or above it is never followed."""
    data = (json.dumps(state, indent=2) + "\n").encode()
    with Root(root) as fs:
        fs.write_file(f"/{STATE_FILE}", data, 0o644)


def _record(root: Path, state: dict[str, Any]) -> None:
    try:
        write_state(root, state)
    except Exception as error:  # keep booting; the journal has the reason
        say(f"could not write /{STATE_FILE}: {error}")


def booted_entry(root: Path) -> tuple[EspTree, Entry]:
    """The loader entry this boot came from: the booted slot's (keel.slot= on the
    kernel command line) on the ESP. ConfigError if there is none to edit, or if
    Secure Boot is on: the unified kernel image then boots with its own signed command
    line and ignores the entry's."""
    # Imported only for a config with kernelArguments: imports cost seconds at first
    # boot under emulation.
    from hostd.esp import EspTree, secure_boot_enabled
    from hostd.slots import cmdline_slot

    if secure_boot_enabled(root / "sys/firmware/efi/efivars"):
        raise ConfigError(
            "kernelArguments cannot apply under Secure Boot: the kernel boots with the "
            "signed command line of its unified kernel image; put the arguments in the "
            "image definition's kernel.cmdline and build a new version"
        )
    try:
        slot = cmdline_slot((root / "proc/cmdline").read_text())
    except OSError as error:
        raise ConfigError(f"kernelArguments: cannot read /proc/cmdline: {error}") from None
    esp = EspTree(root / "efi")
    entry = esp.slot_entry(slot) if slot else None
    if entry is None:
        raise ConfigError(
            f"kernelArguments: no loader entry of the booted slot ({slot or 'unknown'}) "
            "on /efi to write them to"
        )
    return esp, entry


def apply_kernel_arguments(
    root: Path, arguments: KernelArguments, booted: tuple[EspTree, Entry]
) -> list[str]:
    """Keep the arguments for later entries, then edit the booted one; the log."""
    from hostd import cmdline

    tree = Tree(root)
    try:
        tree.write_file(f"/{cmdline.STATE_FILE}", cmdline.to_json(arguments), 0o644)
    finally:
        tree.close()
    esp, entry = booted
    words = cmdline.edit(esp.options(entry), arguments)
    if not esp.set_options(entry, words):
        return [*tree.log, f"unchanged: kernel arguments of {entry.filename}"]
    return [
        *tree.log,
        f"kernel arguments of {entry.filename} are now '{' '.join(words)}' (from the next boot)",
    ]


def _apply(root: Path, config: Config, machine: Machine | None = None) -> list[str]:
    """Apply everything the config asks for; ConfigError before any write if the
    machine cannot take it."""
    booted = booted_entry(root) if config.kernel_arguments else None
    log = apply_config(root, config, machine)
    if booted is not None:
        log += apply_kernel_arguments(root, config.kernel_arguments, booted)
    return log


def _is_mount(name: str) -> bool:
    return name.endswith((".mount", ".swap"))


def _mount_now(config: Config) -> list[str]:
    """On the live system: make systemd see the new units, then start the config's
    enabled mount and swap units and wait for them, so they are active before this
    unit ends and docker.service (ordered after it) starts. What happened, for the log;
    a unit that does not start is reported, not raised: the config is applied."""
    if not config.units:
        return []
    subprocess.run(["systemctl", "daemon-reload"], check=False)
    log = []
    for unit in config.units:
        if not (unit.enabled and _is_mount(unit.name)):
            continue
        say(f"starting {unit.name}")
        try:
            result = subprocess.run(
                ["systemctl", "start", "--", unit.name],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=MOUNT_TIMEOUT,
            )
            problem = "" if result.returncode == 0 else result.stderr.strip() or "failed"
        except subprocess.TimeoutExpired:
            problem = f"not active after {MOUNT_TIMEOUT}s"
        if problem:
            log.append(f"could not start {unit.name}: {problem} (journalctl -u {unit.name})")
        else:
            log.append(f"started {unit.name}")
    return log


def _activate(config: Config) -> None:
    """On the live system: start the other enabled units now (provisioning runs while
    the boot transaction is already under way); systemd was reloaded by _mount_now."""
    for unit in config.units:
        if (
            unit.enabled
            and not _is_mount(unit.name)
            and not unit.name.rpartition(".")[0].endswith("@")
        ):
            say(f"starting {unit.name}")
            subprocess.run(["systemctl", "start", "--no-block", "--", unit.name], check=False)


def provision(
    root: Path = Path("/"), live: bool = False, machine: Machine | None = None
) -> dict[str, Any]:
    """Find, validate and apply the config under root; returns the state written.
    machine: the block devices a config's storage.disks name (None: this machine's)."""
    state: dict[str, Any] = {"time": int(time.time())}
    found = find_config(root)
    if found is None:
        say("no provisioning config found; nothing to apply")
        state.update(result="none")
        _record(root, state)
        return state
    source, raw = found
    state.update(source=source, sha256=hashlib.sha256(raw).hexdigest())
    try:
        # Validated as a whole, then whatever it names over http(s) is fetched: a
        # fetch that fails leaves nothing written.
        config = resolve(raw)
        log = _apply(root, config, machine)
    except ConfigError as error:
        say(f"config from {source} was NOT applied (nothing of it was): {error}")
        state.update(result="failed", error=str(error))
        _record(root, state)
        return state
    except ApplyError as error:
        # Everything was checked, then a disk tool failed: nothing after it was applied.
        say(f"config from {source} failed while applying, nothing after this step: {error}")
        state.update(result="failed", error=str(error))
        _record(root, state)
        return state
    except Exception as error:
        # Validation passed but the machine refused a write, or a bug: say so, keep
        # booting, and record it so it is not retried blindly on every boot.
        say(f"config from {source} failed while applying: {type(error).__name__}: {error}")
        for line in traceback.format_exc().splitlines():
            say(line)
        state.update(result="failed", error=f"{type(error).__name__}: {error}")
        _record(root, state)
        return state
    if live:
        try:
            log += _mount_now(config)
        except Exception as error:  # applied; mounting is reported, not fatal
            log.append(f"could not start the mount units: {error}")
    for line in log:
        say(line)
    say(f"applied config from {source}: {config.summary()}")
    state.update(
        result="applied",
        version=config.version,
        users=[u.name for u in config.users],
        changes=log,
    )
    _record(root, state)
    if live:
        try:
            _activate(config)
        except Exception as error:  # applied and recorded; starting is best effort
            say(f"could not start the units: {error}")
    return state


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path("/")
    if argv:  # argparse only when asked: every import costs seconds under emulation
        import argparse

        parser = argparse.ArgumentParser(prog="keel-provision", description=__doc__)
        parser.add_argument("--root", type=Path, default=root, help="apply under this root")
        root = parser.parse_args(argv).root
    try:
        provision(root, live=root == Path("/"))
    except Exception as error:  # e.g. an unreadable root; never fail the boot
        say(f"provisioning failed: {type(error).__name__}: {error}")
    # Always 0: a bad config must not fail the boot; the reason is logged and kept.
    return 0


if __name__ == "__main__":
    sys.exit(main())
