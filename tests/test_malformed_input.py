"""No input, however malformed, gets a 500, an HTML page or a stack trace."""

import json
import random
import string

import pytest

from tests.support.messages import make_message

SEED = 20261129
ODD_VALUES = [
    None,
    True,
    0,
    -1,
    1.5,
    1e308,
    "",
    " ",
    "\x00",
    "\ud800",
    "é" * 5000,
    "+" * 20,
    "+1" * 9,
    [],
    {},
    [None],
    {"nested": {"deeper": [1, 2, 3]}},
    "2024-13-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "0001-01-01T00:00:00Z",
    "NaN",
]


def assert_clean(response) -> None:
    # A healthy database answers every input: a 503 here would be a payload that broke it.
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    assert response.is_json, response.get_data(as_text=True)[:300]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "<html" not in text.lower()
    if response.status_code >= 400:
        assert "detail" in response.get_json()


def random_payloads(rng: random.Random, count: int):
    fields = ["message_id", "from", "to", "ts", "text", "extra"]
    for _ in range(count):
        payload = make_message(message_id=f"f{rng.random()}")
        for name in rng.sample(fields, rng.randint(1, 3)):
            if rng.random() < 0.2:
                payload.pop(name, None)
            else:
                payload[name] = rng.choice(ODD_VALUES)
        yield payload


def test_random_payloads_never_break_ingestion(signed_post):
    rng = random.Random(SEED)
    for payload in random_payloads(rng, 300):
        assert_clean(signed_post(payload))


def test_random_bytes_and_broken_json_never_break_ingestion(signed_post):
    rng = random.Random(SEED)
    valid = json.dumps(make_message()).encode()
    bodies = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))) for _ in range(100)]
    bodies += [valid[: rng.randint(0, len(valid))] for _ in range(50)]
    bodies += [b'{"message_id": NaN}', b'{"a":' * 2000, b"\xef\xbb\xbf" + valid, valid.replace(b'"', b"'")]
    bodies += [b'{"message_id": "\\ud800", "from": "+1", "to": "+2", "ts": "2024-01-01T00:00:00Z"}']
    for body in bodies:
        assert_clean(signed_post(body=body))


@pytest.mark.parametrize("path", ["/messages", "/stats", "/health/ready", "/health/live", "/metrics"])
def test_random_query_strings_never_break_reads(client, path):
    rng = random.Random(SEED)
    names = ["limit", "offset", "from", "since", "q", "x", ""]
    alphabet = string.printable + "äÖß€\u0000%+&="
    for _ in range(60):
        pairs = [
            (rng.choice(names), "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))))
            for _ in range(rng.randint(0, 4))
        ]
        response = client.get(path, query_string=pairs)
        if path == "/metrics":
            assert response.status_code == 200
            continue
        assert_clean(response)


def test_headers_with_odd_values_are_handled(client):
    body = json.dumps(make_message()).encode()
    for signature in ["", "sha256=", "sha256=" + "g" * 64, "ä" * 64, "0" * 10_000]:
        assert_clean(client.post("/webhook", data=body, headers={"X-Signature": signature}))
    for request_id in ["", "x" * 10_000, "a\tb", "é"]:
        assert_clean(client.get("/health/live", headers={"X-Request-ID": request_id}))
