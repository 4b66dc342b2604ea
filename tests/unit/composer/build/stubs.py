"""A real systemd-stub for the UKI tests: the build machine's own (Debian 12's
systemd-boot-efi, which `make setup` installs), older than the images' (trixie's 257),
so the layout code is checked against a stub with another image base and alignment too."""

from pathlib import Path

HOST_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
