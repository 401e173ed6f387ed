"""The quick check of a delivery accepts exactly what the marshmallow schema accepts, with
the same result: it may never let through what the schema refuses, nor refuse what it takes."""

import itertools
import random

from marshmallow import ValidationError

from webhook_service.api.inputs import _valid_without_errors, webhook_message_schema

MISSING = object()
CANDIDATES = {
    "message_id": ["m1", " x ", "", "   ", "a" * 256, "a" * 257, "\ud800", "id\x00", 7, None, ["m"], MISSING],
    "from": ["+919876543210", "+1", "+1234567890123456", "919876543210", "+12a", " +1", "", 12, None, MISSING],
    "to": ["+14155550100", "+0987654321", "+", "+1\n", None, 1.5, MISSING],
    "ts": [
        "2025-01-15T10:00:00Z",
        "2024-02-29T23:59:59.123456789Z",
        "2024-02-30T00:00:00Z",
        "2025-01-15T10:00:00+00:00",
        "2025-01-15T10:00:00.1234567890Z",
        "2025-01-15 10:00:00Z",
        None,
        20250115,
        MISSING,
    ],
    "text": ["Hello", "", "x" * 4096, "x" * 4097, "\udfff", "é" * 4096, None, {"a": 1}, 0, MISSING],
}


def schema_result(document):
    try:
        return webhook_message_schema.load(document)
    except ValidationError:
        return None


def build(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not MISSING}


def test_every_combination_of_one_odd_field_agrees_with_the_schema():
    base = {key: options[0] for key, options in CANDIDATES.items()}
    for key, options in CANDIDATES.items():
        for option in options:
            document = build({**base, key: option})
            assert _valid_without_errors(document) == schema_result(document), document


def test_random_documents_agree_with_the_schema():
    rng = random.Random(12)
    keys = list(CANDIDATES)
    for _ in range(5000):
        document = build({key: rng.choice(CANDIDATES[key]) for key in keys})
        if rng.random() < 0.2:
            document["extra"] = rng.choice([1, "x", None])
        assert _valid_without_errors(document) == schema_result(document), document


def test_pairs_of_fields_agree_with_the_schema():
    base = {key: options[0] for key, options in CANDIDATES.items()}
    for first, second in itertools.combinations(CANDIDATES, 2):
        for a, b in itertools.product(CANDIDATES[first], CANDIDATES[second]):
            document = build({**base, first: a, second: b})
            assert _valid_without_errors(document) == schema_result(document), document
