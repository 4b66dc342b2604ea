"""The FleetLock server's log times: ordered as the events were, across a second."""

from composer.fleet.server import timestamp


def test_milliseconds_and_seconds_come_from_one_reading() -> None:
    # 0.9995 s before a second boundary and just after it: the first must not read as
    # .999 of the next second nor the second as .000 of the one before.
    before, after = timestamp(1_800_000_000.999), timestamp(1_800_000_001.0004)
    assert before == "2027-01-15T08:00:00.999Z"
    assert after == "2027-01-15T08:00:01.000Z"
    assert sorted([after, before]) == [before, after]
