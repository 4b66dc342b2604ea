"""Boot built images in QEMU: `keel run` and friends, and the machinery the pytest plugin uses.

Each module has one job: firmware (find UEFI), accel (KVM or TCG), image (which disk),
ports (host port for SSH), ignition (provisioning config), keys (per-VM SSH key),
command (QEMU argv), vmdir + state (the VM's folder), qmp (control), ssh (readiness),
console (serial and debug shell sockets), runner (start/stop/rm), cli (the verbs).
"""
