"""The image definition as frozen dataclasses: built once from the validated YAML
(composer/definition/assemble.py) and never changed during a build.

Apart from FileAttributes' "not declared", fields have no defaults: the JSON Schema's
defaults are the only ones, filled into the document before these are built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Origin:
    """Where a value was written: for error messages that name file and line."""

    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Debian:
    suite: str
    architecture: str
    # Empty: mmdebstrap's default, or the build machine's configured apt sources.
    mirror: str
    components: tuple[str, ...]


@dataclass(frozen=True)
class Kernel:
    package: str
    cmdline: tuple[str, ...]
    # Modules put into the initrd (initramfs-tools MODULES=list).
    initrd_modules: tuple[str, ...]
    # Paths under /usr/lib/modules/<version>/ removed from the image to keep it small.
    exclude_modules: tuple[str, ...]


@dataclass(frozen=True)
class Boot:
    # The root slot through dm-verity, its root hash on the kernel command line.
    verity: bool
    # Sign the boot chain for Secure Boot; None: when the build has Secure Boot keys.
    secure_boot: bool | None


@dataclass(frozen=True)
class Template:
    source: str  # relative to templates/
    target: str  # absolute path in the image
    mode: int
    owner: str


@dataclass(frozen=True)
class FileAttributes:
    # None: not declared, so the file keeps what the copy gave it. The schema has no
    # default here either, and the overlay step uses FileAttributes() for every file
    # the definition does not list.
    mode: int | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Overlay:
    source: str  # a folder under overlays/
    target: str
    # Per-file mode/owner, keyed by the path relative to the overlay folder.
    files: tuple[tuple[str, FileAttributes], ...]


@dataclass(frozen=True)
class Partitions:
    """Sizes in bytes."""

    esp: int
    root: int
    var: int
    # The most var may grow to on a disk bigger than the image; 0: fill the disk.
    var_max: int


@dataclass(frozen=True)
class MaintenanceWindow:
    days: tuple[str, ...]
    start: str
    duration: str


@dataclass(frozen=True)
class FleetLockServer:
    base_url: str
    group: str
    on_failure: str  # hold | release


@dataclass(frozen=True)
class UpdatePolicy:
    repository: str
    # The TUF root metadata baked into the image; None: no update trust root.
    root: Path | None
    check_interval: str
    reboot: str  # immediate | window | manual | fleet_lock
    window: MaintenanceWindow
    fleet_lock: FleetLockServer


@dataclass(frozen=True)
class HealthCheck:
    command: tuple[str, ...]
    interval: str
    retries: int


@dataclass(frozen=True)
class ContainerService:
    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    ports: tuple[str, ...]
    volumes: tuple[str, ...]
    restart: str
    healthcheck: HealthCheck


@dataclass(frozen=True)
class Containers:
    archives: tuple[Path, ...]  # absolute paths on the build machine
    services: tuple[ContainerService, ...]


@dataclass(frozen=True)
class DockerEndpoints:
    tls: bool
    tls_port: int


@dataclass(frozen=True)
class ImageDefinition:
    name: str
    version: str
    description: str
    debian: Debian
    kernel: Kernel
    boot: Boot
    packages: tuple[str, ...]
    templates: tuple[Template, ...]
    variables: tuple[tuple[str, Any], ...]
    overlays: tuple[Overlay, ...]
    partitions: Partitions
    source: Path  # the file that was loaded
    update: UpdatePolicy
    containers: Containers
    docker: DockerEndpoints
    # The root shell on the virtio console for the QEMU test harness: test images only.
    debug_shell: bool
    # A baked first-boot provisioning config (Ignition JSON or Butane YAML), or None.
    provisioning_config: Path | None
    # The merged document (after extends), as plain data; hashed into the manifest.
    resolved: dict[str, Any] = field(compare=False, repr=False)
    # Where each field was written: dotted path ("partitions.root") -> Origin.
    origins: dict[str, Origin] = field(compare=False, repr=False)

    def origin(self, path: str) -> Origin:
        """The most specific place a field (or its nearest parent) was written."""
        parts = path.split(".")
        while parts:
            found = self.origins.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return Origin(self.source, 1)

    @property
    def variables_dict(self) -> dict[str, Any]:
        return dict(self.variables)
