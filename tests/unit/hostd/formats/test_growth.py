"""The var definition the build writes is the one the host reads back."""

import pytest

from hostd.formats.growth import VAR_TYPE, definition_cap, var_definition


def test_the_cap_goes_into_the_definition_and_comes_back() -> None:
    assert definition_cap(var_definition(50 * 1024**3)) == 50 * 1024**3
    assert "SizeMaxBytes=53687091200\n" in var_definition(50 * 1024**3)


def test_no_cap_means_no_size_max_and_the_definition_matches_by_type_only() -> None:
    text = var_definition(0)
    assert definition_cap(text) == 0
    keys = [line.split("=")[0] for line in text.splitlines() if "=" in line and line[0] != "#"]
    # Type= alone: no Label=, UUID=, Format= or CopyBlocks= that could make repart
    # create, relabel or write a partition.
    assert keys == ["Type"]
    assert "[Partition]\nType=var\n" in text


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        definition_cap("[Partition]\nType=var\nSizeMaxBytes=-1\n")


def test_var_type_is_the_discoverable_partitions_specs() -> None:
    assert VAR_TYPE == "4D21B016-B534-45C2-A9FB-5C16E091FD2D"
