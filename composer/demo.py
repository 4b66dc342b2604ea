"""`make demo`: build docker-host, boot it, run a container in it with the Docker CLI
over SSH, show `keelctl status`, and leave the VM running.

Each step runs the same commands a person would type, and prints them, so the demo
doubles as a walkthrough. The container image is made on the spot from Debian's
busybox-static (no registry is needed): `docker import` over SSH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from composer.paths import DEFAULT_IMAGE, PROJECT_ROOT, vm_root
from composer.vm.vmdir import vm_dir

VM_NAME = "keel-demo"
# The keel script next to this interpreter: .venv/bin/keel under `make demo`.
KEEL = [os.path.relpath(Path(sys.executable).parent / "keel", PROJECT_ROOT)]
BUSYBOX = Path("/bin/busybox")
DEMO_IMAGE = "keel-demo/busybox:1"


def step(title: str) -> None:
    print(f"\n\033[1m### {title}\033[0m", flush=True)


def sh(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    print(f"$ {' '.join(argv)}", flush=True)
    return subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def busybox_rootfs_tar(dest: Path) -> Path:
    """A one-binary root filesystem: busybox-static and its applet links."""
    with tarfile.open(dest, "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in ("sh", "echo", "cat", "uname", "hostname"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return dest


def docker_over_ssh_env(workdir: Path) -> dict[str, str]:
    """Environment in which `docker -H ssh://NAME` finds the VM's port and key.

    The Docker CLI runs plain `ssh`, which reads only ~/.ssh/config; a small wrapper
    first in PATH hands it the VM's own ssh_config instead, leaving ~/.ssh alone."""
    config = vm_dir(vm_root(), VM_NAME).ssh_config.absolute()
    wrapper = workdir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F "{config}" "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{workdir}:{os.environ['PATH']}"}


def main() -> int:
    os.chdir(PROJECT_ROOT)
    if shutil.which("docker") is None:
        print("the Docker CLI is missing: run `make setup`", file=sys.stderr)
        return 1
    step("1. Build the default image (docker-host)")
    sh([*KEEL, "build", str(DEFAULT_IMAGE.relative_to(PROJECT_ROOT))])

    step("2. Boot it in QEMU and wait for SSH")
    subprocess.run([*KEEL, "rm", "--force", VM_NAME], capture_output=True)
    sh([*KEEL, "run", "--detach", "--name", VM_NAME])

    step("3. Run a container in it with the Docker CLI over SSH")
    with tempfile.TemporaryDirectory(prefix="keel-demo-") as scratch:
        env = docker_over_ssh_env(Path(scratch))
        host = f"ssh://{VM_NAME}"
        rootfs = busybox_rootfs_tar(Path(scratch) / "busybox-rootfs.tar")
        sh(["docker", "-H", host, "import", str(rootfs), DEMO_IMAGE], env=env)
        sh(["docker", "-H", host, "run", "--rm", DEMO_IMAGE, "/bin/echo",
            "hello from a container on Keel"], env=env)  # fmt: skip
        sh(["docker", "-H", host, "ps", "--all"], env=env)

    step("4. The host agent's view")
    sh([*KEEL, "ssh", VM_NAME, "--", "keelctl", "status"])

    step("The VM keeps running")
    print(f"  log in:      .venv/bin/keel ssh {VM_NAME}")
    print(f"  serial:      .venv/bin/keel console {VM_NAME}")
    print(f"  docker:      see docs/running.md (docker -H ssh://{VM_NAME} ...)")
    print(f"  stop:        .venv/bin/keel stop {VM_NAME} && .venv/bin/keel rm {VM_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
