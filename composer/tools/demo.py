"""`make demo`: build docker-host, boot it, run a container in it with the Docker CLI
over SSH, show `keelctl status`, publish a second version to an update repository and
watch the host move to it, and leave the VM running.

Each step runs the same commands a person would type, and prints them, so the demo
doubles as a walkthrough. The container image is made on the spot from Debian's
busybox-static (no registry is needed): `docker import` over SSH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from composer.core.paths import DEFAULT_IMAGE, PROJECT_ROOT, vm_root
from composer.tools.dockercli import docker_client
from composer.vm.vmdir import vm_dir

VM_NAME = "keel-demo"
# The keel script next to this interpreter: .venv/bin/keel under `make demo`.
KEEL = [os.path.relpath(Path(sys.executable).parent / "keel", PROJECT_ROOT)]
BUSYBOX = Path("/bin/busybox")
DEMO_IMAGE = "keel-demo/busybox:1"
DEMO_DIR = PROJECT_ROOT / "build/demo"
NEXT_VERSION = "1.0.1"
# The guest reaches the build machine's loopback here (QEMU user networking).
HOST_FROM_GUEST = "10.0.2.2"


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


def guest(command: str) -> str:
    result = subprocess.run(
        [*KEEL, "ssh", VM_NAME, "--", command], capture_output=True, text=True, timeout=120
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def next_version_definition() -> Path:
    """docker-host with only its version changed: the update the demo publishes."""
    path = DEMO_DIR / "docker-host-next.yaml"
    path.write_text(
        f"# Written by `make demo`: docker-host, one version on.\n"
        f'extends: {DEFAULT_IMAGE}\nversion: "{NEXT_VERSION}"\n'
    )
    return path


def update_to_next_version() -> None:
    step(f"5. Build {NEXT_VERSION}, publish it to a signed (TUF) repository, serve it")
    next_out = DEMO_DIR / "docker-host" / NEXT_VERSION
    sh([*KEEL, "build", str(next_version_definition()), "--out", str(next_out)])
    repo = DEMO_DIR / "repo"
    # Each demo publishes into a fresh repository: a second run must not find its
    # version already published (repositories only move forward).
    shutil.rmtree(repo, ignore_errors=True)
    sh([*KEEL, "publish", str(next_out), "--repo", str(repo), "--keys", str(DEMO_DIR / "keys")])
    print(f"$ {KEEL[0]} serve --repo {repo} &", flush=True)
    server = subprocess.Popen(
        [*KEEL, "serve", "--repo", str(repo)], stdout=subprocess.PIPE, text=True,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        port = url.rsplit(":", 1)[-1].strip("/")
        print(f"  serving {url}")
        step("6. The host checks, verifies, installs into its other slot and reboots")
        policy = json.dumps({"repository": f"http://{HOST_FROM_GUEST}:{port}"})
        sh([*KEEL, "ssh", VM_NAME, "--",
            f"mkdir -p /etc/keel && echo '{policy}' > /etc/keel/update.json"])  # fmt: skip
        subprocess.run([*KEEL, "ssh", VM_NAME, "--", "keelctl", "update", "--reboot"])
        deadline = time.monotonic() + 600
        while guest("cat /usr/lib/keel/release").find(NEXT_VERSION) < 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"the host did not come back in {NEXT_VERSION} within 10 min")
            time.sleep(5)
        # The new version counts as good once its health gate passed and blessed it.
        deadline = time.monotonic() + 300
        while "(good)" not in guest("keelctl status | grep '^booted:'"):
            if time.monotonic() > deadline:
                print("  the health gate has not decided yet; keelctl status shows it")
                break
            time.sleep(5)
        sh([*KEEL, "ssh", VM_NAME, "--", "keelctl", "status"])
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    os.chdir(PROJECT_ROOT)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    step("1. Make update signing keys, build the default image (docker-host) trusting them")
    keys = DEMO_DIR / "keys"
    if not (keys / "root.json").exists():
        sh([*KEEL, "keygen", "--out", str(keys)])
    # The image bakes the repository's root of trust (update.root, or this variable).
    os.environ["KEEL_UPDATE_ROOT"] = str(keys / "root.json")
    sh([*KEEL, "build", str(DEFAULT_IMAGE.relative_to(PROJECT_ROOT))])

    step("2. Boot it in QEMU and wait for SSH")
    subprocess.run([*KEEL, "rm", "--force", VM_NAME], capture_output=True)
    sh([*KEEL, "run", "--detach", "--name", VM_NAME])

    step("3. Run a container in it with the Docker CLI over SSH")
    # The client of the image's own docker-cli package (`keel docker-cli`).
    docker = str(docker_client(DEFAULT_IMAGE))
    with tempfile.TemporaryDirectory(prefix="keel-demo-") as scratch:
        env = docker_over_ssh_env(Path(scratch))
        host = f"ssh://{VM_NAME}"
        rootfs = busybox_rootfs_tar(Path(scratch) / "busybox-rootfs.tar")
        sh([docker, "-H", host, "import", str(rootfs), DEMO_IMAGE], env=env)
        sh([docker, "-H", host, "run", "--rm", DEMO_IMAGE, "/bin/echo",
            "hello from a container on Keel"], env=env)  # fmt: skip
        sh([docker, "-H", host, "ps", "--all"], env=env)

    step("4. The host agent's view")
    sh([*KEEL, "ssh", VM_NAME, "--", "keelctl", "status"])

    update_to_next_version()

    step("The VM keeps running")
    print(f"  log in:      .venv/bin/keel ssh {VM_NAME}")
    print(f"  serial:      .venv/bin/keel console {VM_NAME}")
    ssh_config = vm_dir(vm_root(), VM_NAME).ssh_config.absolute()
    print(f"  docker:      put `Include {ssh_config}` at the top of ~/.ssh/config,")
    print(f"               then: $(keel docker-cli) -H ssh://{VM_NAME} ps")
    print(f"  stop:        .venv/bin/keel stop {VM_NAME} && .venv/bin/keel rm {VM_NAME}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as failed:
        print(f"\nmake demo: `{' '.join(failed.cmd)}` failed (exit {failed.returncode})",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
