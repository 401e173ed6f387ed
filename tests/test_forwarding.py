"""The forwarder's parts that need no server: its file, its retry arithmetic, its headers."""

import random

import pytest
from click.testing import CliRunner

from webhook_service.cli import main
from webhook_service.forwarding.config import ForwardConfigError, load_config
from webhook_service.forwarding.delivery import Attempt, Result, parse_retry_after, webhook_id
from webhook_service.forwarding.retries import Breaker, Decision, backoff_seconds

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtY29uZmlnLXRlc3Rz"


def write(tmp_path, text: str):
    path = tmp_path / "forward.toml"
    path.write_text(text)
    return path


def test_a_file_with_two_destinations_and_a_secret_file(tmp_path):
    secret_file = tmp_path / "audit.secret"
    secret_file.write_text(SECRET + "\n")
    path = write(
        tmp_path,
        f"""
[destinations.billing]
url = "https://billing.internal/hooks"
secret = "{SECRET}"
concurrency = 8
backoff_initial_seconds = 0.5

[destinations.audit]
url = "http://127.0.0.1:9000/in"
secret_file = "{secret_file}"
start = "beginning"
""",
    )
    billing, audit = load_config(path)
    assert (billing.name, billing.concurrency, billing.backoff_initial_seconds, billing.start) == (
        "billing",
        8,
        0.5,
        "latest",
    )
    assert (billing.timeout_seconds, billing.max_attempts, billing.max_age_seconds) == (10, 15, 259_200)
    assert (audit.secret, audit.start) == (SECRET, "beginning")
    assert SECRET not in repr(billing)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('url = "ftp://x/y"\nsecret = "s"', "destination 'billing': url: expected an http:// or https:// URL"),
        ('secret = "s"', "destination 'billing': url: required"),
        ('url = "https://x/y"', "destination 'billing': secret: give secret or secret_file"),
        ('url = "https://x/y"\nsecret = "whsec_!!!"', "destination 'billing': secret:"),
        ('url = "https://x/y"\nsecret = "s"\nconcurrency = 0', "destination 'billing': concurrency: expected a whole"),
        ('url = "https://x/y"\nsecret = "s"\nconcurrency = 2.5', "destination 'billing': concurrency:"),
        ('url = "https://x/y"\nsecret = "s"\nstart = "now"', "destination 'billing': start: expected one of"),
        ('url = "https://x/y"\nsecret = "s"\ntimeout_seconds = "10"', "destination 'billing': timeout_seconds:"),
        ('url = "https://x/y"\nsecret = "s"\nbackoff_max_seconds = 1', "destination 'billing': backoff_max_seconds:"),
        ('url = "https://x/y"\nsecret = "s"\nretries = 3', "destination 'billing': retries: unknown field"),
        ('url = "https://x/y"\nsecret = "s"\nca_file = "/nowhere.pem"', "destination 'billing': ca_file: no such"),
        ('url = "https://x/y"\nsecret_file = "/nowhere"', "destination 'billing': secret_file: cannot read"),
    ],
)
def test_a_bad_field_is_named_with_its_destination(tmp_path, table, message):
    path = write(tmp_path, f"[destinations.billing]\n{table}\n")
    with pytest.raises(ForwardConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_bad_file_is_one_line_and_exit_2_from_the_command_line(tmp_path, monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    path = write(tmp_path, '[destinations.billing]\nurl = "https://x/y"\nsecret = "s"\nconcurrency = -1\n')
    result = CliRunner().invoke(main, ["forward", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: destination 'billing': concurrency: expected a whole number from 1 to 256"
    ]
    not_toml = CliRunner().invoke(main, ["forward", "--config", str(write(tmp_path, "[destinations\n"))])
    assert not_toml.exit_code == 2 and "not TOML" in not_toml.output
    monkeypatch.delenv("FORWARD_CONFIG", raising=False)
    missing = CliRunner().invoke(main, ["forward"])
    assert missing.exit_code == 2 and "FORWARD_CONFIG" in missing.output


def test_backoff_waits_between_half_and_all_of_the_doubling_ceiling(tmp_path):
    [destination] = load_config(
        write(
            tmp_path,
            '[destinations.d]\nurl = "https://x/y"\nsecret = "s"\nbackoff_initial_seconds = 5\nbackoff_max_seconds = 60\n',
        )
    )
    rng = random.Random(3)
    for failures, ceiling in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (12, 60)]:
        waits = [backoff_seconds(destination, failures, rng) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4, "no jitter"


def test_retry_after_as_seconds_or_an_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now) == pytest.approx(30.0)
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_the_webhook_id_is_stable_and_a_safe_header_whatever_the_message_id():
    assert webhook_id("m1") == webhook_id("m1") != webhook_id("m2")
    for awkward in ("line\nbreak", "\x00nul", "ünïcode ✓", "x" * 256):
        identifier = webhook_id(awkward)
        assert identifier.startswith("msg_") and identifier.isascii()
        assert all(character.isalnum() or character == "_" for character in identifier)


def test_the_breaker_takes_a_destination_for_down_after_three_failures_and_decides_each_message(tmp_path):
    [destination] = load_config(
        write(
            tmp_path,
            '[destinations.d]\nurl = "https://x/y"\nsecret = "s"\nconcurrency = 8\nmax_attempts = 4\n'
            "backoff_initial_seconds = 1\nbackoff_max_seconds = 60\n",
        )
    )
    breaker = Breaker(destination, random.Random(5))
    failed = Attempt(Result.RETRYABLE_STATUS, 0.1, status=503)
    # A refusal (4xx) is a dead letter at once and says nothing of the destination's health.
    assert breaker.decide(0, 0.0, Attempt(Result.REFUSED, 0.1, status=400), 10.0) == Decision(dead=True)
    assert breaker.allowed(10.0) == 8
    # Two failures: retried after a backoff, the destination still open.
    for attempts_before in (0, 1):
        decision = breaker.decide(attempts_before, 0.0, failed, 10.0)
        assert not decision.dead and 10.0 < decision.retry_at <= 10.0 + 2**attempts_before
    assert not breaker.probing and breaker.allowed(10.0) == 8
    # The third in a row: taken for down, one probe at a time once the spacing has passed.
    breaker.decide(2, 0.0, failed, 20.0)
    assert breaker.probing and breaker.allowed(20.0) == 0
    assert breaker.allowed(breaker.next_probe_at) == 1
    # The fourth attempt of a message is its last: a dead letter.
    assert breaker.decide(3, 0.0, failed, 30.0) == Decision(dead=True)
    # A success opens the destination again.
    assert breaker.decide(0, 0.0, Attempt(Result.DELIVERED, 0.1, status=200), 31.0) == Decision(delivered=True)
    assert not breaker.probing and breaker.allowed(31.0) == 8


def test_a_retry_after_pauses_the_whole_destination_up_to_an_hour(tmp_path):
    [destination] = load_config(
        write(tmp_path, '[destinations.d]\nurl = "https://x/y"\nsecret = "s"\nmax_age_seconds = 100000\n')
    )
    breaker = Breaker(destination, random.Random(1))
    decision = breaker.decide(0, 0.0, Attempt(Result.RETRYABLE_STATUS, 0.1, status=429, retry_after=120), 50.0)
    assert decision.retry_at == breaker.paused_until == 170.0
    decision = breaker.decide(0, 0.0, Attempt(Result.RETRYABLE_STATUS, 0.1, status=503, retry_after=86400), 50.0)
    assert decision.retry_at == breaker.paused_until == 50.0 + 3600
    # A message owed longer than max_age_seconds is not tried again.
    late = breaker.decide(0, 0.0, Attempt(Result.TIMEOUT, 3.0), 100001.0)
    assert late == Decision(dead=True)
