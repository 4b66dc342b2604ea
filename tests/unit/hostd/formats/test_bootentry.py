import pytest

from hostd.formats import bootentry


def test_fresh_entry_carries_a_tries_counter() -> None:
    assert bootentry.entry_filename("1.0.0", "a") == "keel-1.0.0-a+3.conf"
    assert bootentry.entry_filename("1.0.0", "b", tries=None) == "keel-1.0.0-b.conf"


def test_entry_starts_its_slots_unified_kernel_image_read_only_by_partition_label() -> None:
    entry = bootentry.BootEntry("docker-host", "1.2.0", "b", ("console=ttyS0",))
    text = entry.render()
    assert "efi /keel/b/keel.efi\n" in text
    assert "linux " not in text and "initrd " not in text  # all of it is in the UKI
    options = next(line for line in text.splitlines() if line.startswith("options "))
    assert "root=PARTLABEL=root-b" in options
    assert "rootfstype=erofs" in options
    assert " ro " in options
    assert options.endswith("console=ttyS0")


def test_loader_default_is_a_glob_that_matches_entry_ids() -> None:
    conf = bootentry.loader_conf()
    assert "default keel-*\n" in conf
    assert bootentry.entry_id("2.0", "a").startswith(bootentry.LOADER_DEFAULT_GLOB[:-1])


def test_unknown_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown slot"):
        bootentry.slot_label("c")
    with pytest.raises(ValueError, match="unknown slot"):
        bootentry.uki_path("../a")
