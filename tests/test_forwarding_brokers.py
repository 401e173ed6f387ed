"""Broker destinations in the forwarder's file: NATS JetStream and AMQP, their fields, and the
one-line errors for what they do not take."""

from __future__ import annotations

import pytest

from webhook_service.forwarding.config import ForwardConfigError, load_config

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtY29uZmlnLXRlc3Rz"


def load(tmp_path, fields: str):
    path = tmp_path / "forward.toml"
    path.write_text(f"[destinations.bus]\n{fields}\n")
    [destination] = load_config(path)
    return destination


def test_a_nats_destination_publishes_to_a_subject_as_a_user_or_with_a_token(tmp_path):
    (tmp_path / "password").write_text("nats-password\n")
    (tmp_path / "token").write_text("nats-token\n")
    with_user = load(
        tmp_path,
        f'url = "nats://127.0.0.1:4222"\nsubject = "webhooks.inbound"\nsecret = "{SECRET}"\n'
        f'user = "forwarder"\npassword_file = "{tmp_path / "password"}"',
    )
    assert (with_user.kind, with_user.broker.subject, with_user.broker.user) == (
        "nats",
        "webhooks.inbound",
        "forwarder",
    )
    assert with_user.broker.password == "nats-password" and with_user.secret == SECRET
    with_token = load(
        tmp_path, f'url = "tls://nats.internal:4222"\nsubject = "webhooks"\ntoken_file = "{tmp_path / "token"}"'
    )
    # No secret: published without a signature (the broker authenticates the publisher).
    assert (with_token.broker.token, with_token.secret) == ("nats-token", None)
    assert "nats-password" not in repr(with_user) and "nats-token" not in repr(with_token)


def test_an_amqp_destination_publishes_to_an_exchange_with_a_routing_key(tmp_path):
    (tmp_path / "password").write_text("guest\n")
    destination = load(
        tmp_path,
        f'url = "amqps://rabbit.internal:5671/billing"\nexchange = ""\nrouting_key = "inbound"\n'
        f'user = "guest"\npassword_file = "{tmp_path / "password"}"',
    )
    assert destination.kind == "amqp"
    assert (destination.broker.exchange, destination.broker.routing_key) == ("", "inbound")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('url = "nats://h:4222"', "subject: expected a NATS subject"),
        ('url = "nats://h:4222"\nsubject = "webhooks.*"', "subject: expected a NATS subject"),
        ('url = "nats://h:4222"\nsubject = "a..b"', "subject: expected a NATS subject"),
        ('url = "nats://h:99999"\nsubject = "a"', "url: the port must be a number from 1 to 65535"),
        ('url = "nats://u:p@h:4222"\nsubject = "a"', "url: holds a user or password"),
        ('url = "amqp://h:5672/"\nrouting_key = "q"', "exchange: expected an exchange name"),
        ('url = "amqp://h:5672/"\nexchange = "x"', "routing_key: expected a routing key"),
        (
            'url = "amqp://h/"\nexchange = ""\nrouting_key = "q"\nsubject = "a"',
            "subject: not a field of amqp destinations",
        ),
        (
            'url = "nats://h:4222"\nsubject = "a"\nheaders = { "X-A" = "b" }',
            "headers: not a field of nats destinations",
        ),
        ('url = "https://h/"\nsecret = "s"\nsubject = "a"', "subject: not a field of http destinations"),
        ('url = "nats://h:4222"\nsubject = "a"\nuser = "u"', "user: give user and password_file together"),
        ('url = "nats://h:4222"\nsubject = "a"\ncreds_file = "/no/such/file"', "creds_file: no such file"),
        ('url = "kafka://h:9092"\nsubject = "a"', "url: expected an http:// or https:// URL"),
    ],
)
def test_a_bad_broker_field_is_one_line_naming_destination_and_field(tmp_path, fields, message):
    with pytest.raises(ForwardConfigError) as raised:
        load(tmp_path, fields)
    assert str(raised.value).startswith("destination 'bus': ") and message in str(raised.value)


def test_a_creds_file_must_be_a_nats_creds_file_and_is_never_shown(tmp_path):
    (tmp_path / "password").write_text("a-password-given-as-creds\n")
    with pytest.raises(ForwardConfigError) as raised:
        load(tmp_path, f'url = "nats://h:4222"\nsubject = "a"\ncreds_file = "{tmp_path / "password"}"')
    assert "creds_file: " in str(raised.value) and "is not a NATS .creds file" in str(raised.value)
    assert "a-password-given-as-creds" not in str(raised.value)
    creds = tmp_path / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\nSUAM\n------END USER NKEY SEED------\n"
    )
    destination = load(tmp_path, f'url = "nats://h:4222"\nsubject = "a"\ncreds_file = "{creds}"')
    assert destination.broker.creds_file == str(creds)


def test_nats_takes_one_way_of_signing_in(tmp_path):
    (tmp_path / "password").write_text("p\n")
    (tmp_path / "token").write_text("t\n")
    with pytest.raises(ForwardConfigError, match="token_file: give one of user"):
        load(
            tmp_path,
            f'url = "nats://h:4222"\nsubject = "a"\nuser = "u"\npassword_file = "{tmp_path / "password"}"\n'
            f'token_file = "{tmp_path / "token"}"',
        )
