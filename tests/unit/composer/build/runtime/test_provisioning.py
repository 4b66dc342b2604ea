"""The baked provisioning config: readable by root only, and a warning at build time
when it holds secrets (it ships in every image and every update bundle)."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from composer.build.context import BuildContext
from composer.build.partitions import plan_disk
from composer.build.pipeline import all_steps
from composer.build.runtime.provisioning import BAKED_CONFIG
from composer.core.progress import Progress
from composer.definition.model import ImageDefinition
from tests.unit.conftest import Project

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0 ops@laptop"
PASSWORD_HASH = "$6$rounds=4096$salt$" + "x" * 86


def openssh_private_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def pkcs8_private_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def run_bake_step(defn: ImageDefinition, out: Path) -> Path:
    """The pipeline's own step, quiet as under `keel build --json`; returns the tree."""
    ctx = BuildContext(
        definition=defn,
        definition_sha256="0" * 64,
        out=out,
        epoch=0,
        disk=plan_disk(defn.partitions, defn.name, defn.version),
        progress=Progress(quiet=True),
        work=out / ".work",
    )
    (bake,) = [step for title, step in all_steps() if title == "bake provisioning config"]
    bake(ctx)
    return ctx.tree


def load_with_config(
    project: Project, minimal: Callable[[str], str], name: str, text: str
) -> ImageDefinition:
    """A definition whose provisioning.config (on line 4) is this file."""
    (project.images / name).write_text(text)
    return project.load(minimal(f"provisioning: {{config: {name}}}\n"))


BUTANE_WITH_PASSWORD = f"""\
variant: keel
version: 1.0.0
passwd:
  users:
    - name: ops
      ssh_authorized_keys: [{SSH_KEY}]
      password_hash: "{PASSWORD_HASH}"
"""

CLEAN_BUTANE = f"""\
variant: keel
version: 1.0.0
passwd:
  users:
    - name: ops
      groups: [docker]
      ssh_authorized_keys: [{SSH_KEY}]
storage:
  files:
    - path: /etc/app/config.toml
      contents:
        inline: |
          listen = "0.0.0.0:8080"
          # a public certificate is not a secret
          -----BEGIN CERTIFICATE-----
          MIIBszCCAVmgAwIBAgIUQ
          -----END CERTIFICATE-----
"""


def test_baked_config_is_readable_by_root_only(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    defn = load_with_config(project, minimal, "host.bu", CLEAN_BUTANE)
    baked = run_bake_step(defn, tmp_path / "out") / BAKED_CONFIG
    status = os.stat(baked)
    assert stat.S_IMODE(status.st_mode) == 0o600
    assert (status.st_uid, status.st_gid) == (0, 0)
    assert json.loads(baked.read_bytes())["passwd"]["users"][0]["name"] == "ops"


def test_clean_baked_config_gives_no_warning(
    project: Project,
    minimal: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    defn = load_with_config(project, minimal, "host.bu", CLEAN_BUTANE)
    run_bake_step(defn, tmp_path / "out")
    assert capsys.readouterr().err == ""


def ignition_with_password() -> str:
    user = {"name": "ops", "passwordHash": PASSWORD_HASH}
    return json.dumps({"ignition": {"version": "3.2.0"}, "passwd": {"users": [user]}})


@pytest.mark.parametrize(
    ("name", "text"),
    [("host.bu", BUTANE_WITH_PASSWORD), ("host.ign", ignition_with_password())],
)
def test_baked_password_hash_is_warned_about_by_field_and_line(
    project: Project,
    minimal: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
) -> None:
    defn = load_with_config(project, minimal, name, text)
    run_bake_step(defn, tmp_path / "out")
    assert capsys.readouterr().err == (
        f"{project.images / 'test.yaml'}:4: warning: field 'provisioning.config' names "
        f"'{name}', which is baked into the image and every update bundle, and it holds a "
        "password hash for user 'ops'; put secrets in a per-machine config (fw_cfg or the "
        "ESP) instead, see docs/provisioning.md\n"
    )


def butane_inline_key() -> str:
    indented = "".join(f"          {line}\n" for line in openssh_private_key().splitlines())
    return (
        "variant: keel\nversion: 1.0.0\nstorage:\n  files:\n"
        "    - path: /root/.ssh/id_ed25519\n      mode: 0600\n"
        f"      contents:\n        inline: |\n{indented}"
    )


def ignition_base64_key() -> str:
    url = "data:;base64," + base64.b64encode(pkcs8_private_key()).decode()
    entry = {"path": "/etc/ssl/private/server.key", "contents": {"source": url}}
    return json.dumps({"ignition": {"version": "3.4.0"}, "storage": {"files": [entry]}})


def ignition_appended_key() -> str:
    url = "data:," + quote(pkcs8_private_key().decode(), safe="")
    entry = {"path": "/etc/ssl/private/server.key", "append": [{"source": url}]}
    return json.dumps({"ignition": {"version": "3.4.0"}, "storage": {"files": [entry]}})


@pytest.mark.parametrize(
    ("name", "make", "path"),
    [
        ("host.bu", butane_inline_key, "/root/.ssh/id_ed25519"),
        ("host.ign", ignition_base64_key, "/etc/ssl/private/server.key"),
        ("host.ign", ignition_appended_key, "/etc/ssl/private/server.key"),
    ],
)
def test_baked_private_key_is_warned_about_by_field_and_line(
    project: Project,
    minimal: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[], str],
    path: str,
) -> None:
    defn = load_with_config(project, minimal, name, make())
    tree = run_bake_step(defn, tmp_path / "out")
    assert b"PRIVATE KEY" not in (tree / BAKED_CONFIG).read_bytes()  # only inside data: URLs
    err = capsys.readouterr().err
    assert err.startswith(
        f"{project.images / 'test.yaml'}:4: warning: field 'provisioning.config' names '{name}'"
    )
    assert f"it holds a private key in the contents of {path}; put secrets in a per-machine" in err


def test_private_key_from_a_local_file_is_warned_about(
    project: Project,
    minimal: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (project.images / "server.key").write_bytes(pkcs8_private_key())
    butane = (
        "variant: keel\nversion: 1.0.0\nstorage:\n  files:\n"
        "    - path: /etc/ssl/private/server.key\n      contents: {local: server.key}\n"
    )
    defn = load_with_config(project, minimal, "host.bu", butane)
    run_bake_step(defn, tmp_path / "out")
    assert "a private key in the contents of /etc/ssl/private/server.key" in capsys.readouterr().err
