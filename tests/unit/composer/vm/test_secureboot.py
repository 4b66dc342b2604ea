"""`keel run --secure-boot`: the image's certificates, the enrolled variable store, and
the runner keeping a VM's Secure Boot setting (QEMU is a stand-in that exits at once)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from virt.firmware.varstore.edk2 import Edk2VarStore

from composer.cli import make_parser
from composer.core.errors import KeelError
from composer.publish import secureboot as keygen
from composer.vm import runner, secureboot, state
from composer.vm.command import SECURE_FLASH
from composer.vm.firmware import Firmware
from composer.vm.vmdir import VmDir

# Debian's empty variable store (package ovmf), the template Keel enrolls.
TEMPLATE = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
needs_template = pytest.mark.skipif(not TEMPLATE.is_file(), reason="needs ovmf")


def artifact(parent: Path, signed: bool = True) -> Path:
    """A build folder as `keel build` leaves it: a disk, and with Secure Boot the
    certificates (here made by keygen, which also leaves the private keys beside)."""
    folder = parent / "docker-host" / "1.0"
    folder.mkdir(parents=True)
    (folder / "disk.raw").write_bytes(bytes(1024 * 1024))
    if signed:
        keygen.generate(folder, "Keel test")
    return folder


def enrolled(store: Path, name: str) -> list[tuple[str, bytes]]:
    """(owner GUID, DER certificate) of each entry of variable name in store."""
    variables = Edk2VarStore(str(store)).get_varlist()
    return [(str(sig["guid"]), sig["data"]) for siglist in variables[name].sigdb for sig in siglist]


def der(certificate: Path) -> bytes:
    return x509.load_pem_x509_certificate(certificate.read_bytes()).public_bytes(Encoding.DER)


def test_certificates_are_found_beside_the_disk(tmp_path: Path) -> None:
    folder = artifact(tmp_path)
    keys = secureboot.image_certificates(folder / "disk.raw")
    assert keys.folder == folder / "secure-boot"
    assert keys.owner_guid == (folder / "secure-boot/owner.guid").read_text().strip()
    assert keys.certificate("db").is_file()


def test_an_unsigned_image_is_refused_with_how_to_sign_it(tmp_path: Path) -> None:
    disk = artifact(tmp_path, signed=False) / "disk.raw"
    with pytest.raises(KeelError, match="was not signed for Secure Boot") as err:
        secureboot.image_certificates(disk)
    assert "keel build --keys DIR" in str(err.value.hint)
    assert "keel keygen --secure-boot" in str(err.value.hint)


def test_incomplete_certificates_or_a_bad_owner_are_errors(tmp_path: Path) -> None:
    folder = artifact(tmp_path)
    (folder / "secure-boot/KEK.crt").unlink()
    with pytest.raises(KeelError, match=r"incomplete: .*KEK\.crt missing"):
        secureboot.image_certificates(folder / "disk.raw")
    other = artifact(tmp_path / "other")
    (other / "secure-boot/owner.guid").write_text("not-a-guid\n")
    with pytest.raises(KeelError, match=r"owner\.guid is missing or not a GUID"):
        secureboot.image_certificates(other / "disk.raw")


@needs_template
def test_the_store_holds_the_image_keys_with_secure_boot_on(tmp_path: Path) -> None:
    keys = secureboot.image_certificates(artifact(tmp_path) / "disk.raw")
    store = tmp_path / "OVMF_VARS.fd"
    secureboot.write_enrolled_vars(TEMPLATE, keys, store)
    assert "PK" not in Edk2VarStore(str(TEMPLATE)).get_varlist()  # the template is empty
    for name in ("PK", "KEK", "db"):
        assert enrolled(store, name) == [(keys.owner_guid, der(keys.certificate(name)))]
    variables = Edk2VarStore(str(store)).get_varlist()
    assert variables["SecureBootEnable"].data == b"\x01"
    assert variables["CustomMode"].data == b"\x00"  # standard mode: signatures checked
    assert store.stat().st_size == TEMPLATE.stat().st_size  # still fits the flash


@needs_template
def test_a_failed_enrollment_is_an_error_with_a_hint(tmp_path: Path) -> None:
    keys = secureboot.image_certificates(artifact(tmp_path) / "disk.raw")
    keys.certificate("db").write_text("not a certificate\n")
    store = tmp_path / "vm" / "OVMF_VARS.fd"
    store.parent.mkdir()
    with pytest.raises(KeelError, match=r"virt\.firmware\.vars") as err:
        secureboot.write_enrolled_vars(TEMPLATE, keys, store)
    assert "X.509" in str(err.value.hint)


class StandInQemu:
    """Records the command line and exits at once, so start() fails after saving state."""

    def __init__(self) -> None:
        self.argv: list[str] = []

    def __call__(self, argv: list[str], vm: VmDir, die: bool) -> subprocess.Popen[bytes]:
        self.argv = argv
        vm.qemu_log.write_text("qemu-system-x86_64: stand-in\n")
        return subprocess.Popen(["false"])


@pytest.fixture
def firmware(monkeypatch: pytest.MonkeyPatch) -> None:
    """Firmware as the descriptors would give it, with Debian's real empty store."""
    if not TEMPLATE.is_file() or shutil.which("qemu-img") is None:
        pytest.skip("needs ovmf and qemu-img (for the VM's disk overlay)")

    def find_firmware(secure_boot: bool = False, tools: object = None) -> Firmware:
        code = Path("/fw/CODE.secboot.fd" if secure_boot else "/fw/CODE.fd")
        return Firmware(Path("/fw/fw.json"), code, TEMPLATE, secure_boot)

    monkeypatch.setattr(runner.firmware, "find_firmware", find_firmware)
    monkeypatch.setattr(runner, "vm_tools", lambda: None)  # no tools tree to extract


Start = Callable[..., list[str]]


@pytest.fixture
def start(firmware: None, tmp_path: Path) -> Start:
    """runner.start on tmp_path/vms with the stand-in; returns the QEMU command line."""

    def run(**options: object) -> list[str]:
        qemu = StandInQemu()
        with pytest.raises(KeelError, match="QEMU failed to start"):
            runner.start(runner.RunOptions(accel="tcg", **options), tmp_path / "vms", qemu)  # type: ignore[arg-type]
        return qemu.argv

    return run


def test_a_secure_boot_vm_is_enrolled_and_keeps_its_setting(start: Start, tmp_path: Path) -> None:
    image = artifact(tmp_path)
    argv = start(image=image, name="sb", secure_boot=True)
    assert "q35,smm=on" in argv and SECURE_FLASH in argv
    vm = VmDir(tmp_path / "vms" / "sb")
    assert state.load(vm).secure_boot
    certificate = der(image / "secure-boot/PK.crt")
    assert [data for _, data in enrolled(vm.nvram, "PK")] == [certificate]
    vm.nvram.write_bytes(b"variables the guest wrote")
    again = start(name="sb")
    assert "q35,smm=on" in again and SECURE_FLASH in again
    assert vm.nvram.read_bytes() == b"variables the guest wrote"  # not enrolled afresh
    with pytest.raises(KeelError, match="created with Secure Boot"):
        runner.start(runner.RunOptions(name="sb", secure_boot=False), vm.path.parent, StandInQemu())


def test_a_plain_vm_refuses_secure_boot_later(start: Start, tmp_path: Path) -> None:
    argv = start(image=artifact(tmp_path), name="plain")
    assert "q35,smm=off" in argv and SECURE_FLASH not in argv
    assert not state.load(VmDir(tmp_path / "vms" / "plain")).secure_boot
    with pytest.raises(KeelError, match="created without Secure Boot"):
        runner.start(
            runner.RunOptions(name="plain", secure_boot=True), tmp_path / "vms", StandInQemu()
        )


def test_an_nvram_left_by_a_failed_start_is_enrolled(start: Start, tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "vms" / "left")
    vm.create()  # a start without Secure Boot died before writing state.json
    shutil.copyfile(TEMPLATE, vm.nvram)
    image = artifact(tmp_path)
    start(image=image, name="left", secure_boot=True)
    assert [data for _, data in enrolled(vm.nvram, "db")] == [der(image / "secure-boot/db.crt")]


@pytest.mark.usefixtures("firmware")
def test_an_unsigned_image_or_bare_disk_leaves_no_vm_behind(tmp_path: Path) -> None:
    unsigned = artifact(tmp_path, signed=False)
    bare = tmp_path / "elsewhere" / "host.raw"
    bare.parent.mkdir()
    shutil.copyfile(artifact(tmp_path / "signed") / "disk.raw", bare)
    for image in (unsigned, bare):
        with pytest.raises(KeelError, match="was not signed for Secure Boot"):
            runner.start(
                runner.RunOptions(image=image, name="x", accel="tcg", secure_boot=True),
                tmp_path / "vms",
                StandInQemu(),
            )
        assert not (tmp_path / "vms" / "x").exists()


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [([], None), (["--secure-boot"], True), (["--no-secure-boot"], False)],
)
def test_keel_run_passes_the_flag_on(
    flags: list[str], wanted: bool | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[runner.RunOptions] = []

    def start(options: runner.RunOptions, root: Path) -> None:
        seen.append(options)
        raise KeelError("stand-in")

    monkeypatch.setattr(runner, "start", start)
    monkeypatch.setenv("KEEL_VM_DIR", str(tmp_path))
    args = make_parser().parse_args(["run", "--detach", *flags, str(tmp_path)])
    with pytest.raises(KeelError, match="stand-in"):
        args.func(args)
    assert seen[0].secure_boot is wanted  # None: a VM started again keeps its setting
