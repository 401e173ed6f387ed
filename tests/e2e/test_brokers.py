"""Forwarding into real brokers: gunicorn stores, `webhook-service forward` publishes to a
`nats-server -js` stream or a `rabbitmq-server` queue the test starts, at least once through a
killed forwarder and a killed broker."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.brokers import NatsServer, RabbitServer
from tests.support.certificates import make_server_certificate
from tests.support.forwarder import FORWARD_SECRET, destination_toml, forwarder, most_in_a_second, post_messages
from tests.support.messages import E2E_SECRET, make_message
from tests.support.metrics import parse_metrics, value
from tests.support.nats_accounts import NatsAccounts
from tests.support.servers import Load, request, run_cli, signed_post, wait_until
from webhook_service.forwarding.delivery import webhook_id

# About the brokers, not the database: once, on SQLite.
pytestmark = [pytest.mark.e2e, pytest.mark.sqlite_only]

FAST_RETRIES = {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 1, "timeout_seconds": 3}


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    certificates = make_server_certificate(tmp_path_factory.mktemp("rabbit-certificates"))
    server = RabbitServer(tmp_path_factory.mktemp("rabbit"), tls=certificates).start()
    yield server
    server.stop()


def verified(body: bytes, headers: dict) -> bool:
    try:
        Webhook(FORWARD_SECRET).verify(body, {name.lower(): value for name, value in headers.items()})
    except Exception:  # noqa: BLE001 - the assertion says which
        return False
    return True


def test_jetstream_gets_each_message_once_acknowledged_signed_and_named_by_its_webhook_id(
    tmp_path, server_env, served, nats_server
):
    server, started = served
    nats_server.add_stream("MESSAGES", ["webhooks.>"], duplicate_window=120)
    # In one conversation's order (several publishes await their acknowledgements at once
    # otherwise), and only the messages that match.
    config = destination_toml(
        "stream",
        nats_server.url,
        subject="webhooks.inbound",
        order="conversation",
        concurrency=4,
        match={"text_contains": ["TEXT OF"]},
    )
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "nats", 5)
    assert signed_post(server.port, make_message(message_id="nats-unmatched", text="not for the stream")).status == 200

    assert wait_until(lambda: len(nats_server.stream_messages("MESSAGES")) == 5, timeout=30)
    stored = nats_server.stream_messages("MESSAGES")
    assert [json.loads(item.data)["message_id"] for item in stored] == ids
    assert wait_until(
        lambda: value(parse_metrics(process.metrics()), "webhook_forward_skipped_total", destination="stream") == 1
    )
    for item in stored:
        message_id = json.loads(item.data)["message_id"]
        assert item.headers["Nats-Msg-Id"] == item.headers["webhook-id"] == webhook_id(message_id)
        assert verified(item.data, item.headers)
    assert wait_until(lambda: process.attempts("stream", "delivered") == 5, timeout=10)


def errors_of(process, destination: str) -> list[str]:
    """The errors the destination's attempts logged so far."""
    return [
        line["error"] for line in process.log_lines() if line.get("destination") == destination and line.get("error")
    ]


def refusals(process, destination: str) -> str:
    """The errors the destination's attempts logged, once one of them names a refused sign-in.
    The server writes its -ERR and closes; on a loaded machine the close can reach the client
    first (a reset), so an attempt may only say the connection was lost: those that follow
    name the refusal."""
    wait_until(lambda: any("Authorization Violation" in error for error in errors_of(process, destination)), timeout=30)
    return " ".join(errors_of(process, destination))


def test_a_nats_server_that_requires_a_user_takes_messages_only_from_a_destination_signed_in_as_one(
    tmp_path, server_env, served
):
    server, started = served
    guarded = NatsServer(tmp_path / "guarded", user="forwarder", password="nats-password-in-a-file").start()
    try:
        guarded.add_stream("GUARDED", ["webhooks.guarded"])
        (tmp_path / "right").write_text("nats-password-in-a-file\n")
        (tmp_path / "wrong").write_text("not-the-password\n")
        config = destination_toml(
            "signed-in",
            guarded.url,
            subject="webhooks.guarded",
            user="forwarder",
            password_file=str(tmp_path / "right"),
        ) + destination_toml(
            "refused",
            guarded.url,
            subject="webhooks.guarded",
            user="forwarder",
            password_file=str(tmp_path / "wrong"),
            **FAST_RETRIES,
        )
        process = forwarder(tmp_path, server_env, started, config)
        post_messages(server.port, "guarded", 2)
        assert wait_until(lambda: process.attempts("signed-in", "delivered") == 2, timeout=30)
        assert wait_until(lambda: process.attempts("refused", "connection_error") >= 2, timeout=30)
        assert process.attempts("refused", "delivered") == 0
        assert "Authorization Violation" in refusals(process, "refused")
        assert len(guarded.stream_messages("GUARDED")) == 2
        assert "nats-password-in-a-file" not in process.output() and "not-the-password" not in process.output()
    finally:
        guarded.kill()


def test_a_nats_server_in_operator_mode_takes_messages_only_from_a_destination_with_its_accounts_creds_file(
    tmp_path, server_env, served
):
    server, started = served
    guarded = NatsServer(tmp_path / "operator", accounts=NatsAccounts.make()).start()
    try:
        guarded.add_stream("ACCOUNT", ["webhooks.account"])
        # A user of an account this server does not know: signed well, trusted by nobody.
        stranger = NatsAccounts.make("stranger").write_creds(tmp_path / "stranger.creds")
        config = destination_toml(
            "with-creds", guarded.url, subject="webhooks.account", creds_file=str(guarded.creds)
        ) + destination_toml(
            "stranger", guarded.url, subject="webhooks.account", creds_file=str(stranger), **FAST_RETRIES
        )
        process = forwarder(tmp_path, server_env, started, config)
        ids = post_messages(server.port, "creds", 2)
        assert wait_until(lambda: process.attempts("with-creds", "delivered") == 2, timeout=30)
        assert wait_until(lambda: process.attempts("stranger", "connection_error") >= 2, timeout=30)
        assert process.attempts("stranger", "delivered") == 0
        assert [json.loads(item.data)["message_id"] for item in guarded.stream_messages("ACCOUNT")] == ids
        assert "Authorization Violation" in refusals(process, "stranger")
        # Neither the seed nor the JWT of a .creds file is ever logged.
        for creds in (guarded.creds, stranger):
            for line in creds.read_text().splitlines():
                if len(line) > 40 and not line.startswith(("-", "*")):
                    assert line not in process.output()
    finally:
        guarded.kill()


def test_a_nats_server_with_tls_and_a_token_takes_messages_from_a_destination_that_trusts_its_ca_and_shows_it(
    tmp_path, server_env, served
):
    server, started = served
    ca, certificate, key = make_server_certificate(tmp_path)
    guarded = NatsServer(tmp_path / "tls", token="nats-token-in-a-file", tls=(ca, certificate, key)).start()
    try:
        guarded.add_stream("TLS", ["webhooks.tls"])
        (tmp_path / "token").write_text("nats-token-in-a-file\n")
        trusted = {"subject": "webhooks.tls", "token_file": str(tmp_path / "token")}
        config = (
            destination_toml("trusting", guarded.url, ca_file=str(ca), **trusted)
            # tls:// with the system's CAs, which do not know the test's: the certificate is refused.
            + destination_toml("untrusting", guarded.url.replace("nats://", "tls://"), **trusted, **FAST_RETRIES)
            + destination_toml("no-token", guarded.url, subject="webhooks.tls", ca_file=str(ca), **FAST_RETRIES)
        )
        process = forwarder(tmp_path, server_env, started, config)
        ids = post_messages(server.port, "tls", 2)
        assert wait_until(lambda: process.attempts("trusting", "delivered") == 2, timeout=30)
        assert wait_until(lambda: process.attempts("untrusting", "connection_error") >= 2, timeout=30)
        assert wait_until(lambda: process.attempts("no-token", "connection_error") >= 2, timeout=30)
        assert process.attempts("untrusting", "delivered") == process.attempts("no-token", "delivered") == 0
        assert [json.loads(item.data)["message_id"] for item in guarded.stream_messages("TLS")] == ids
        refused = errors_of(process, "untrusting")
        # Each attempt, also one that waited for another's connection, names the refused certificate.
        assert all("CERTIFICATE_VERIFY_FAILED" in error for error in refused), refused
        assert "nats-token-in-a-file" not in process.output()
    finally:
        guarded.kill()


def test_rate_per_second_bounds_the_publishes_to_a_stream_in_any_second(tmp_path, server_env, served, nats_server):
    server, started = served
    nats_server.add_stream("RATED", ["webhooks.rated"])
    ids = post_messages(server.port, "rated", 25)
    config = destination_toml("capped", nats_server.url, subject="webhooks.rated", rate_per_second=10, concurrency=16)
    process = forwarder(tmp_path, server_env, started, config)

    assert wait_until(lambda: len(nats_server.stream_messages("RATED")) == 25, timeout=30)
    stored = nats_server.stream_messages("RATED")
    assert sorted(json.loads(item.data)["message_id"] for item in stored) == ids

    # When each publish started, as the cap counted it (the forwarder's log line says): at
    # most 10 in any second, and the cap used, not more (25 one tenth of a second apart span
    # 2.4 s; without the cap, a fraction of one).
    assert wait_until(lambda: len(process.attempt_starts()) == 25, timeout=10)
    moments = process.attempt_starts()
    assert most_in_a_second(moments) <= 10
    assert 2.0 <= moments[-1] - moments[0] < 5


def test_dead_letters_of_a_stream_are_listed_shown_and_replayed_into_it_once_it_exists(
    tmp_path, server_env, served, nats_server
):
    server, started = served
    config = destination_toml("stream", nats_server.url, subject="webhooks.later", max_attempts=2, **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "dead", 2)

    def dead_letters() -> list[str]:
        listed = run_cli(
            server_env, "deliveries", "--destination", "stream", "--failed", "--format", "jsonl", text=True
        )
        return sorted(json.loads(line)["message_id"] for line in listed.stdout.splitlines())

    assert wait_until(lambda: dead_letters() == ids, timeout=30)
    assert process.attempts("stream", "retryable_status") == 4
    assert value(parse_metrics(process.metrics()), "webhook_forward_dead_lettered_total", destination="stream") == 2
    # /stats/forwarding (the console's view) names them as it does for HTTP destinations.
    [shown] = request(server.port, "GET", "/stats/forwarding").json()["destinations"]
    assert shown["name"] == "stream" and sorted(item["message_id"] for item in shown["latest_dead_letters"]) == ids

    nats_server.add_stream("LATER", ["webhooks.later"])
    replayed = run_cli(server_env, "replay", "--destination", "stream", "--failed", text=True)
    assert replayed.stdout.strip() == "queued 2 messages for stream"
    assert wait_until(lambda: len(nats_server.stream_messages("LATER")) == 2, timeout=30)
    assert sorted(json.loads(item.data)["message_id"] for item in nats_server.stream_messages("LATER")) == ids
    assert wait_until(lambda: dead_letters() == [])


def test_no_stream_for_the_subject_is_retried_until_there_is_one(tmp_path, server_env, served, nats_server):
    server, started = served
    config = destination_toml("stream", nats_server.url, subject="webhooks.late", **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "late", 3)
    assert wait_until(lambda: process.attempts("stream", "retryable_status") >= 3, timeout=30)
    nats_server.add_stream("LATE", ["webhooks.late"])
    assert wait_until(lambda: len(nats_server.stream_messages("LATE")) == 3, timeout=30)
    assert sorted(json.loads(item.data)["message_id"] for item in nats_server.stream_messages("LATE")) == ids
    lines = [line for line in process.log_lines() if line.get("outcome") == "retryable_status"]
    assert lines and lines[0]["error"] == "no stream for the subject"


def test_a_full_stream_is_retried_until_it_takes_messages_again(tmp_path, server_env, served, nats_server):
    server, started = served
    # Room for two messages, and new ones refused once it is full.
    nats_server.add_stream("SMALL", ["webhooks.small"], max_msgs=2, discard="new")
    config = destination_toml("stream", nats_server.url, subject="webhooks.small", **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "full", 4)
    assert wait_until(lambda: process.attempts("stream", "retryable_status") >= 2, timeout=30)
    assert len(nats_server.stream_messages("SMALL")) == 2
    lines = [line for line in process.log_lines() if line.get("outcome") == "retryable_status"]
    assert "maximum messages exceeded" in lines[0]["error"]
    nats_server.run(lambda jetstream: jetstream.update_stream(name="SMALL", subjects=["webhooks.small"], max_msgs=10))
    assert wait_until(lambda: len(nats_server.stream_messages("SMALL")) == 4, timeout=30)
    assert sorted(json.loads(item.data)["message_id"] for item in nats_server.stream_messages("SMALL")) == ids


def test_every_acknowledged_message_reaches_the_stream_once_through_a_killed_broker_and_forwarder(
    tmp_path, server_env, served, nats_server
):
    server, started = served
    nats_server.add_stream("MESSAGES", ["webhooks.>"], duplicate_window=300)
    config = destination_toml("stream", nats_server.url, subject="webhooks.inbound", concurrency=8, **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    with Load(server.port, E2E_SECRET, threads=4, prefix="through") as load:
        time.sleep(1.5)
        nats_server.kill()  # messages in flight are lost or acknowledged late; both are retried
        time.sleep(1.0)
        nats_server.start()
        time.sleep(1.0)
        process.kill()
        process = forwarder(tmp_path, server_env, started, config)
        time.sleep(1.5)
    acknowledged = set(load.acknowledged)
    assert len(acknowledged) > 50

    def in_stream() -> list[str]:
        return [json.loads(item.data)["message_id"] for item in nats_server.stream_messages("MESSAGES")]

    assert wait_until(lambda: acknowledged <= set(in_stream()), timeout=60), len(acknowledged - set(in_stream()))
    # Sent again only what was in flight, and JetStream's window dropped those resends.
    stream = in_stream()
    assert len(stream) == len(set(stream)) == len(acknowledged)


def test_rabbitmq_gets_persistent_confirmed_messages_with_their_id_and_signature(tmp_path, server_env, served, rabbit):
    server, started = served
    rabbit.declare_queue("inbound")
    (tmp_path / "rabbit-password").write_text("guest\n")
    config = destination_toml(
        "queue",
        rabbit.url,
        exchange="",
        routing_key="inbound",
        user="guest",
        password_file=str(tmp_path / "rabbit-password"),
        order="conversation",
        concurrency=4,
    )
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "amqp", 5)
    assert wait_until(lambda: process.attempts("queue", "delivered") == 5, timeout=30)

    taken = rabbit.queue_messages("inbound")
    assert [json.loads(item.body)["message_id"] for item in taken] == ids
    for item in taken:
        message_id = json.loads(item.body)["message_id"]
        assert item.message_id == item.headers["webhook-id"] == webhook_id(message_id)
        assert item.content_type == "application/json" and item.delivery_mode.value == 2
        assert verified(item.body, {name: str(value) for name, value in item.headers.items()})


def test_amqps_delivers_to_a_destination_that_trusts_the_brokers_ca_and_refuses_one_that_does_not(
    tmp_path, server_env, served, rabbit
):
    server, started = served
    rabbit.declare_queue("secure")
    ca = rabbit.tls[0]
    config = destination_toml(
        "trusting", rabbit.tls_url, exchange="", routing_key="secure", ca_file=str(ca)
    ) + destination_toml("untrusting", rabbit.tls_url, exchange="", routing_key="secure", **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "amqps", 2)
    assert wait_until(lambda: process.attempts("trusting", "delivered") == 2, timeout=30)
    assert wait_until(lambda: process.attempts("untrusting", "connection_error") >= 2, timeout=30)
    assert process.attempts("untrusting", "delivered") == 0
    assert sorted(json.loads(item.body)["message_id"] for item in rabbit.queue_messages("secure")) == ids
    refused = errors_of(process, "untrusting")
    assert refused and all("CERTIFICATE_VERIFY_FAILED" in error for error in refused), refused


def test_a_message_no_queue_is_bound_for_is_returned_and_retried_never_dropped(tmp_path, server_env, served, rabbit):
    server, started = served
    config = destination_toml("queue", rabbit.url, exchange="", routing_key="unbound", **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "unroutable", 2)
    assert wait_until(lambda: process.attempts("queue", "retryable_status") >= 2, timeout=30)
    rabbit.declare_queue("unbound")
    assert wait_until(lambda: process.attempts("queue", "delivered") == 2, timeout=30)
    assert sorted(json.loads(item.body)["message_id"] for item in rabbit.queue_messages("unbound")) == ids
    lines = [line for line in process.log_lines() if line.get("outcome") == "retryable_status"]
    assert lines[0]["error"] == "returned: no queue is bound for the routing key"


def test_every_acknowledged_message_reaches_the_queue_through_a_killed_rabbitmq_and_forwarder(
    tmp_path, server_env, served
):
    server, started = served
    broker = RabbitServer(tmp_path / "rabbit").start()
    try:
        broker.declare_queue("durable")
        config = destination_toml(
            "queue", broker.url, exchange="", routing_key="durable", concurrency=8, **FAST_RETRIES
        )
        process = forwarder(tmp_path, server_env, started, config)
        with Load(server.port, E2E_SECRET, threads=4, prefix="rabbit") as load:
            time.sleep(1.5)
            broker.kill()
            broker.start()
            time.sleep(1.0)
            process.kill()  # with publishes awaiting their confirms: sent again by the next one
            forwarder(tmp_path, server_env, started, config)
            time.sleep(1.0)
        acknowledged = set(load.acknowledged)
        received: list[str] = []

        def everything_arrived() -> bool:
            received.extend(json.loads(item.body)["message_id"] for item in broker.queue_messages("durable"))
            return acknowledged <= set(received)

        assert wait_until(everything_arrived, timeout=60), len(acknowledged - set(received))
    finally:
        broker.stop()
