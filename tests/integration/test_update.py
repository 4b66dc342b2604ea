"""A/B updates in QEMU under UEFI Secure Boot: one VM, its firmware enrolled with the
session's own keys, lives through a chain of updates and rollbacks, as a host in the
field would (boots are the expensive part under TCG, so the scenarios share them, in
this order):

  1. v1 boots with Secure Boot on, from its signed unified kernel image and that
     image's own command line; the first update to v2 (v1 plus one package) is
     killed (QEMU SIGKILL) while it writes the slot: the host boots v1 again and
     status says the update was interrupted
  2. the repository rotates its targets and root keys (root v3); the retried update
     succeeds through that chain, by delta: the host fetches only the blocks it
     lacks (counted by this test's server) and keeps those the killed attempt wrote;
     v2 boots from slot b; a Docker volume, an /etc change and the machine-id are
     unchanged
  3. `keelctl rollback` returns to v1 in slot a, data kept
  4. a tampered bundle and block index, and expired metadata, are refused; slot b is
     unchanged
  5. v3 fails its health gate: the host rolls back to v1 by itself; status says why
  6. v5 (v2 plus one more package) installs by delta from v1, skipping the published
     v2 and v3; then a bit of its slot flips (as a failing disk, or someone with the
     disk, would do): dm-verity restarts each try, and after three tries systemd-boot
     boots v1 again by itself; status says so (the one scenario of a version that
     cannot boot: the counter that ends it is the same whatever stops the boot)

Images are built from tests/integration/images/up-*.yaml with a trust root made by
`keel keygen` for this session; the repository is served on loopback and the guest
reaches it as 10.0.2.2 (QEMU user networking)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from composer.core.errors import KeelError
from composer.core.paths import vm_root
from composer.publish import repository
from composer.testing import KeelVM, countingserver
from composer.vm import runner
from composer.vm.image import disk_format
from composer.vm.vmdir import vm_dir
from tests.integration import guests
from tests.integration.guests import BOOT_ID, UpdateImages

pytestmark = pytest.mark.integration

VERSIONS = {
    "1.0.0": "up-v1",
    "2.0.0": "up-v2",
    "3.0.0": "up-v3-unhealthy",
    "5.0.0": "up-v5",
}
UPDATE_TIMEOUT = 900
# Issue 16's goal for a version one package apart: at most this share of the bundle.
DELTA_GOAL = 0.10


class Chain:
    """The session's keys, builds, repository and the one VM (replaced after a kill)."""

    def __init__(self, work: Path, images: UpdateImages) -> None:
        self.work = work
        self.images = images
        self.keys = images.copy_keys(work / "keys")
        self.repo = work / "repo"
        self.vm: KeelVM | None = None
        self.url = ""
        self.server: countingserver.CountingServer | None = None

    def build(self, version: str) -> Path:
        return self.images.build(VERSIONS[version])

    def publish(self, version: str, now: datetime | None = None, **expiries: timedelta) -> None:
        repository.publish(
            self.repo,
            self.images.path(VERSIONS[version]),
            self.keys,
            expiries=expiries,
            force=True,
            now=now,
        )

    @property
    def host(self) -> KeelVM:
        assert self.vm is not None
        return self.vm

    def bundle_size(self, version: str) -> int:
        bundles = self.images.path(VERSIONS[version]).glob("bundle/*.keelbundle")
        return next(bundles).stat().st_size

    def update_by_delta(self, version: str) -> dict[str, Any]:
        """`keelctl update` to version; asserts it came by delta, within the goal as
        this test's server counted the bytes; the transfer hostd recorded."""
        assert self.server is not None
        self.server.reset()
        code, out = self.keelctl("update")
        assert code == 0, out
        status = self.status()
        transfer: dict[str, Any] = status["last_transfer"]
        assert status["target_version"] == version, status
        assert transfer["mode"] == "delta", (transfer, self.sh("keelctl history | tail -n 5"))
        full = self.bundle_size(version)
        assert transfer["full"] == full
        # hostd's own count is the chunks and the index; the server's adds metadata
        # and HTTP headers: both must be within the goal.
        assert transfer["downloaded"] <= self.server.sent <= DELTA_GOAL * full, (
            self.server.sent, full, transfer,
        )  # fmt: skip
        return transfer

    def sh(self, command: str, timeout: float = 120) -> str:
        return self.host.run(command, check=True, timeout=timeout).stdout

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.sh("keelctl status --json"))
        return result

    def keelctl(self, args: str, timeout: float = UPDATE_TIMEOUT) -> tuple[int, str]:
        result = self.host.run(f"keelctl {args}", timeout=timeout)
        return result.exit_status, result.stdout + result.stderr

    def slot_sha256(self, slot: str) -> str:
        return self.sh(f"sha256sum /dev/disk/by-partlabel/root-{slot}", timeout=300).split()[0]

    def version(self) -> str:
        return self.sh(". /usr/lib/keel/release; echo $KEEL_IMAGE_VERSION").strip()

    def wait_for_version(self, version: str, after_boot: str, timeout: float = 900) -> None:
        """Wait (through any reboots the host does by itself) for SSH in version."""
        guests.wait_for_version(self.host, version, after_boot, timeout)

    def wait_for_hostd(self) -> None:
        """The boot transaction done (health gate included) and hostd answering."""
        guests.wait_for_hostd(self.host)

    def data(self) -> dict[str, str]:
        return {
            "machine-id": self.sh("cat /etc/machine-id").strip(),
            "etc": self.sh("cat /etc/keel-up-test.conf").strip(),
            "volume": self.sh(
                "cat $(docker volume inspect -f '{{.Mountpoint}}' keel-up-test)/data"
            ).strip(),
        }


@pytest.fixture(scope="module")
def chain(update_images: UpdateImages) -> Iterator[Chain]:
    # Not pytest's tmp_path_factory: its numbered folders are shared by every pytest
    # session of this user and pruned to the newest three when one starts, so during
    # this module's 15+ minutes other sessions deleted the signing keys under it.
    chain = Chain(Path(tempfile.mkdtemp(prefix="keel-update-test-")), update_images)
    for version in VERSIONS:
        chain.build(version)
    chain.publish("1.0.0")
    with countingserver.counting(chain.repo) as (server, url):
        chain.server = server
        chain.url = url.replace("127.0.0.1", "10.0.2.2").replace("localhost", "10.0.2.2")
        chain.vm = KeelVM.start(
            runner.RunOptions(
                image=chain.images.path(VERSIONS["1.0.0"]),
                name=f"up-{secrets.token_hex(3)}",
                die_with_parent=True,
                secure_boot=True,
            ),
            vm_root(),
        )
        try:
            chain.wait_for_hostd()
            # Policy for the test: this repository, reboots only when asked, and no
            # scheduled checks: every update here is one a test starts (hostd's first
            # scheduled check, a minute after each boot, could otherwise install v3
            # right after the tampered-bundle test puts the good bundle back).
            policy = json.dumps(
                {"repository": chain.url, "reboot": "manual", "check_interval": "never"}
            )
            chain.sh(f"mkdir -p /etc/keel && echo '{policy}' > /etc/keel/update.json")
            yield chain
        finally:
            try:
                chain.host.stop()
            finally:
                chain.host.kill()
            shutil.rmtree(chain.host.vm_dir.path, ignore_errors=True)
            shutil.rmtree(chain.work, ignore_errors=True)


def test_secure_boot_starts_the_signed_image_with_its_own_command_line(chain: Chain) -> None:
    assert chain.version() == "1.0.0"
    assert chain.status()["secure_boot"] is True
    # The firmware's db (the signature database variable) holds the session's certificate.
    db_variable = "/sys/firmware/efi/efivars/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"
    db = chain.sh(f"od -An -v -tx1 {db_variable} | tr -d ' \\n'")
    der = x509.load_pem_x509_certificate((chain.keys / "secure-boot/db.crt").read_bytes())
    assert der.public_bytes(serialization.Encoding.DER).hex() in db
    # The stub ignored the entry's options (root=PARTLABEL=root-a keel.slot=a): the
    # kernel runs with the UKI's signed command line, which names no slot.
    cmdline = chain.sh("cat /proc/cmdline").split()
    assert "root=/dev/mapper/keel-root" in cmdline, cmdline
    assert not [w for w in cmdline if w.startswith("keel.slot=")], cmdline
    assert chain.status()["booted"]["slot"] == "a"
    # Debian's kernel saw Secure Boot too: it locks itself down (signed modules only).
    assert "[integrity]" in chain.sh("cat /sys/kernel/security/lockdown")


def test_killed_while_writing_the_slot_boots_the_old_version(chain: Chain) -> None:
    assert chain.version() == "1.0.0"
    chain.sh("echo changed-on-v1 > /etc/keel-up-test.conf")
    volume = "$(docker volume inspect -f '{{.Mountpoint}}' keel-up-test)"
    chain.sh(f"docker volume create keel-up-test >/dev/null && echo kept > {volume}/data")
    # The power cut below is meant to hit the slot write, not these files (nor the
    # policy): a field host's data was written long before. Without a sync, ext4's
    # delayed allocation could still lose them, and later tests would miss them.
    chain.sh("sync")
    chain.publish("2.0.0")
    chain.sh("systemd-run --unit=keel-up-test-update --collect keelctl update")
    # Watched from inside the guest: the slot takes seconds to write, an SSH round
    # trip per poll would miss it. hostd records progress every 32 MiB written.
    chain.sh(
        'until grep -q \'"phase": "writing-slot"\' /var/lib/keel/update/state.json && '
        "grep -Eq '\"done\": [1-9]' /var/lib/keel/update/state.json; do sleep 0.1; done",
        timeout=UPDATE_TIMEOUT,
    )
    chain.host.kill()  # power loss, in the middle of the slot

    chain.vm = KeelVM.start(
        runner.RunOptions(name=chain.host.name, die_with_parent=True), vm_root()
    )
    chain.wait_for_hostd()
    assert chain.version() == "1.0.0"
    status = chain.status()
    assert status["booted"]["slot"] == "a"
    assert status["last_result"]["result"] == "interrupted"
    assert status["other"]["version"] is None  # the half-written slot has no entry


def test_update_to_v2_across_key_rotations_keeps_data(chain: Chain) -> None:
    before = chain.data()
    # The image baked root v1; the repository moves on to new targets and root keys
    # (root v3). The host must follow the chain and accept v2 signed by the new keys.
    repository.rotate_key(chain.repo, chain.keys, "targets")
    assert repository.rotate_key(chain.repo, chain.keys, "root").root_version == 3
    transfer = chain.update_by_delta("2.0.0")
    # The killed attempt's blocks were still in place; most others came from slot a.
    assert transfer["kept_blocks"] > 0 and transfer["reused_blocks"] > 0, transfer
    assert chain.status()["phase"] == "installed"
    old_boot = chain.sh(f"cat {BOOT_ID}").strip()
    chain.keelctl("update --reboot")  # already installed: only reboots
    chain.wait_for_version("2.0.0", old_boot)
    status = chain.status()
    assert status["booted"]["slot"] == "b"  # the initrd found v2's slot by itself
    assert "keel.slot=" not in chain.sh("cat /proc/cmdline")
    assert status["last_result"]["result"] == "succeeded", status
    assert status["other"] == {**status["other"], "version": "1.0.0", "state": "good"}
    assert chain.data() == before


def test_rollback_returns_to_v1_and_keeps_data(chain: Chain) -> None:
    before = chain.data()
    old_boot = chain.sh(f"cat {BOOT_ID}").strip()
    code, out = chain.keelctl("rollback")
    assert code == 0, out
    chain.wait_for_version("1.0.0", old_boot)
    status = chain.status()
    assert status["booted"]["slot"] == "a"
    assert status["last_result"]["result"] == "rolled-back"
    assert chain.data() == before


def test_tampered_bundle_and_expired_metadata_are_refused(chain: Chain) -> None:
    slot_b = chain.slot_sha256("b")
    chain.publish("3.0.0")
    # Both ways to v3 tampered: the delta's index (so hostd falls back to the bundle)
    # and the bundle.
    originals = {}
    for pattern in ("*docker-host-3.0.0-*.keelbundle", "*docker-host-3.0.0-*.keelindex"):
        stored = next(chain.repo.glob(f"targets/**/{pattern}"))
        originals[stored] = stored.read_bytes()
        tampered = bytearray(originals[stored])
        tampered[len(tampered) // 2] ^= 0x01
        stored.write_bytes(bytes(tampered))
    code, out = chain.keelctl("update")
    assert code != 0 and "does not match the signed targets metadata" in out, out
    history = chain.sh("keelctl history --json")
    assert '"delta-failed"' in history and "keelindex" in history, history[-2000:]
    for stored, original in originals.items():
        stored.write_bytes(original)

    # Expired an hour ago, not just now: the guest's clock has no time server to follow
    # and may lag the build machine's by seconds.
    chain.publish("3.0.0", now=datetime.now(UTC) - timedelta(hours=2), timestamp=timedelta(hours=1))
    code, out = chain.keelctl("update")
    assert code != 0 and "expired" in out, out
    assert chain.status()["last_result"]["result"] == "refused"
    assert chain.slot_sha256("b") == slot_b
    assert "refused" in chain.sh("journalctl -u keel-hostd --no-pager | tail -n 20")


def test_failing_health_check_rolls_back_by_itself(chain: Chain) -> None:
    chain.publish("3.0.0")
    old_boot = chain.sh(f"cat {BOOT_ID}").strip()
    code, out = chain.keelctl("update --reboot")
    assert code == 0, out
    chain.wait_for_version("1.0.0", old_boot)
    status = chain.status()
    assert status["last_result"]["result"] == "rolled-back", status
    assert status["last_result"]["version"] == "3.0.0"
    assert "health check failed" in status["last_result"]["reason"]
    assert "50-always-fails" in status["failed_versions"]["3.0.0"]
    assert status["other"]["state"] == "bad"


def test_a_corrupted_slot_rolls_back_by_itself(chain: Chain) -> None:
    chain.publish("5.0.0")
    # Installed into slot b, checked, not booted; by delta from v1, two versions on.
    chain.update_by_delta("5.0.0")
    assert chain.status()["phase"] == "installed"
    # One bit of the slot's first block (erofs's superblock, which the initrd's mount
    # reads first) flips after hostd checked it.
    flip = (
        "f = open('/dev/disk/by-partlabel/root-b', 'r+b'); f.seek(1100); b = f.read(1); "
        "f.seek(1100); f.write(bytes([b[0] ^ 1])); f.close()"
    )
    chain.sh(f'python3 -c "{flip}" && sync')
    old_boot = chain.sh(f"cat {BOOT_ID}").strip()
    log_size = chain.host.serial_log.stat().st_size
    chain.keelctl("update --reboot")  # already installed: only reboots
    chain.wait_for_version("1.0.0", old_boot)
    serial = chain.host.serial_log.read_bytes()[log_size:].decode(errors="replace")
    # The kernel, not a failed mount, ended each try of 5.0.0.
    assert "dm-verity device corrupted" in serial, serial[-3000:]
    status = chain.status()
    assert status["last_result"]["result"] == "rolled-back", status
    assert status["last_result"]["version"] == "5.0.0"
    assert "did not finish booting within 3 tries" in status["last_result"]["reason"]
    assert chain.keelctl("check")[1].strip().startswith("up to date")


def test_secure_boot_firmware_refuses_an_unsigned_disk(chain: Chain, keel_image: Path) -> None:
    """The same enrolled firmware, given a disk whose loader the owner did not sign
    (the session's unsigned test image, beside this chain's certificates): nothing of it
    starts."""
    artifact = chain.work / "unsigned"
    artifact.mkdir()
    disk = keel_image / "disk.qcow2" if keel_image.is_dir() else keel_image
    # A thin copy (a qcow2 over it): the runner looks for the certificates beside it.
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk_format(disk), "-b", disk.resolve(),
         artifact / "disk.qcow2"],
        check=True,
    )  # fmt: skip
    shutil.copytree(chain.images.path(VERSIONS["1.0.0"]) / "secure-boot", artifact / "secure-boot")
    name = f"unsigned-{secrets.token_hex(3)}"
    options = runner.RunOptions(
        image=artifact, name=name, die_with_parent=True, secure_boot=True, boot_timeout=45
    )
    folder = vm_dir(vm_root(), name)
    try:
        with pytest.raises(KeelError):
            runner.start(options, vm_root())
        serial = folder.serial_log.read_bytes().decode(errors="replace")
        # OVMF's boot manager says why it skipped the disk; no loader or kernel ran.
        assert "Access Denied" in serial, serial[-3000:]
        assert "Linux version" not in serial, serial[-3000:]
    finally:
        runner.remove(folder, force=True)
