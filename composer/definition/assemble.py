"""Build the frozen ImageDefinition from a checked document with its defaults filled in.

Every field comes from the resolved document, so the schema's defaults are the only
defaults a definition has."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from composer.definition.document import Document
from composer.definition.model import (
    Boot,
    Containers,
    ContainerService,
    Debian,
    DockerEndpoints,
    FileAttributes,
    FleetLockServer,
    HealthCheck,
    ImageDefinition,
    Kernel,
    MaintenanceWindow,
    Overlay,
    Partitions,
    Template,
    UpdatePolicy,
)
from composer.definition.problems import dotted


def assemble(resolved: dict[str, Any], document: Document, *, source: Path) -> ImageDefinition:
    """The definition of resolved; source is the file that was loaded, as shown to people."""
    return ImageDefinition(
        name=resolved["name"],
        version=resolved["version"],
        description=resolved["description"],
        debian=_build_debian(resolved["debian"]),
        kernel=_build_kernel(resolved["kernel"]),
        boot=Boot(**resolved["boot"]),
        packages=tuple(resolved["packages"]),
        templates=tuple(_build_template(t) for t in resolved["templates"]),
        variables=tuple(sorted(copy.deepcopy(resolved["variables"]).items())),
        overlays=tuple(_build_overlay(o) for o in resolved["overlays"]),
        partitions=Partitions(**resolved["partitions"]),
        source=source,
        update=_build_update(resolved["update"], document),
        containers=_build_containers(resolved["containers"], document),
        docker=DockerEndpoints(**resolved["docker"]),
        debug_shell=resolved["debug_shell"],
        provisioning_config=document.next_to_definition(
            ("provisioning", "config"), resolved["provisioning"]["config"]
        ),
        resolved=resolved,
        origins={dotted(path): origin for path, origin in document.origins.items() if path},
    )


def update_root(update: dict[str, Any], document: Document) -> Path | None:
    """The TUF root metadata a build bakes: update.root, else $KEEL_UPDATE_ROOT."""
    root = document.next_to_definition(("update", "root"), update["root"])
    if root is None and os.environ.get("KEEL_UPDATE_ROOT"):
        root = Path(os.environ["KEEL_UPDATE_ROOT"]).absolute()
    return root


def _build_debian(debian: dict[str, Any]) -> Debian:
    return Debian(
        suite=debian["suite"],
        architecture=debian["architecture"],
        mirror=debian["mirror"],
        components=tuple(debian["components"]),
    )


def _build_kernel(kernel: dict[str, Any]) -> Kernel:
    return Kernel(
        package=kernel["package"],
        cmdline=tuple(kernel["cmdline"]),
        initrd_modules=tuple(kernel["initrd_modules"]),
        exclude_modules=tuple(kernel["exclude_modules"]),
    )


def _build_template(template: dict[str, Any]) -> Template:
    return Template(
        source=template["source"],
        target=template["target"],
        mode=int(template["mode"], 8),
        owner=template["owner"],
    )


def _build_overlay(overlay: dict[str, Any]) -> Overlay:
    files = tuple(
        (path, _build_file_attributes(attributes))
        for path, attributes in sorted(overlay["files"].items())
    )
    return Overlay(source=overlay["source"], target=overlay["target"], files=files)


def _build_file_attributes(attributes: dict[str, Any]) -> FileAttributes:
    mode = attributes.get("mode")
    return FileAttributes(
        mode=int(mode, 8) if mode is not None else None, owner=attributes.get("owner")
    )


def _build_update(update: dict[str, Any], document: Document) -> UpdatePolicy:
    window = update["window"]
    return UpdatePolicy(
        repository=update["repository"],
        root=update_root(update, document),
        check_interval=update["check_interval"],
        reboot=update["reboot"],
        window=MaintenanceWindow(tuple(window["days"]), window["start"], window["duration"]),
        fleet_lock=FleetLockServer(**update["fleet_lock"]),
    )


def _build_containers(containers: dict[str, Any], document: Document) -> Containers:
    archives = tuple(
        document.next_to_definition(("containers", "archives", index), archive)
        for index, archive in enumerate(containers["archives"])
    )
    services = tuple(_build_service(service) for service in containers["services"])
    return Containers(archives=tuple(a for a in archives if a is not None), services=services)


def _build_service(service: dict[str, Any]) -> ContainerService:
    healthcheck = service["healthcheck"]
    return ContainerService(
        name=service["name"],
        image=service["image"],
        command=tuple(service["command"]),
        env=tuple(sorted(service["env"].items())),
        ports=tuple(service["ports"]),
        volumes=tuple(service["volumes"]),
        restart=service["restart"],
        healthcheck=HealthCheck(
            command=tuple(healthcheck["command"]),
            interval=healthcheck["interval"],
            retries=healthcheck["retries"],
        ),
    )
