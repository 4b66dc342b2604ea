import pytest

from composer.build.partitions import (
    ESP_TYPE,
    MIB,
    ROOT_X86_64_TYPE,
    VAR_TYPE,
    plan_disk,
    sfdisk_script,
)
from composer.definition.model import Partitions

SIZES = Partitions(esp=128 * MIB, root=640 * MIB, var=1024 * MIB, var_max=0)


def test_plan_lays_out_esp_two_equal_roots_and_var_in_order() -> None:
    plan = plan_disk(SIZES, "docker-host", "1.0.0")
    labels = [p.label for p in plan.partitions]
    assert labels == ["esp", "root-a", "root-b", "var"]
    assert [p.type_guid for p in plan.partitions] == [
        ESP_TYPE, ROOT_X86_64_TYPE, ROOT_X86_64_TYPE, VAR_TYPE,
    ]  # fmt: skip
    assert plan.by_label("root-a").size == plan.by_label("root-b").size == 640 * MIB


def test_partitions_are_aligned_contiguous_and_fit_the_disk() -> None:
    plan = plan_disk(SIZES, "docker-host", "1.0.0")
    assert plan.partitions[0].start == MIB
    for before, after in zip(plan.partitions, plan.partitions[1:], strict=False):
        assert after.start == before.end
        assert after.start % MIB == 0
    # The backup GPT needs 33 sectors after the last partition.
    assert plan.size - plan.partitions[-1].end >= 33 * 512
    assert plan.size == MIB + 128 * MIB + 2 * 640 * MIB + 1024 * MIB + MIB


def test_uuids_are_stable_per_image_and_differ_between_partitions() -> None:
    first = plan_disk(SIZES, "docker-host", "1.0.0")
    again = plan_disk(SIZES, "docker-host", "1.0.0")
    other = plan_disk(SIZES, "docker-host", "1.1.0")
    assert first == again
    assert len({p.uuid for p in first.partitions}) == 4
    assert first.disk_uuid != other.disk_uuid


def test_sizes_must_be_whole_mebibytes() -> None:
    with pytest.raises(ValueError, match=r"partitions\.var"):
        plan_disk(Partitions(esp=128 * MIB, root=640 * MIB, var=MIB + 1, var_max=0), "x", "1")


def test_sfdisk_script_names_labels_types_and_sectors() -> None:
    plan = plan_disk(SIZES, "docker-host", "1.0.0")
    script = sfdisk_script(plan)
    assert script.startswith("label: gpt\n")
    root_a = plan.by_label("root-a")
    assert (
        f"start={root_a.start // 512}, size={root_a.size // 512}, type={ROOT_X86_64_TYPE}" in script
    )
    assert 'name="var"' in script
    assert f"label-id: {plan.disk_uuid}" in script
