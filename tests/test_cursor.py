import pytest

from webhook_service.storage.cursor import MalformedCursor, Position, decode_cursor, encode_cursor


@pytest.mark.parametrize("message_id", ["m1", 'id with spaces, commas and "quotes"', "ünïcødé", "x" * 256])
def test_a_position_survives_the_round_trip_as_url_safe_text(message_id):
    position = Position("2024-01-01T00:00:00.500000000Z", message_id)
    cursor = encode_cursor(position)
    assert cursor.isascii() and all(ch.isalnum() or ch in "-_" for ch in cursor)
    assert decode_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        "e30",  # {}
        encode_cursor(Position("2024-01-01T00:00:00Z", "m1")),  # not the fixed-width instant
        "WzEsMl0",  # [1,2]
        "WyIyMDI0LTAxLTAxVDAwOjAwOjAwLjAwMDAwMDAwMFoiXQ",  # one element
        "é",
        "A" * 5000,
    ],
)
def test_anything_else_is_refused(cursor):
    with pytest.raises(MalformedCursor):
        decode_cursor(cursor)
