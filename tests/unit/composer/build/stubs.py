"""A real systemd-stub for the UKI tests: the build machine's own (Debian 12's
systemd-boot-efi, which `make setup` installs), older than the images' (trixie's 257),
so the layout code is checked against a stub with another image base and alignment too;
and small UKIs made from it."""

from pathlib import Path

from composer.build import uki

HOST_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
KERNEL_RELEASE = "6.12.0-test-amd64"


def make_uki(out: Path, *, cmdline: str = "ro", initrd: bytes = b"initrd stand-in" * 1000) -> Path:
    """An unsigned UKI at out, from stand-in kernel and initrd files beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    kernel = out.with_name(f"{out.name}.vmlinuz")
    kernel.write_bytes(b"MZ kernel stand-in" * 1000)
    initrd_file = out.with_name(f"{out.name}.initrd")
    initrd_file.write_bytes(initrd)
    return uki.assemble(
        HOST_STUB,
        kernel=kernel,
        initrd=initrd_file,
        os_release=Path("/usr/lib/os-release"),
        kernel_release=KERNEL_RELEASE,
        cmdline=cmdline,
        out=out,
    )
