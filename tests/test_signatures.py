import hashlib
import hmac

from webhook_service.signatures import sign, verify

BODY = b'{"message_id": "m1"}'


def test_sign_is_hex_hmac_sha256_of_the_raw_bytes():
    assert sign("s3cret", BODY) == hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()


def test_verify_accepts_lowercase_uppercase_and_github_prefix():
    signature = sign("s3cret", BODY)
    assert verify("s3cret", BODY, signature)
    assert verify("s3cret", BODY, signature.upper())
    assert verify("s3cret", BODY, "sha256=" + signature)
    assert verify("s3cret", BODY, "SHA256=" + signature.upper())


def test_verify_rejects_missing_wrong_truncated_and_foreign_signatures():
    signature = sign("s3cret", BODY)
    assert not verify("s3cret", BODY, None)
    assert not verify("s3cret", BODY, "")
    assert not verify("s3cret", BODY, signature[:-1])
    assert not verify("s3cret", BODY, signature + "0")
    assert not verify("other", BODY, signature)
    assert not verify("s3cret", BODY + b" ", signature)
    assert not verify("s3cret", BODY, "é" * 64)
