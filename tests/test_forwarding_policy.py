"""Forwarding, round two, below the network: which messages a destination is owed (match), how
it is reached (headers, certificates), the order its deliveries are handed out in, its rate,
and the URLs refused at start."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.support.certificates import make_server_certificate
from webhook_service.forwarding.config import ForwardConfigError, load_config
from webhook_service.forwarding.policy import Match, Policy, RateLimit
from webhook_service.storage.engine import Database
from webhook_service.storage.forwarding import (
    Outcome,
    ReplaySelection,
    claim_due,
    claim_new,
    destination_policy,
    record_outcomes,
    register_destination,
    replay,
)
from webhook_service.storage.messages import NewMessage, StoredMessage, insert_messages_if_new

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtY29uZmlnLXRlc3Rz"


def load(tmp_path, fields: str, extra: str = ""):
    path = tmp_path / "forward.toml"
    path.write_text(f'[destinations.crm]\nsecret = "{SECRET}"\n{fields}\n{extra}')
    [destination] = load_config(path)
    return destination


def stored(sender: str = "+14155550100", recipient: str = "+919876543210", text: str | None = "hi") -> StoredMessage:
    return StoredMessage("m", sender, recipient, "2025-01-15T10:00:00Z", text, "2025-01-15T10:00:01Z")


# The file.


def test_match_headers_auth_rate_and_order_are_read_from_the_destination_table(tmp_path):
    (tmp_path / "key").write_text("key-from-a-file\n")
    (tmp_path / "token").write_text("token-from-a-file\n")
    _ca, certificate, key = make_server_certificate(tmp_path)
    destination = load(
        tmp_path,
        f"""url = "https://crm.internal:8443/hooks"
headers = {{ "X-Team" = "support" }}
header_files = {{ "X-Api-Key" = "{tmp_path / "key"}" }}
bearer_token_file = "{tmp_path / "token"}"
client_cert_file = "{certificate}"
client_key_file = "{key}"
rate_per_second = 50
order = "conversation"
""",
        """[destinations.crm.match]
from = ["+919876543210", "+1415*"]
text_contains = ["ORDER", "Refund"]
""",
    )
    assert destination.headers == {
        "X-Team": "support",
        "X-Api-Key": "key-from-a-file",
        "Authorization": "Bearer token-from-a-file",
    }
    assert (destination.client_cert_file, destination.client_key_file) == (str(certificate), str(key))
    assert destination.rate_per_second == 50
    assert destination.policy.order == "conversation"
    assert destination.policy.match == Match(("+919876543210", "+1415*"), (), ("order", "refund"))
    # Values read from files are secrets: never in a repr (and so never in a log line).
    assert "key-from-a-file" not in repr(destination) and "token-from-a-file" not in repr(destination)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('url = "http://127.0.0.1:99999/in"', "url: the port must be a number from 1 to 65535"),
        ('url = "http://127.0.0.1:0/in"', "url: the port must be a number from 1 to 65535"),
        ('url = "http://127.0.0.1:/in"', "url: the port must be a number from 1 to 65535"),
        ('url = "http://user:pw@host/in"', "url: holds a user or password"),
        ('url = "http://host/in\\r\\nX-Evil: 1"', "url: holds whitespace or a control character"),
        ('url = "http://host/a b"', "url: holds whitespace or a control character"),
        ('url = "http:///in"', "url: expected an http:// or https:// URL with a host"),
        ('url = "https://h/"\nheaders = { "Webhook-Signature" = "x" }', "headers.Webhook-Signature: the forwarder"),
        ('url = "https://h/"\nheaders = { "content-type" = "x" }', "headers.content-type: the forwarder sets"),
        ('url = "https://h/"\nheaders = { "Host" = "x" }', "headers.Host: the forwarder sets"),
        ('url = "https://h/"\nheaders = { "Transfer-Encoding" = "x" }', "headers.Transfer-Encoding: the forwarder"),
        ('url = "https://h/"\nheaders = { "Connection" = "x" }', "headers.Connection: the forwarder sets"),
        ('url = "https://h/"\nheaders = { "X-A" = "a\\r\\nX-B: b" }', "headers.X-A: the value holds a control"),
        ('url = "https://h/"\nheaders = { "Bad Name" = "x" }', "headers.Bad Name: not a header name"),
        ('url = "https://h/"\nheader_files = { "X-Key" = "/no/such/file" }', "header_files.X-Key: no such file"),
        ('url = "https://h/"\nbearer_token_file = "/no/such/file"', "bearer_token_file: no such file"),
        ('url = "https://h/"\nclient_cert_file = "/etc/hostname"', "client_cert_file: give client_cert_file and"),
        ('url = "https://h/"\nrate_per_second = 0', "rate_per_second: expected a number above 0"),
        ('url = "https://h/"\nrate_per_second = "fast"', "rate_per_second: expected a number above 0"),
        ('url = "https://h/"\norder = "time"', "order: expected one of none, sender, conversation"),
        ('url = "https://h/"\nmatch = { from = ["14155550100"] }', "match.from: expected E.164 numbers"),
        ('url = "https://h/"\nmatch = { to = "+1415*" }', "match.to: expected a list of 1 to 1000 strings"),
        ('url = "https://h/"\nmatch = { to = [] }', "match.to: expected a list of 1 to 1000 strings"),
        ('url = "https://h/"\nmatch = { text = ["x"] }', "match.text: unknown field"),
        ('url = "https://h/"\nmatch = { text_contains = [""] }', "match.text_contains: expected texts of 1 to"),
        ('url = "https://h/"\nmatch = {}', "match: give at least one of from, to or text_contains"),
    ],
)
def test_a_bad_field_of_round_two_is_one_line_naming_destination_and_field(tmp_path, fields, message):
    with pytest.raises(ForwardConfigError) as raised:
        load(tmp_path, fields)
    assert str(raised.value).startswith("destination 'crm': ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_header_value_from_a_file_is_never_in_the_error(tmp_path):
    (tmp_path / "key").write_text("s3cr3t\x01value\n")
    with pytest.raises(ForwardConfigError) as raised:
        load(tmp_path, f'url = "https://h/"\nheader_files = {{ "X-Key" = "{tmp_path / "key"}" }}')
    assert "s3cr3t" not in str(raised.value) and "control character" in str(raised.value)


def test_a_key_that_is_not_the_certificates_is_refused_at_start(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _ca, certificate, _key = make_server_certificate(tmp_path / "one")
    _ca, _certificate, other_key = make_server_certificate(tmp_path / "two")
    with pytest.raises(ForwardConfigError, match="client_cert_file: not a certificate with its key"):
        load(tmp_path, f'url = "https://h/"\nclient_cert_file = "{certificate}"\nclient_key_file = "{other_key}"')


# The match and the order key.


def test_a_match_holds_when_every_given_condition_does():
    match = Match(("+919876543210", "+1415*"), ("+91*",), ("order", "refund"))
    assert match(stored("+14155550100", "+919000000000", "Your ORDER shipped"))
    assert match(stored("+919876543210", "+919000000000", "a refund"))
    assert not match(stored("+14165550100", "+919000000000", "order"))  # from: not the prefix
    assert not match(stored("+9198765432100", "+919000000000", "order"))  # from: a longer number
    assert not match(stored("+14155550100", "+14155550100", "order"))  # to
    assert not match(stored("+14155550100", "+919000000000", "hello"))  # text
    assert not match(stored("+14155550100", "+919000000000", None))  # no text has none of them
    # Folded as q folds: Unicode case folding.
    assert Match(texts=("strasse",))(stored(text="STRASSE"))
    assert Match(texts=("straße".casefold(),))(stored(text="STRASSE"))


def test_the_order_key_is_the_sender_or_the_conversation():
    message = stored("+1", "+2")
    assert Policy(order="sender").key(message) == "+1"
    assert Policy(order="conversation").key(message) == "+1 +2"
    assert Policy().key(message) is None
    assert Policy.from_document(Policy(Match(("+1*",)), "sender").document()) == Policy(Match(("+1*",)), "sender")


def test_a_rate_allows_that_many_starts_in_any_second_and_says_how_long_to_wait():
    rate = RateLimit(3)
    assert [rate.try_start(10.0), rate.try_start(10.0)] == [True, False]
    # Paced: the next one a third of a second later, brought forward by up to half of that.
    assert rate.wait_seconds(10.0) == pytest.approx(1 / 6)
    assert rate.try_start(10.17)
    assert not rate.try_start(10.4)
    assert rate.try_start(10.51)
    # Three began in the last second: the fourth waits for the first to leave it.
    assert rate.wait_seconds(10.9) == pytest.approx(0.1)
    assert not rate.try_start(10.99)
    assert rate.try_start(11.0)
    slow = RateLimit(0.5)  # one every two seconds
    assert slow.try_start(0.0) and not slow.try_start(1.9) and slow.try_start(2.0)


def test_a_rate_spreads_starts_and_keeps_its_pace_when_they_come_late():
    rate = RateLimit(10)
    starts = []
    now = 100.0
    while len(starts) < 50:
        if rate.try_start(now):
            starts.append(now)
        # A scheduler that looks every 7 ms: starts come up to 7 ms late.
        now = round(now + 0.007, 6)
    # Never a burst: no two starts closer than half an interval.
    assert min(later - earlier for earlier, later in itertools.pairwise(starts)) >= 0.05 - 1e-9
    assert max(sum(1 for other in starts if at <= other < at + 1) for at in starts) == 10
    # Late starts are caught up: 50 starts at 10 a second take about 4.9 s, not 49 x 0.105.
    assert starts[-1] - starts[0] == pytest.approx(4.9, abs=0.1)


# Owed deliveries in the database, on both backends.


@pytest.fixture
def database(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


def store(database, *messages: tuple[str, str, str, str | None]) -> None:
    with database.write_transaction() as conn:
        insert_messages_if_new(
            conn,
            [
                NewMessage(message_id, sender, recipient, "2025-01-15T10:00:00Z", text)
                for message_id, sender, recipient, text in messages
            ],
        )


def ids(claimed) -> list[str]:
    return [item.message.message_id for item in claimed]


def test_messages_the_match_leaves_out_are_never_owed_and_replay_respects_it(database):
    policy = Policy(Match(senders=("+1*",)))
    store(database, ("a", "+11", "+2", "x"), ("b", "+21", "+2", "x"), ("c", "+12", "+2", "x"))
    now = time.time()
    with database.write_transaction() as conn:
        register_destination(conn, "crm", "beginning", policy.document())
        taken = claim_new(conn, "crm", "me", now + 60, now, 10, policy)
    assert (ids(taken.claimed), taken.skipped) == (["a", "c"], 1)
    with database.write_transaction() as conn:
        record_outcomes(conn, "crm", [Outcome(item.position, delivered=True) for item in taken.claimed])
        # Another process (the command line) reads the policy the forwarder registered.
        registered = Policy.from_document(destination_policy(conn, "crm"))
        assert registered == policy
        everything = ReplaySelection(since="2025-01-01T00:00:00Z")
        assert replay(conn, "crm", everything, now, dry_run=True, policy=registered) == 2
        assert replay(conn, "crm", everything, now, dry_run=False, policy=registered) == 2
        assert ids(claim_due(conn, "crm", "me", now + 60, now, 10)) == ["a", "c"]


def test_with_an_order_only_the_first_owed_message_of_a_key_is_handed_out(database):
    policy = Policy(order="conversation")
    store(
        database,
        ("k1-first", "+1", "+2", "x"),
        ("k2-first", "+1", "+3", "x"),
        ("k1-second", "+1", "+2", "x"),
        ("k1-third", "+1", "+2", "x"),
    )
    now = time.time()
    with database.write_transaction() as conn:
        register_destination(conn, "crm", "beginning", policy.document())
        taken = claim_new(conn, "crm", "me", now + 60, now, 2, policy)
        assert ids(taken.claimed) == ["k1-first", "k2-first"]
        # The next batch: its messages wait for k1-first, unleased, in the database.
        later = claim_new(conn, "crm", "me", now + 60, now, 10, policy)
        assert (later.claimed, later.waiting) == ([], 2)
        # Another forwarder (or this one after a restart) finds nothing it may try.
        assert claim_due(conn, "crm", "other", now + 60, now + 1, 10) == []
        first = {item.message.message_id: item for item in taken.claimed}["k1-first"]
        # A failed attempt keeps the key's head: the next waits for its retries.
        failed = Outcome(first.position, delivered=False, attempts=1, next_attempt_at=now + 5, finished_at=now)
        record_outcomes(conn, "crm", [failed])
        assert claim_due(conn, "crm", "other", now + 60, now + 1, 10) == []
        assert ids(claim_due(conn, "crm", "other", now + 60, now + 6, 10)) == ["k1-first"]
        # Dead-lettered: the next of the key goes on.
        dead = Outcome(first.position, delivered=False, attempts=2, dead=True, next_attempt_at=now, finished_at=now)
        record_outcomes(conn, "crm", [dead])
        [second] = claim_due(conn, "crm", "other", now + 60, now + 7, 10)
        assert second.message.message_id == "k1-second"
        record_outcomes(conn, "crm", [Outcome(second.position, delivered=True)])
        assert ids(claim_due(conn, "crm", "other", now + 60, now + 7, 10)) == ["k1-third"]
        # Replayed, the dead letter is owed again, first of its key among what is owed.
        assert replay(conn, "crm", ReplaySelection(failed=True), now + 8, dry_run=False, policy=policy) == 1
        assert ids(claim_due(conn, "crm", "other", now + 60, now + 8, 10)) == ["k1-first"]
