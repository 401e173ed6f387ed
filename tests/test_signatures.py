import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks import Webhook

from webhook_service.signatures import (
    MAX_SIGNATURE_ENTRIES,
    Outcome,
    Scheme,
    Verifier,
    secret_key_bytes,
    sign_legacy,
    sign_standard,
    signing_key_from_text,
    standard_headers,
)

BODY = b'{"message_id": "m1"}'
NOW = 1_700_000_000
WHSEC = "whsec_" + base64.b64encode(b"a 24-byte random key....").decode()

# The published test vector of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def key_pair() -> tuple[str, str]:
    """A `whsk_` signing key and its `whpk_` public key."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whsk_" + base64.b64encode(seed + public).decode(), "whpk_" + base64.b64encode(public).decode()


def reference_sign(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The reference library's signature (it base64-decodes every str secret)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(secret).sign(webhook_id, moment, body.decode())


def verify(verifier: Verifier, headers: dict, body: bytes = BODY, now: float = NOW) -> Outcome:
    return verifier.verify(headers, body, now).outcome


def test_the_specification_vector_is_reproduced_and_accepted():
    assert sign_standard(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}
    assert verify(Verifier([SPEC_SECRET]), headers, SPEC_BODY, SPEC_TIMESTAMP) is Outcome.VERIFIED


@pytest.mark.parametrize("seed", range(20))
def test_signatures_of_the_reference_library_are_accepted(seed):
    rng = random.Random(seed)
    raw_key = rng.randbytes(rng.randint(1, 64))
    whsec = "whsec_" + base64.b64encode(raw_key).decode()
    body = rng.randbytes(rng.randint(0, 300)).hex().encode()
    webhook_id = f"msg_{rng.getrandbits(64):x}"
    expected = reference_sign(whsec, webhook_id, NOW, body)
    assert sign_standard(whsec, webhook_id, NOW, body) == expected
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(NOW), "webhook-signature": expected}
    assert verify(Verifier([whsec]), headers, body) is Outcome.VERIFIED


def test_a_plain_secret_is_used_as_its_utf8_bytes():
    assert secret_key_bytes("plain-sécret") == "plain-sécret".encode()
    signature = reference_sign("plain-sécret".encode(), "id1", NOW, BODY)
    headers = {"webhook-id": "id1", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert verify(Verifier(["plain-sécret"]), headers) is Outcome.VERIFIED


def test_one_matching_entry_among_unknown_and_malformed_ones_is_enough():
    good = sign_standard(WHSEC, "id1", NOW, BODY)
    header = f"v2,abc v1,@@@ v1 v1,{'A' * 44} {good} v1a,xyz"
    headers = {"webhook-id": "id1", "webhook-timestamp": str(NOW), "webhook-signature": header}
    assert verify(Verifier([WHSEC]), headers) is Outcome.VERIFIED


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-id": "id2"},
        {"webhook-timestamp": str(NOW + 1)},
        {"webhook-signature": "v2," + sign_standard(WHSEC, "id1", NOW, BODY)[3:]},
    ],
)
def test_the_id_and_timestamp_are_covered_by_the_signature(change):
    headers = standard_headers(WHSEC, "id1", NOW, BODY) | change
    assert verify(Verifier([WHSEC]), headers) is Outcome.NO_MATCH


def test_a_changed_body_does_not_match():
    headers = standard_headers(WHSEC, "id1", NOW, BODY)
    assert verify(Verifier([WHSEC]), headers, BODY + b" ") is Outcome.NO_MATCH


@pytest.mark.parametrize("offset, outcome", [(300, Outcome.VERIFIED), (301, Outcome.STALE_TIMESTAMP)])
def test_the_tolerance_window_holds_both_ways(offset, outcome):
    verifier = Verifier([WHSEC], tolerance_seconds=300)
    for timestamp in (NOW - offset, NOW + offset):
        assert verify(verifier, standard_headers(WHSEC, "id1", timestamp, BODY)) is outcome


def test_a_stale_timestamp_is_only_reported_for_a_matching_signature():
    headers = standard_headers("whsec_b3RoZXI=", "id1", NOW - 10_000, BODY)
    assert verify(Verifier([WHSEC]), headers) is Outcome.NO_MATCH


@pytest.mark.parametrize("timestamp", ["", "1.5", "-1", "+1700000000", " 1700000000", "1e9", "9" * 13, "١٢٣"])
def test_malformed_timestamps_are_refused(timestamp):
    headers = standard_headers(WHSEC, "id1", NOW, BODY) | {"webhook-timestamp": timestamp}
    assert verify(Verifier([WHSEC]), headers) in (Outcome.MALFORMED_TIMESTAMP, Outcome.MISSING_HEADERS)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp"])
def test_a_missing_standard_header_is_refused(missing):
    headers = standard_headers(WHSEC, "id1", NOW, BODY)
    del headers[missing]
    assert verify(Verifier([WHSEC]), headers) is Outcome.MISSING_HEADERS


def test_every_configured_secret_is_accepted_on_both_schemes():
    verifier = Verifier(["old-secret", WHSEC])
    for secret in ("old-secret", WHSEC):
        assert verify(verifier, standard_headers(secret, "id1", NOW, BODY)) is Outcome.VERIFIED
        assert verify(verifier, {"X-Signature": sign_legacy(secret, BODY)}) is Outcome.VERIFIED
    assert verify(verifier, {"X-Signature": sign_legacy("retired", BODY)}) is Outcome.NO_MATCH


def test_legacy_accepts_either_case_and_the_github_prefix():
    verifier = Verifier(["s3cret"])
    signature = sign_legacy("s3cret", BODY)
    assert signature == hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    for header in (signature, signature.upper(), "sha256=" + signature, "SHA256=" + signature.upper()):
        assert verify(verifier, {"X-Signature": header}) is Outcome.VERIFIED


@pytest.mark.parametrize("header", ["", "0" * 64, "not hex", "é" * 64, "sha256="])
def test_legacy_refuses_wrong_or_malformed_signatures(header):
    assert verify(Verifier(["s3cret"]), {"X-Signature": header}) is Outcome.NO_MATCH


def test_a_request_with_webhook_signature_is_judged_by_standard_alone():
    headers = {"webhook-signature": "v1,AAAA", "X-Signature": sign_legacy("s3cret", BODY)}
    assert verify(Verifier(["s3cret"]), headers).value == "missing_headers"
    assert verify(Verifier(["s3cret"], schemes=[Scheme.LEGACY]), headers) is Outcome.VERIFIED


def test_a_disabled_scheme_is_refused_with_its_own_reason():
    legacy = {"X-Signature": sign_legacy("s3cret", BODY)}
    standard = standard_headers("s3cret", "id1", NOW, BODY)
    assert verify(Verifier(["s3cret"], schemes=[Scheme.STANDARD]), legacy) is Outcome.SCHEME_DISABLED
    assert verify(Verifier(["s3cret"], schemes=[Scheme.LEGACY]), standard) is Outcome.SCHEME_DISABLED
    assert verify(Verifier(["s3cret"]), {}) is Outcome.MISSING_HEADERS


def test_asymmetric_v1a_signatures_verify_against_public_keys():
    signing_key, public_key = key_pair()
    other_signing_key, _ = key_pair()
    verifier = Verifier(public_keys=[public_key])
    assert verifier.configured
    headers = standard_headers(signing_key, "id1", NOW, BODY)
    assert headers["webhook-signature"].startswith("v1a,")
    assert verify(verifier, headers) is Outcome.VERIFIED
    assert verify(verifier, headers, BODY + b"x") is Outcome.NO_MATCH
    assert verify(verifier, standard_headers(other_signing_key, "id1", NOW, BODY)) is Outcome.NO_MATCH
    assert verify(verifier, {"X-Signature": sign_legacy("", BODY)}) is Outcome.NO_MATCH


def test_v1_and_v1a_entries_stand_side_by_side():
    signing_key, public_key = key_pair()
    both = f"{sign_standard('whsec_b3RoZXI=', 'id1', NOW, BODY)} {sign_standard(signing_key, 'id1', NOW, BODY)}"
    headers = {"webhook-id": "id1", "webhook-timestamp": str(NOW), "webhook-signature": both}
    assert verify(Verifier([WHSEC], [public_key]), headers) is Outcome.VERIFIED
    assert verify(Verifier([WHSEC]), headers) is Outcome.NO_MATCH


def test_a_32_byte_seed_is_a_signing_key_too():
    signing_key, public_key = key_pair()
    seed_only = "whsk_" + base64.b64encode(base64.b64decode(signing_key[5:])[:32]).decode()
    assert (
        signing_key_from_text(seed_only).private_bytes_raw() == signing_key_from_text(signing_key).private_bytes_raw()
    )
    assert verify(Verifier(public_keys=[public_key]), standard_headers(seed_only, "id1", NOW, BODY)).value == "verified"


def test_only_the_first_entries_of_a_long_header_are_examined():
    good = sign_standard(WHSEC, "id1", NOW, BODY)
    padding = " ".join(["v1," + "A" * 44] * MAX_SIGNATURE_ENTRIES)
    headers = {"webhook-id": "id1", "webhook-timestamp": str(NOW)}
    assert verify(Verifier([WHSEC]), headers | {"webhook-signature": f"{padding} {good}"}) is Outcome.NO_MATCH
    assert verify(Verifier([WHSEC]), headers | {"webhook-signature": f"{good} {padding}"}) is Outcome.VERIFIED


@pytest.mark.parametrize("key", ["whsec_!!!", "whsec_", "whpk_AAAA"])
def test_malformed_keys_are_refused(key):
    with pytest.raises(ValueError):
        Verifier([key] if key.startswith("whsec") else [], [key] if key.startswith("whpk") else [])


def test_nothing_configured_is_reported():
    assert not Verifier().configured
    assert Verifier(["s"]).configured


@pytest.mark.parametrize("seed", range(300))
def test_fuzzed_headers_never_raise(seed):
    rng = random.Random(seed)
    _, public_key = key_pair() if seed % 50 == 0 else (None, None)
    verifier = Verifier([WHSEC, "plain"], [public_key] if public_key else [])

    def junk() -> str:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 80)).decode("latin-1")
        if kind == 1:
            return " ".join(
                rng.choice(["v1,", "v1a,", "v2,", ",", ""])
                + base64.b64encode(rng.randbytes(rng.choice([0, 31, 32, 64, 65]))).decode()
                for _ in range(rng.randint(0, 200))
            )
        if kind == 2:
            return str(rng.choice([-1, 0, 2**63, 10**40, NOW]))
        if kind == 3:
            return "x" * rng.randint(0, 9000)
        if kind == 4:
            return "v1," + "=" * rng.randint(0, 10) + "@"
        return sign_standard(WHSEC, "id1", NOW, BODY)

    headers = {name: junk() for name in ("webhook-id", "webhook-timestamp", "webhook-signature") if rng.random() < 0.8}
    outcome = verifier.verify(headers, BODY, NOW).outcome
    assert isinstance(outcome, Outcome)
