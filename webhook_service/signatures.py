"""Signing and verifying deliveries over raw body bytes. No web framework here.

Two schemes:
- Standard Webhooks v1 (`webhook-id`, `webhook-timestamp`, `webhook-signature`): HMAC-SHA256
  (`v1`) or ed25519 (`v1a`) over `{id}.{timestamp}.{body}`, with a replay window.
- legacy: `X-Signature`, the hex HMAC-SHA256 of the body alone.

Every comparison of a signature takes the same time wherever the first difference is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

LEGACY_HEADER = "X-Signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

SECRET_PREFIX = "whsec_"
PUBLIC_KEY_PREFIX = "whpk_"
SIGNING_KEY_PREFIX = "whsk_"
LEGACY_PREFIX = "sha256="
# Only this many entries of one webhook-signature header are looked at: senders send one
# per secret they sign with, and each asymmetric entry costs a signature check.
MAX_SIGNATURE_ENTRIES = 16

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Scheme(StrEnum):
    """A signature scheme the service can accept (SIGNATURE_SCHEMES)."""

    STANDARD = "standard"
    LEGACY = "legacy"


class Outcome(StrEnum):
    """Why a delivery was accepted or refused; logged as the line's `reason`."""

    VERIFIED = "verified"
    MISSING_HEADERS = "missing_headers"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    NO_MATCH = "no_match"
    STALE_TIMESTAMP = "stale_timestamp"
    SCHEME_DISABLED = "scheme_disabled"


@dataclass(frozen=True)
class Verification:
    """The outcome and the request's webhook-id (when sent)."""

    outcome: Outcome
    webhook_id: str | None = None

    @property
    def verified(self) -> bool:
        return self.outcome is Outcome.VERIFIED


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: `whsec_` secrets are base64, others UTF-8.

    Raises ValueError for a `whsec_` secret that is not base64 or is empty.
    """
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode("utf-8")
    return _decode_key(secret, SECRET_PREFIX, None, "secret")


def public_key_from_text(value: str) -> Ed25519PublicKey:
    """An ed25519 public key from `whpk_<base64 of 32 bytes>`; raises ValueError."""
    return Ed25519PublicKey.from_public_bytes(_decode_key(value, PUBLIC_KEY_PREFIX, (32,), "public key"))


def signing_key_from_text(value: str) -> Ed25519PrivateKey:
    """An ed25519 signing key from `whsk_<base64>` (32-byte seed, or seed and public key); raises ValueError."""
    raw = _decode_key(value, SIGNING_KEY_PREFIX, (32, 64), "signing key")
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def _decode_key(value: str, prefix: str, sizes: tuple[int, ...] | None, what: str) -> bytes:
    if not value.startswith(prefix):
        raise ValueError(f"a {what} must start with {prefix}")
    encoded = value[len(prefix) :].strip()
    try:
        # Padding is optional, as in the reference libraries.
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a {what} must be {prefix} followed by base64") from None
    if not raw or (sizes is not None and len(raw) not in sizes):
        raise ValueError(f"a {what} must decode to {' or '.join(map(str, sizes or (1,)))} bytes")
    return raw


class Verifier:
    """Checks deliveries against every configured secret and public key (rotation)."""

    def __init__(
        self,
        secrets: Iterable[str] = (),
        public_keys: Iterable[str] = (),
        schemes: Collection[Scheme] = (Scheme.STANDARD, Scheme.LEGACY),
        tolerance_seconds: int = 300,
    ) -> None:
        """Raises ValueError for a malformed `whsec_` secret or `whpk_` key."""
        secrets = tuple(secrets)
        self._standard_keys = tuple(secret_key_bytes(secret) for secret in secrets)
        self._legacy_keys = tuple(secret.encode("utf-8") for secret in secrets)
        self._public_keys = tuple(public_key_from_text(key) for key in public_keys)
        self._schemes = frozenset(schemes)
        self._tolerance = tolerance_seconds

    @property
    def configured(self) -> bool:
        """True when there is anything to verify with: a secret or a public key."""
        return bool(self._standard_keys or self._public_keys)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verification:
        """Judge a request by its headers (looked up by the names above) and raw body.

        A request carrying `webhook-signature` is judged by Standard Webhooks alone while
        that scheme is on; otherwise `X-Signature` by the legacy scheme.
        """
        standard_signature = headers.get(SIGNATURE_HEADER)
        legacy_signature = headers.get(LEGACY_HEADER)
        if standard_signature is not None and Scheme.STANDARD in self._schemes:
            return self._verify_standard(headers, standard_signature, body, now)
        if legacy_signature is not None and Scheme.LEGACY in self._schemes:
            outcome = Outcome.VERIFIED if self._verify_legacy(legacy_signature, body) else Outcome.NO_MATCH
            return Verification(outcome)
        if standard_signature is not None or legacy_signature is not None:
            return Verification(Outcome.SCHEME_DISABLED, webhook_id=headers.get(ID_HEADER))
        return Verification(Outcome.MISSING_HEADERS, webhook_id=headers.get(ID_HEADER))

    def _verify_legacy(self, header_value: str, body: bytes) -> bool:
        candidate = header_value.strip().lower().removeprefix(LEGACY_PREFIX)
        if _HEX_DIGEST.fullmatch(candidate) is None:
            return False
        matched = False
        for key in self._legacy_keys:
            matched |= hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), candidate)
        return matched

    def _verify_standard(self, headers: Mapping[str, str], signature: str, body: bytes, now: float) -> Verification:
        webhook_id = headers.get(ID_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        if not webhook_id or not timestamp or not signature:
            return Verification(Outcome.MISSING_HEADERS, webhook_id or None)
        if _TIMESTAMP.fullmatch(timestamp) is None:
            return Verification(Outcome.MALFORMED_TIMESTAMP, webhook_id)
        content = signed_content(webhook_id, timestamp, body)
        if not self._any_entry_matches(signature, content):
            return Verification(Outcome.NO_MATCH, webhook_id)
        if abs(now - int(timestamp)) > self._tolerance:
            return Verification(Outcome.STALE_TIMESTAMP, webhook_id)
        return Verification(Outcome.VERIFIED, webhook_id)

    def _any_entry_matches(self, header_value: str, content: bytes) -> bool:
        expected_macs = [hmac.new(key, content, hashlib.sha256).digest() for key in self._standard_keys]
        entries = [entry for entry in header_value.split(" ") if entry][:MAX_SIGNATURE_ENTRIES]
        for entry in entries:
            version, _, encoded = entry.partition(",")
            signature = _strict_base64(encoded)
            if signature is None:
                continue
            if version == "v1" and len(signature) == 32:
                matched = False
                for expected in expected_macs:
                    matched |= hmac.compare_digest(expected, signature)
                if matched:
                    return True
            elif version == "v1a" and len(signature) == 64:
                for public_key in self._public_keys:
                    try:
                        public_key.verify(signature, content)
                    except InvalidSignature:
                        continue
                    return True
        return False


def _strict_base64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _header_bytes(value: str) -> bytes:
    # WSGI hands headers over as latin-1 decoded text: this gives back the bytes sent.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def signed_content(webhook_id: str, timestamp: str | int, body: bytes) -> bytes:
    """What a Standard Webhooks signature covers: `{id}.{timestamp}.{body}`."""
    return _header_bytes(webhook_id) + b"." + str(timestamp).encode("ascii") + b"." + body


def sign_legacy(secret: str | bytes, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of `body` under `secret`, as senders put in X-Signature."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign_standard(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """A `v1,<base64>` entry for webhook-signature; `whsk_` keys give a `v1a` entry.

    Raises ValueError for a malformed `whsec_` or `whsk_` key.
    """
    content = signed_content(webhook_id, timestamp, body)
    if secret.startswith(SIGNING_KEY_PREFIX):
        return "v1a," + base64.b64encode(signing_key_from_text(secret).sign(content)).decode("ascii")
    mac = hmac.new(secret_key_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def standard_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`. Raises ValueError for a malformed key."""
    return {
        ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_standard(secret, webhook_id, timestamp, body),
    }
