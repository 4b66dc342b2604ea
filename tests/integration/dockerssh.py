"""The Docker CLI of this machine driving a booted guest over ssh://.

Docker's ssh helper runs `ssh ... docker system dial-stdio` on the host. OpenSSH reads
~/.ssh/config from the passwd entry, not $HOME, so this puts an `ssh` on PATH that
adds a config of its own (the VM's port and key, no known_hosts)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from composer.testing import KeelVM


def docker_over_ssh(
    client: Path, vm: KeelVM, scratch: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    config = scratch / "ssh_config"
    config.write_text(
        f"Host 127.0.0.1\n  Port {vm.ssh_port}\n  IdentityFile {vm.key}\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    wrapper = scratch / "bin/ssh"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {config} "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
    env.pop("DOCKER_HOST", None)
    return subprocess.run(
        [str(client), "-H", f"ssh://root@127.0.0.1:{vm.ssh_port}", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
