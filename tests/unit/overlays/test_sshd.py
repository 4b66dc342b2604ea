"""sshd's configuration and the SSH host keys of a machine
(overlays/base/usr/lib/keel/ssh-host-keys, run by keel-ssh-keygen.service on every
boot), with the real ssh-keygen: every key sshd is configured with is made, written
atomically, mended when a power cut left it empty or cut short, and kept otherwise."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from composer.core.paths import OVERLAYS_DIR

BASE = OVERLAYS_DIR / "base"
SCRIPT = BASE / "usr/lib/keel/ssh-host-keys"
UNIT = BASE / "usr/lib/systemd/system/keel-ssh-keygen.service"
KEEL_CONF = BASE / "etc/ssh/sshd_config.d/keel.conf"


def settings(text: str) -> dict[str, list[str]]:
    """Keyword (lower case) -> values in order, as sshd reads a config file."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and not words[0].startswith("#"):
            found.setdefault(words[0].lower(), []).append(words[1].strip())
    return found


@pytest.fixture
def etc_ssh(tmp_path: Path) -> Path:
    """An /etc/ssh laid out as Debian's and Keel's: the main file includes the folder,
    Keel's file there names the host keys (in Keel's own words)."""
    ssh = tmp_path / "etc/ssh"
    (ssh / "sshd_config.d").mkdir(parents=True)
    (ssh / "sshd_config").write_text(
        f"Include {ssh}/sshd_config.d/*.conf\n#HostKey {ssh}/ssh_host_rsa_key\n"
    )
    keel = KEEL_CONF.read_text().replace("/etc/ssh", str(ssh))
    (ssh / "sshd_config.d/keel.conf").write_text(keel)
    return ssh


def run_script(ssh: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, ssh / "sshd_config"], capture_output=True, text=True, check=True)


def fingerprint(key: Path) -> str:
    return subprocess.run(
        ["ssh-keygen", "-l", "-f", key], capture_output=True, text=True, check=True
    ).stdout


def assert_usable_pair(key: Path, key_type: str) -> None:
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", key], capture_output=True, text=True, check=True
    ).stdout
    assert public.split()[:2] == key.with_name(key.name + ".pub").read_text().split()[:2]
    assert f"({key_type})" in fingerprint(key)
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.with_name(key.name + ".pub").stat().st_mode & 0o777 == 0o644


def test_keel_conf_turns_x11_forwarding_off() -> None:
    assert settings(KEEL_CONF.read_text())["x11forwarding"] == ["no"]


def test_makes_every_key_sshd_is_configured_with(etc_ssh: Path) -> None:
    configured = settings(KEEL_CONF.read_text())["hostkey"]
    assert configured == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ecdsa_key"]
    run_script(etc_ssh)
    assert_usable_pair(etc_ssh / "ssh_host_ed25519_key", "ED25519")
    assert_usable_pair(etc_ssh / "ssh_host_ecdsa_key", "ECDSA")
    # Nothing else: no temporary file left, no key sshd is not configured with.
    assert sorted(p.name for p in etc_ssh.iterdir()) == [
        "ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub",
        "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
        "sshd_config", "sshd_config.d",
    ]  # fmt: skip


def test_keeps_good_keys_and_replaces_one_cut_short(etc_ssh: Path) -> None:
    run_script(etc_ssh)
    ed25519, ecdsa = etc_ssh / "ssh_host_ed25519_key", etc_ssh / "ssh_host_ecdsa_key"
    kept = fingerprint(ed25519)
    cut_short = fingerprint(ecdsa)
    ecdsa.write_bytes(ecdsa.read_bytes()[:100])  # a power cut in the middle of the write
    result = run_script(etc_ssh)
    assert fingerprint(ed25519) == kept
    assert fingerprint(ecdsa) != cut_short
    assert_usable_pair(ecdsa, "ECDSA")
    assert "does not load" in result.stdout
    assert run_script(etc_ssh).stdout == ""  # all good now: nothing to do, nothing said


def test_an_empty_key_is_replaced_and_a_missing_pub_is_given_back(etc_ssh: Path) -> None:
    run_script(etc_ssh)
    ed25519, ecdsa = etc_ssh / "ssh_host_ed25519_key", etc_ssh / "ssh_host_ecdsa_key"
    kept = fingerprint(ecdsa)
    ed25519.write_bytes(b"")
    (etc_ssh / "ssh_host_ecdsa_key.pub").unlink()
    run_script(etc_ssh)
    assert_usable_pair(ed25519, "ED25519")
    assert_usable_pair(ecdsa, "ECDSA")
    assert fingerprint(ecdsa) == kept


def test_what_a_crash_before_the_rename_left_is_cleared(etc_ssh: Path) -> None:
    # The temporary files of a run cut off before its renames; the key itself missing.
    (etc_ssh / ".ssh_host_ecdsa_key.new").write_bytes(b"-----BEGIN OPENSSH PRI")
    (etc_ssh / ".ssh_host_ecdsa_key.new.pub").write_bytes(b"")
    run_script(etc_ssh)
    assert_usable_pair(etc_ssh / "ssh_host_ecdsa_key", "ECDSA")
    assert not list(etc_ssh.glob(".*"))


def test_a_pub_of_another_key_is_replaced_by_the_keys_own(etc_ssh: Path) -> None:
    run_script(etc_ssh)
    ed25519 = etc_ssh / "ssh_host_ed25519_key"
    kept = fingerprint(ed25519)
    (etc_ssh / "ssh_host_ed25519_key.pub").write_bytes(
        (etc_ssh / "ssh_host_ecdsa_key.pub").read_bytes()
    )
    run_script(etc_ssh)
    assert_usable_pair(ed25519, "ED25519")
    assert fingerprint(ed25519) == kept


def test_reads_hostkey_lines_as_sshd_does(tmp_path: Path) -> None:
    """Keywords in any case, '=' or blanks, quotes, relative Include globs in order."""
    ssh = tmp_path / "ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "sshd_config").write_text(f"  include conf.d/*.conf\nHOSTKEY={ssh}/a_ecdsa_key\n")
    (ssh / "conf.d/20-b.conf").write_text(f'HostKey "{ssh}/c_ed25519_key"\n')
    (ssh / "conf.d/10-a.conf").write_text(f"# HostKey {ssh}/commented_rsa_key\n"
                                          f"hostkey {ssh}/b_ed25519_key\n")  # fmt: skip
    made = run_script(ssh).stdout.splitlines()
    assert [line.split()[2] for line in made] == [
        f"{ssh}/b_ed25519_key", f"{ssh}/c_ed25519_key", f"{ssh}/a_ecdsa_key"
    ]  # fmt: skip
    assert not (ssh / "commented_rsa_key").exists()


def test_without_hostkey_lines_makes_sshds_default_keys(tmp_path: Path) -> None:
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    (ssh / "sshd_config").write_text("PermitRootLogin no\n")
    run_script(ssh)
    for name, key_type in (("rsa", "RSA"), ("ecdsa", "ECDSA"), ("ed25519", "ED25519")):
        assert_usable_pair(ssh / f"ssh_host_{name}_key", key_type)


def test_a_key_of_unknown_type_fails_the_unit_and_the_others_are_made(tmp_path: Path) -> None:
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    (ssh / "sshd_config").write_text(f"HostKey {ssh}/mystery_key\nHostKey {ssh}/k_ed25519_key\n")
    result = subprocess.run([SCRIPT, ssh / "sshd_config"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "cannot tell the key type" in result.stderr
    assert_usable_pair(ssh / "k_ed25519_key", "ED25519")


def test_the_unit_runs_the_script_on_every_boot_before_sshd() -> None:
    unit = UNIT.read_text()
    # No condition on a key file: an empty or cut-short key exists all the same.
    assert "Condition" not in unit
    assert "ExecStart=/usr/lib/keel/ssh-host-keys\n" in unit
    assert "Before=ssh.service " in unit
    assert SCRIPT.stat().st_mode & 0o111, "git must keep the script executable"
    assert textwrap.dedent(SCRIPT.read_text()).startswith("#!/bin/sh\n")
