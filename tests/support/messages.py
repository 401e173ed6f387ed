"""Test deliveries and the secrets they are signed with."""

from __future__ import annotations

import json

from webhook_service.signatures import sign_legacy

# The secret of the apps the unit tests build, and of the servers the end-to-end tests start.
SECRET = "test-secret"
E2E_SECRET = "e2e-secret"


def make_message(**overrides) -> dict:
    """A valid webhook payload; keyword arguments replace or add fields."""
    payload = {
        "message_id": "m1",
        "from": "+919876543210",
        "to": "+14155550100",
        "ts": "2025-01-15T10:00:00Z",
        "text": "Hello",
    }
    payload.update(overrides)
    return payload


def signed_body(payload: dict, secret: str) -> tuple[bytes, dict[str, str]]:
    """The body of `payload` and the headers of a legacy-signed JSON delivery of it."""
    body = json.dumps(payload).encode("utf-8")
    return body, {"X-Signature": sign_legacy(secret, body), "Content-Type": "application/json"}
