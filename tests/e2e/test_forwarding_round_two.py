"""Forwarding, round two, with real processes: gunicorn stores, `webhook-service forward`
delivers to consumers that record what arrives: which messages (match), with which headers
and certificate, in what order per conversation, and how fast."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.certificates import make_server_certificate
from tests.support.consumer import Answer
from tests.support.database import stored_ids
from tests.support.forwarder import consumer, destination_toml, forwarder, most_in_a_second
from tests.support.messages import make_message
from tests.support.metrics import parse_metrics, value
from tests.support.servers import run_cli, signed_post, wait_until

pytestmark = pytest.mark.e2e

FAST_RETRIES = {"backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.4, "timeout_seconds": 2}


def post(port: int, message_id: str, sender: str, recipient: str, text: str) -> None:
    payload = make_message(message_id=message_id, text=text, to=recipient, **{"from": sender})
    assert signed_post(port, payload).status == 200


@pytest.mark.http_only  # the forwarder's requests, whatever the database
def test_only_matching_messages_arrive_with_the_destinations_headers_and_the_rest_are_counted_skipped(
    tmp_path, server_env, served
):
    server, started = served
    (tmp_path / "api-key").write_text("key-held-in-a-file\n")
    (tmp_path / "token").write_text("bearer-held-in-a-file\n")
    crm = consumer(started)
    config = destination_toml(
        "crm",
        crm.url,
        headers={"X-Team": "support"},
        header_files={"X-Api-Key": str(tmp_path / "api-key")},
        bearer_token_file=str(tmp_path / "token"),
        match={"from": ["+1415*"], "text_contains": ["ORDER", "refund"]},
    )
    process = forwarder(tmp_path, server_env, started, config)
    post(server.port, "kept-1", "+14155550100", "+15550000001", "your order shipped")
    post(server.port, "other-sender", "+919876543210", "+15550000001", "your order shipped")
    post(server.port, "other-text", "+14155550100", "+15550000001", "hello there")
    post(server.port, "kept-2", "+14155559999", "+15550000002", "REFUND issued")
    post(server.port, "no-match-after", "+14155550100", "+15550000001", "bye")

    assert wait_until(lambda: crm.delivered_ids() == {"kept-1", "kept-2"}, timeout=30), crm.delivered_ids()
    assert wait_until(
        lambda: value(parse_metrics(process.metrics()), "webhook_forward_skipped_total", destination="crm") == 3,
        timeout=15,
    )
    for received in crm.received:
        assert received.verified
        assert received.headers["x-team"] == "support"
        assert received.headers["x-api-key"] == "key-held-in-a-file"
        assert received.headers["authorization"] == "Bearer bearer-held-in-a-file"
        assert received.headers["content-type"] == "application/json"
    # Skipped messages are never owed: nothing waits and nothing is dead.
    owed = run_cli(server_env, "deliveries", "--destination", "crm", text=True)
    assert owed.returncode == 0 and "0 deliveries owed" in owed.stderr
    # Replay chooses by the match the forwarder serves with.
    replayed = run_cli(
        server_env, "replay", "--destination", "crm", "--since", "2000-01-01T00:00:00Z", "--dry-run", text=True
    )
    assert replayed.stdout.strip() == "would queue 2 messages for crm"
    process.stop()
    output = process.output()
    assert "key-held-in-a-file" not in output and "bearer-held-in-a-file" not in output


def test_per_conversation_first_arrivals_are_in_feed_order_through_random_failures_and_sigkill(
    tmp_path, server_env, served
):
    conversations_in_order(tmp_path, server_env, served, forwarders=1)


@pytest.mark.postgresql_only
def test_two_forwarders_of_one_destination_keep_each_conversation_in_order_and_one_is_killed(
    tmp_path, server_env, served
):
    conversations_in_order(tmp_path, server_env, served, forwarders=2)


def conversations_in_order(tmp_path, server_env, served, forwarders: int) -> None:
    """Ten conversations forwarded with random failures while `forwarders` forwarders serve the
    destination and one is SIGKILLed; then a new one starts. Per conversation, first arrivals
    are in feed order, and the conversation whose head keeps failing holds back only itself."""
    server, started = served
    rng = random.Random(7)
    failing = threading.Lock()
    stuck_head = "c9-000"

    def answer(message: dict) -> Answer:
        if message["message_id"] == stuck_head:
            return Answer(503)  # this conversation's first message keeps failing
        with failing:
            return Answer(500) if rng.random() < 0.3 else Answer(200, delay=rng.uniform(0, 0.02))

    crm = consumer(started, answer)
    config = destination_toml("crm", crm.url, order="conversation", concurrency=8, max_attempts=1000, **FAST_RETRIES)
    processes = [forwarder(tmp_path, server_env, started, config) for _ in range(forwarders)]

    # Ten conversations (one pair of numbers each) written at once by several senders.
    conversations = {f"c{number}": (f"+1555000{number:04d}", f"+1666000{number:04d}") for number in range(10)}

    def send(conversation: str) -> None:
        sender, recipient = conversations[conversation]
        for number in range(12):
            post(server.port, f"{conversation}-{number:03d}", sender, recipient, f"part {number}")

    with ThreadPoolExecutor(max_workers=5) as pool:
        sending = [pool.submit(send, conversation) for conversation in conversations]
        # Killed while conversations are under way; a new forwarder takes over from the database.
        assert wait_until(lambda: len(crm.delivered_ids()) >= 20, timeout=30)
        processes[0].kill()
        for future in sending:
            future.result()
    forwarder(tmp_path, server_env, started, config)

    others = {
        f"{conversation}-{number:03d}" for conversation in conversations if conversation != "c9" for number in range(12)
    }
    assert wait_until(lambda: others <= crm.delivered_ids(), timeout=60), sorted(others - crm.delivered_ids())[:5]
    # The conversation whose first message keeps failing held back nothing of the others, and
    # none of its own later messages was tried.
    assert {
        received.message["message_id"] for received in crm.received if received.message["message_id"].startswith("c9")
    } == {stuck_head}
    assert len(crm.attempts_of(stuck_head)) >= 3

    feed_order = stored_ids(server_env["DATABASE_URL"])
    first_arrivals: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for received in sorted(crm.received, key=lambda item: item.at):
        message_id = received.message["message_id"]
        if message_id not in seen:
            seen.add(message_id)
            first_arrivals[message_id.split("-")[0]].append(message_id)
    for conversation in conversations:
        in_feed = [message_id for message_id in feed_order if message_id.startswith(f"{conversation}-")]
        arrived = first_arrivals[conversation]
        assert arrived == in_feed[: len(arrived)], (conversation, arrived)


@pytest.mark.http_only  # the forwarder's requests, whatever the database
def test_a_consumer_that_requires_a_client_certificate_gets_messages_only_from_a_destination_showing_one(
    tmp_path, server_env, served
):
    server, started = served
    for folder in ("server", "client"):
        (tmp_path / folder).mkdir()
    ca_file, certificate, key = make_server_certificate(tmp_path / "server")
    client_ca, client_certificate, client_key = make_server_certificate(tmp_path / "client")
    mtls = consumer(started, tls=(certificate, key), client_ca=client_ca)
    config = destination_toml(
        "with-certificate",
        mtls.url,
        ca_file=str(ca_file),
        client_cert_file=str(client_certificate),
        client_key_file=str(client_key),
    ) + destination_toml("without", mtls.url, ca_file=str(ca_file), **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    post(server.port, "for-mtls", "+14155550100", "+15550000001", "hello")

    assert wait_until(lambda: mtls.delivered_ids() == {"for-mtls"}, timeout=30)
    assert wait_until(lambda: process.attempts("without", "connection_error") >= 2, timeout=30)
    assert process.attempts("without", "delivered") == 0
    assert len(mtls.received) == 1


@pytest.mark.http_only  # the forwarder's requests, whatever the database
def test_rate_per_second_bounds_the_attempts_started_in_any_second(tmp_path, server_env, served):
    server, started = served
    fast = consumer(started)
    config = destination_toml("capped", fast.url, rate_per_second=10, concurrency=16)
    ids = []
    for number in range(35):
        post(server.port, f"rated-{number:03d}", "+14155550100", "+15550000001", "hello")
        ids.append(f"rated-{number:03d}")
    process = forwarder(tmp_path, server_env, started, config)

    assert wait_until(lambda: fast.delivered_ids() == set(ids), timeout=30)
    # When each attempt started, as the cap counted it (the forwarder's log line says).
    assert wait_until(lambda: len(process.attempt_starts()) == 35, timeout=10)
    starts = process.attempt_starts()
    assert most_in_a_second(starts) <= 10
    # And the cap is used, not more: 35 one tenth of a second apart span 3.4 s (without the
    # cap, well under one), not spread much further.
    assert 3.0 <= starts[-1] - starts[0] < 6
