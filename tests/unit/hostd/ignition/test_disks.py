"""storage.disks and storage.filesystems as the parser reads them (hostd/ignition/disks.py):
what is accepted, every hostile shape refused by field before anything is written,
conflicts with files and units, and Ignition's merge keys."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hostd.ignition.config import ConfigError, parse_config
from hostd.ignition.disks import Disk, Filesystem, Partition
from hostd.ignition.merge import merge_documents


def config(version: str = "3.4.0", **sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": version}, **sections}).encode()


def refusal(raw: bytes) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    return str(error.value)


DOCKER_DISK = {
    "disks": [
        {
            "device": "/dev/vdb",
            "wipeTable": True,
            "partitions": [{"label": "docker", "number": 1, "sizeMiB": 0, "startMiB": 0}],
        }
    ],
    "filesystems": [
        {
            "device": "/dev/disk/by-partlabel/docker",
            "format": "ext4",
            "path": "/var/lib/docker",
            "label": "docker",
            "wipeFilesystem": True,
            "options": ["-E", "lazy_itable_init=1"],
            "mountOptions": ["noatime"],
        }
    ],
}


def test_a_second_disk_for_docker_is_read() -> None:
    parsed = parse_config(config(storage=DOCKER_DISK))
    assert parsed.disks == (
        Disk("/dev/vdb", True, (Partition(number=1, label="docker", size_mib=0, start_mib=0),)),
    )
    assert parsed.filesystems == (
        Filesystem(
            device="/dev/disk/by-partlabel/docker",
            format="ext4",
            path="/var/lib/docker",
            wipe=True,
            label="docker",
            options=("-E", "lazy_itable_init=1"),
            mount_options=("noatime",),
        ),
    )
    assert parsed.filesystems[0].mount_point == "/var/lib/docker"
    assert "1 disk(s), 1 filesystem(s)" in parsed.summary()


def test_every_ignition_field_of_every_version_is_read() -> None:
    raw = config(
        "3.0.0",
        storage={
            "disks": [
                {
                    "device": "/dev/disk/by-id/virtio-keel-disk1",
                    "partitions": [
                        {"number": 2, "label": "b",
                         "typeGuid": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                         "guid": "5f3a7e4c-1b2d-4c8e-9a6f-0e1d2c3b4a59",
                         "wipePartitionEntry": True},
                        {"number": 3, "shouldExist": False, "wipePartitionEntry": True},
                    ],
                }
            ],
            "filesystems": [
                {"device": "/dev/vdc", "format": "swap", "label": "swap0",
                 "uuid": "8a0b6d1e-2c3f-4e5a-9b7c-6d5e4f3a2b10"},
                {"device": "/dev/vdd", "format": "vfat", "uuid": "1A2B-3C4D", "path": "/var/x"},
                {"device": "/dev/vde"},  # names a device only: nothing to make
            ],
        },
    )  # fmt: skip
    parsed = parse_config(raw)
    assert parsed.disks[0].partitions[1] == Partition(3, should_exist=False, wipe_entry=True)
    assert parsed.filesystems[0].mount_point is None  # swap is not mounted anywhere
    assert parsed.filesystems[1].mount_point == "/var/x"
    assert parsed.filesystems[2].format is None


@pytest.mark.parametrize(
    ("storage", "field", "words"),
    [
        ({"disks": [{"device": "vdb"}]}, "storage.disks[0].device", "below /dev"),
        ({"disks": [{"device": "/tmp/disk.img"}]}, "storage.disks[0].device", "below /dev"),
        ({"disks": [{"device": "/dev//vdb"}]}, "storage.disks[0].device", "clean"),
        ({"disks": [{"device": "/dev/../etc/shadow"}]}, "storage.disks[0].device", "clean"),
        ({"disks": [{"device": "/dev/vdb\n"}]}, "storage.disks[0].device", "control"),
        ({"disks": [{"device": ""}]}, "storage.disks[0].device", "required"),
        ({"disks": [{"device": "/dev/vdb"}, {"device": "/dev/vdb"}]},
         "storage.disks[1].device", "twice"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"number": 1}, {"number": 1}]}]},
         "storage.disks[0].partitions[1].number", "twice"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"label": "a"}, {"label": "a"}]}]},
         "storage.disks[0].partitions[1].label", "twice"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"label": "a:b"}]}]},
         "storage.disks[0].partitions[0].label", "':'"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"label": 'a", x'}]}]},
         "storage.disks[0].partitions[0].label", "'\"'"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"label": "x" * 37}]}]},
         "storage.disks[0].partitions[0].label", "longer than 36"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"label": "var"}]}]},
         "storage.disks[0].partitions[0].label", "OS disk"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"number": 129}]}]},
         "storage.disks[0].partitions[0].number", "1 to 128"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"number": 1, "sizeMiB": -1}]}]},
         "storage.disks[0].partitions[0].sizeMiB", "0 or more"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"number": 1, "guid": "nope"}]}]},
         "storage.disks[0].partitions[0].guid", "not a GUID"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"number": 1, "shouldExist": False,
                                                          "label": "x"}]}]},
         "storage.disks[0].partitions[0]", "shouldExist false"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"sizeMiB": 5}]}]},
         "storage.disks[0].partitions[0]", "number (1 or more) or a label"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [
            {"number": 2, "shouldExist": False}, {"label": "x"}]}]},
         "storage.disks[0].partitions", "number 0"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [
            {"number": 1, "startMiB": 1, "sizeMiB": 10}, {"number": 2, "startMiB": 5,
                                                         "sizeMiB": 10}]}]},
         "storage.disks[0].partitions[1]", "overlaps partitions[0]"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ntfs"}]},
         "storage.filesystems[0].format", "one of ext4"),
        ({"filesystems": [{"device": "/dev/vdb", "path": "/var/x"}]},
         "storage.filesystems[0].format", "required"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "label": "x" * 17}]},
         "storage.filesystems[0].label", "too long for ext4"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "xfs", "label": "x" * 13}]},
         "storage.filesystems[0].label", "too long for xfs"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "uuid": "x"}]},
         "storage.filesystems[0].uuid", "not a UUID"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "vfat",
                           "uuid": "8a0b6d1e-2c3f-4e5a-9b7c-6d5e4f3a2b10"}]},
         "storage.filesystems[0].uuid", "volume id"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "var/lib/docker"}]},
         "storage.filesystems[0].path", "absolute, clean"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/var/lib//docker"}]},
         "storage.filesystems[0].path", "absolute, clean"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/srv/data"}]},
         "storage.filesystems[0].path", "below /var or /etc"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/home/data"}]},
         "storage.filesystems[0].path", "/var/home"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/var/lib/keel"}]},
         "storage.filesystems[0].path", "Keel's own state"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/var/lib"}]},
         "storage.filesystems[0].path", "Keel's own state"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "options": ["/dev/vda"]}]},
         "storage.filesystems[0].options[0]", "must not name a device"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "options": ["-L\nx"]}]},
         "storage.filesystems[0].options[0]", "one line"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4"},
                          {"device": "/dev/vdb", "format": "xfs"}]},
         "storage.filesystems[1].device", "twice"),
        ({"filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/var/a"},
                          {"device": "/dev/vdc", "format": "xfs", "path": "/var/a"}]},
         "storage.filesystems[1].path", "mounted twice"),
        ({"disks": [{"device": "/dev/vdb", "partitions": [{"number": 1}]}],
          "filesystems": [{"device": "/dev/vdb", "format": "ext4"}]},
         "storage.filesystems[0].device", "destroy the partitions"),
        ({"filesystems": [{"device": "/dev/disk/by-partlabel/var", "format": "ext4"}]},
         "storage.filesystems[0].device", "OS disk"),
    ],
)  # fmt: skip
def test_bad_disks_and_filesystems_are_refused_by_field(
    storage: dict[str, Any], field: str, words: str
) -> None:
    message = refusal(config(storage=storage))
    assert f"'{field}" in message
    assert words in message


@pytest.mark.parametrize(
    ("version", "storage", "field"),
    [
        ("3.1.0", {"disks": [{"device": "/dev/vdb", "partitions": [{"number": 1,
                                                                     "resize": True}]}]},
         "storage.disks[0].partitions[0].resize"),
        ("3.0.0", {"filesystems": [{"device": "/dev/vdb", "format": "ext4",
                                    "mountOptions": ["ro"]}]},
         "storage.filesystems[0].mountOptions"),
        ("3.2.0", {"filesystems": [{"device": "/dev/vdb", "format": "none"}]},
         "storage.filesystems[0].format"),
    ],
)  # fmt: skip
def test_fields_of_later_versions_are_refused(
    version: str, storage: dict[str, Any], field: str
) -> None:
    message = refusal(config(version, storage=storage))
    assert f"'{field}'" in message
    assert "3." in message


def test_raid_and_luks_stay_refused_with_a_reason() -> None:
    message = refusal(config(storage={"raid": [{"name": "md0"}], "luks": [{"name": "x"}]}))
    assert "unsupported field 'storage.raid': software RAID" in message
    assert "unsupported field 'storage.luks': LUKS" in message


def test_nothing_may_be_written_at_or_below_a_mount_point() -> None:
    storage = {
        "filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/var/lib/docker"}],
        "files": [{"path": "/var/lib/docker/daemon-data", "contents": {"source": "data:,x"}}],
        "directories": [{"path": "/var/lib/docker"}],
    }
    message = refusal(config(storage=storage))
    assert "field 'storage.files[0]': /var/lib/docker/daemon-data is below /var/lib/docker" in (
        message
    )
    assert "field 'storage.directories[0]': /var/lib/docker is where storage.filesystems[0]" in (
        message
    )
    assert "hidden" in message


def test_a_mount_point_below_a_link_is_refused_and_mounts_may_nest() -> None:
    below_link = {
        "filesystems": [{"device": "/dev/vdb", "format": "ext4", "path": "/var/data/x"}],
        "links": [{"path": "/var/data", "target": "/var/elsewhere"}],
    }
    assert "a link (never followed)" in refusal(config(storage=below_link))
    nested = {
        "filesystems": [
            {"device": "/dev/vdb", "format": "ext4", "path": "/var/data"},
            {"device": "/dev/vdc", "format": "ext4", "path": "/var/data/cache"},
        ],
        "directories": [{"path": "/var/other"}],
    }
    assert len(parse_config(config(storage=nested)).filesystems) == 2


def test_a_mount_unit_must_carry_the_name_of_its_mount_point() -> None:
    unit = "[Mount]\nWhere=/var/lib/docker\nWhat=/dev/vdb\n[Install]\nRequiredBy=local-fs.target\n"
    wrong = config(systemd={"units": [{"name": "docker-data.mount", "contents": unit}]})
    assert "needs the unit name var-lib-docker.mount" in refusal(wrong)
    right = config(systemd={"units": [{"name": "var-lib-docker.mount", "contents": unit}]})
    assert parse_config(right).units[0].name == "var-lib-docker.mount"
    swap = "[Swap]\nWhat=/dev/disk/by-partlabel/swap-1\n"
    assert "dev-disk-by\\x2dpartlabel-swap\\x2d1.swap" in refusal(
        config(systemd={"units": [{"name": "swap.swap", "contents": swap}]})
    )


def test_merge_keys_disks_and_filesystems_by_device_and_partitions_by_number() -> None:
    parent = {
        "storage": {
            "disks": [{"device": "/dev/vdb", "partitions": [{"number": 1, "sizeMiB": 10},
                                                            {"label": "b"}]}],
            "filesystems": [{"device": "/dev/vdb1", "format": "ext4", "options": ["-m", "0"]}],
        }
    }  # fmt: skip
    child = {
        "storage": {
            "disks": [{"device": "/dev/vdb", "wipeTable": True,
                       "partitions": [{"number": 1, "sizeMiB": 20}, {"label": "b", "sizeMiB": 5}]}],
            "filesystems": [{"device": "/dev/vdb1", "label": "data", "options": ["-j"]}],
        }
    }  # fmt: skip
    merged = merge_documents(parent, child)["storage"]
    assert merged["disks"] == [
        {"device": "/dev/vdb", "wipeTable": True,
         "partitions": [{"number": 1, "sizeMiB": 20}, {"label": "b", "sizeMiB": 5}]}
    ]  # fmt: skip
    assert merged["filesystems"] == [
        {"device": "/dev/vdb1", "format": "ext4", "label": "data", "options": ["-m", "0", "-j"]}
    ]
