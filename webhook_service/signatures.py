"""HMAC-SHA256 signing and verification over raw body bytes. No web framework here."""

from __future__ import annotations

import hashlib
import hmac
import re

SIGNATURE_PREFIX = "sha256="
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def sign(secret: str | bytes, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of `body` under `secret`, as senders put in X-Signature."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header_value: str | None) -> bool:
    """True when `header_value` is the signature of `body`.

    Hex in either case and an optional `sha256=` prefix are accepted. The comparison takes
    the same time wherever the first differing character is.
    """
    if not header_value:
        return False
    candidate = header_value.strip().lower()
    candidate = candidate.removeprefix(SIGNATURE_PREFIX)
    if _HEX_DIGEST.fullmatch(candidate) is None:
        return False
    return hmac.compare_digest(sign(secret, body), candidate)
