"""The first-boot preset: real systemctl applies it to a tree and gets back exactly the
enablement the build left (presets.py)."""

import subprocess
from pathlib import Path

from composer.build import presets

UNITS = {
    "wanted.service": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    "left-off.service": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    "getty@.service": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=getty.target\n",
    "sshd-keygen.service": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=ssh.service\n",
    "ssh.service": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    # Like trixie's systemd-networkd.service: enabling it enables its Also= units.
    "net.service": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    "Also=net.socket net-wait.service\n",
    "net.socket": "[Socket]\nListenStream=/run/net\n[Install]\nWantedBy=sockets.target\n",
    "net-wait.service": (
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=network-online.target\n"
    ),
}


def make_tree(root: Path) -> Path:
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for name, text in UNITS.items():
        (units / name).write_text(text)
    for folder, name, target in (
        ("multi-user.target.wants", "wanted.service", "wanted.service"),
        ("multi-user.target.wants", "ssh.service", "ssh.service"),
        ("multi-user.target.wants", "net.service", "net.service"),
        ("sockets.target.wants", "net.socket", "net.socket"),
        ("getty.target.wants", "getty@tty1.service", "getty@.service"),
        ("ssh.service.wants", "sshd-keygen.service", "sshd-keygen.service"),
    ):
        link = root / "etc/systemd/system" / folder / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"/usr/lib/systemd/system/{target}")
    return root


def enabled_links(root: Path) -> set[str]:
    base = root / "etc/systemd/system"
    return {str(p.relative_to(base)) for p in base.glob("*/*") if p.is_symlink()}


def test_preset_lists_what_is_enabled_with_template_instances(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    assert presets.drop_replaced_units(tree) == ["sshd-keygen.service"]
    text = presets.render_preset(presets.enabled_units(tree))
    assert text.splitlines()[2:] == [
        "enable getty@.service tty1",
        "enable net.service",
        "enable net.socket",
        "enable ssh.service",
        "enable wanted.service",
        "disable *",
    ]


def test_systemctl_preset_all_restores_the_built_enablement(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    presets.drop_replaced_units(tree)
    built = enabled_links(tree)
    units = presets.enabled_units(tree)
    assert presets.mask_units_enabled_only_by_also(tree, units) == ["net-wait.service"]
    preset = tree / presets.PRESET
    preset.parent.mkdir(parents=True)
    preset.write_text(presets.render_preset(units))
    # What a first boot does to /etc: presets applied to every unit (the image's own
    # links, masks included, stay in the read-only lower layer).
    for link in (tree / "etc/systemd/system").glob("*/*"):
        link.unlink()
    subprocess.run(["systemctl", f"--root={tree}", "preset-all"], check=True, capture_output=True)
    assert enabled_links(tree) == built
    assert "multi-user.target.wants/left-off.service" not in enabled_links(tree)
    assert "ssh.service.wants/sshd-keygen.service" not in enabled_links(tree)
    assert "network-online.target.wants/net-wait.service" not in enabled_links(tree)
    assert (tree / "etc/systemd/system/net-wait.service").readlink() == Path("/dev/null")
