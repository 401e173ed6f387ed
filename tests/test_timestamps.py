import pytest

from webhook_service.timestamps import instant_key


@pytest.mark.parametrize(
    "value, key",
    [
        ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00.000000000Z"),
        ("2024-01-15T10:30:00.5Z", "2024-01-15T10:30:00.500000000Z"),
        ("2024-01-15T10:30:00.500Z", "2024-01-15T10:30:00.500000000Z"),
        ("2024-02-29T23:59:59.123456789Z", "2024-02-29T23:59:59.123456789Z"),
    ],
)
def test_equal_instants_get_equal_keys(value, key):
    assert instant_key(value) == key


def test_keys_sort_as_instants_do():
    ordered = ["2024-01-15T10:30:00Z", "2024-01-15T10:30:00.001Z", "2024-01-15T10:30:00.5Z", "2024-01-15T10:30:01Z"]
    assert sorted(ordered, key=instant_key) == ordered


@pytest.mark.parametrize(
    "value",
    [
        "2024-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-01-15T24:00:00Z",
        "2024-01-15T23:60:00Z",
        "2024-01-15T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "2024-01-15T10:30:00+00:00",
        "2024-01-15T10:30:00",
        "2024-01-15 10:30:00Z",
        "2024-01-15T10:30:00z",
        "2024-01-15T10:30:00.Z",
        "2024-01-15T10:30:00.1234567890Z",
        "2024-1-15T10:30:00Z",
        "2024-01-15T10:30:00Z\n",
        "２０２４-01-15T10:30:00Z",
        "",
    ],
)
def test_malformed_or_impossible_timestamps_are_rejected(value):
    with pytest.raises(ValueError):
        instant_key(value)
