"""Check a provisioning config file exactly as a Keel host would read it: Butane is
translated first (local files relative to its folder), then the host's own parser
(hostd.ignition.config.parse_config) reads the Ignition it gives. `keel config check`
and `keel install --config` both go through here, so they accept the same files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from composer.core.errors import KeelError
from hostd.ignition.config import ConfigError, parse_config


@dataclass(frozen=True)
class CheckedConfig:
    kind: str  # "Butane" or "Ignition"
    ignition: bytes  # what a host gets: the Ignition JSON


def check_config(data: bytes, *, name: str, files_dir: Path | None = None) -> CheckedConfig:
    """The Ignition a host would apply for data; KeelError naming every problem."""
    from composer.provisioning.butane import host_config

    try:
        # Ignition is a JSON object; anything else is read as Butane, so a broken Butane
        # file gets Butane's errors rather than "not valid JSON".
        if data.lstrip()[:1] != b"{":
            return CheckedConfig("Butane", host_config(data, name=name, files_dir=files_dir))
        parse_config(data)
        return CheckedConfig("Ignition", data)
    except ConfigError as error:
        raise KeelError(f"{name}: {error}") from None
    except RecursionError:
        raise KeelError(f"{name}: nested too deeply") from None


def check_config_file(path: Path, files_dir: Path | None = None) -> CheckedConfig:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeelError(f"{path}: cannot read: {error.strerror}") from None
    return check_config(data, name=str(path), files_dir=files_dir or path.parent)
