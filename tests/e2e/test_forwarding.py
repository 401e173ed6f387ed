"""The forwarder with real consumers: gunicorn stores, `webhook-service forward` delivers."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from tests.support.certificates import make_server_certificate
from tests.support.consumer import Answer, Consumer
from tests.support.forwarder import FORWARD_SECRET, Forwarder, consumer, destination_toml, forwarder, post_messages
from tests.support.messages import make_message
from tests.support.metrics import parse_metrics, value
from tests.support.servers import Load, run_cli, signed_post, wait_until
from webhook_service.timestamps import epoch_from_iso

pytestmark = pytest.mark.e2e

FAST_RETRIES = {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 1, "timeout_seconds": 2}


def test_every_message_arrives_signed_with_a_stable_id_and_the_messages_document(tmp_path, server_env, served):
    server, started = served
    before = post_messages(server.port, "before", 20)
    billing, audit = consumer(started), consumer(started)
    config = destination_toml("billing", billing.url, concurrency=3) + destination_toml("audit", audit.url)
    # A misspelled setting is named in a JSON warning line, like every line of the log.
    process = forwarder(tmp_path, {**server_env, "FORWARD_CONFIGS": "forward.toml"}, started, config)
    live = post_messages(server.port, "live", 30)
    expected = set(before + live)
    for destination in (billing, audit):
        assert wait_until(lambda d=destination: d.delivered_ids() == expected, timeout=30), len(destination.received)
        assert all(item.verified for item in destination.received)
        assert {item.webhook_id for item in destination.received} == {
            item.webhook_id for item in destination.received if item.webhook_id.startswith("msg_")
        }
    first = next(item for item in billing.received if item.message["message_id"] == "live-000")
    assert set(first.message) == {"message_id", "from", "to", "ts", "text", "created_at"}
    assert first.message["text"] == "text of live-000"
    same = next(item for item in audit.received if item.message["message_id"] == "live-000")
    assert same.webhook_id == first.webhook_id
    # The consumer counts a delivery before it answers; the forwarder, once the answer is in.
    assert wait_until(
        lambda: process.attempts("billing", "delivered") == 50,
        timeout=10,
    )
    assert wait_until(
        lambda: len([line for line in process.log_lines() if line.get("event") == "forward attempt"]) >= 100, timeout=10
    )
    lines = [line for line in process.log_lines() if line.get("event") == "forward attempt"]
    assert {"destination", "webhook_id", "attempt", "outcome", "status", "latency_ms"} <= set(lines[0])
    assert not any("text of" in line for line in process.output().splitlines()), "a message text reached the log"
    assert FORWARD_SECRET not in process.output()
    warning = "FORWARD_CONFIGS is not a setting and is ignored: did you mean FORWARD_CONFIG?"
    assert any(line["level"] == "WARNING" and line["event"] == warning for line in process.log_lines())
    assert process.stop() == 0


# How long the consumer of the outage test stays down: long enough for the destination to be
# taken for down and probed (its backoff tops out at 1 s here); FORWARD_OUTAGE_SECONDS=60 for
# a longer one.
OUTAGE_SECONDS = float(os.environ.get("FORWARD_OUTAGE_SECONDS", "8"))


def test_a_consumer_down_for_a_while_gets_its_whole_backlog_when_it_is_back(tmp_path, server_env, served):
    server, started = served
    down = Consumer(FORWARD_SECRET)  # not listening yet
    started.append(down)
    config = destination_toml("ops", down.url, max_attempts=50, **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "during", 40)
    time.sleep(OUTAGE_SECONDS)
    down.start()
    more = post_messages(server.port, "after", 10)
    assert wait_until(lambda: down.delivered_ids() == set(ids + more), timeout=40), len(down.delivered_ids())
    metrics = parse_metrics(process.metrics())
    assert value(metrics, "webhook_forward_dead_letters", destination="ops") == 0
    # Probed while down, not hammered: far fewer attempts than messages times retries.
    failed = value(metrics, "webhook_forward_attempts_total", destination="ops", outcome="connection_error")
    assert 1 <= failed < 60


def test_a_message_always_refused_with_500_is_a_dead_letter_and_does_not_hold_back_the_rest(
    tmp_path, server_env, served
):
    server, started = served
    poisoned = "poison-pill"
    destination = consumer(started, lambda message: Answer(500 if message["message_id"] == poisoned else 200))
    config = destination_toml("billing", destination.url, max_attempts=4, **FAST_RETRIES)
    process = forwarder(tmp_path, server_env, started, config)
    first = post_messages(server.port, "first", 5)
    assert signed_post(server.port, make_message(message_id=poisoned)).status == 200
    rest = post_messages(server.port, "rest", 20)
    assert wait_until(lambda: destination.delivered_ids() == set(first + rest), timeout=30)
    assert wait_until(lambda: len(destination.attempts_of(poisoned)) == 4, timeout=30)
    assert wait_until(
        lambda: value(parse_metrics(process.metrics()), "webhook_forward_dead_letters", destination="billing") == 1,
        timeout=10,
    )
    time.sleep(1.5)
    assert len(destination.attempts_of(poisoned)) == 4, "a dead letter was tried again"
    listed = cli(server_env, "deliveries", "--destination", "billing", "--failed", "--format", "jsonl")
    assert listed.returncode == 0
    [record] = [__import__("json").loads(line) for line in listed.stdout.splitlines()]
    assert (record["message_id"], record["attempts"], record["last_status"]) == (poisoned, 4, 500)


def test_a_400_makes_a_dead_letter_at_once(tmp_path, server_env, served):
    server, started = served
    destination = consumer(started, lambda message: Answer(400 if message["message_id"] == "bad" else 200))
    forwarder(tmp_path, server_env, started, destination_toml("billing", destination.url, **FAST_RETRIES))
    assert signed_post(server.port, make_message(message_id="bad")).status == 200
    good = post_messages(server.port, "good", 5)
    assert wait_until(lambda: destination.delivered_ids() == set(good), timeout=30)
    time.sleep(1.5)
    assert len(destination.attempts_of("bad")) == 1


def test_a_429_with_retry_after_is_not_tried_again_before_it(tmp_path, server_env, served):
    server, started = served
    answers = iter([Answer(429, {"Retry-After": "2"})])
    destination = consumer(started, lambda _message: next(answers, Answer(200)))
    forwarder(tmp_path, server_env, started, destination_toml("billing", destination.url, **FAST_RETRIES))
    assert signed_post(server.port, make_message(message_id="throttled")).status == 200
    assert wait_until(lambda: destination.delivered_ids() == {"throttled"}, timeout=30)
    first, second = destination.attempts_of("throttled")
    assert first.answered == 429 and second.answered == 200
    assert second.at - first.at >= 2.0


def test_a_slow_consumer_is_retried_after_timeouts_never_above_its_concurrency(tmp_path, server_env, served):
    server, started = served
    slow = {"slow-000", "slow-001", "slow-002"}
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def answer(message):
        with lock:
            tries[message["message_id"]] = tries.get(message["message_id"], 0) + 1
            first_try = tries[message["message_id"]] == 1
        return Answer(200, delay=3.0 if first_try and message["message_id"] in slow else 0.2)

    destination = consumer(started, answer)
    config = destination_toml(
        "billing", destination.url, concurrency=2, timeout_seconds=1, backoff_initial_seconds=0.2, backoff_max_seconds=1
    )
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "slow", 12)
    assert wait_until(lambda: destination.delivered_ids() >= set(ids), timeout=60)
    # In flight as the forwarder saw it: each attempt's line is written as it ends, with its latency.
    assert 1 <= most_at_once(process) <= 2
    assert destination.concurrent_same_id == 0, "one message was sent twice at once"
    metrics = parse_metrics(process.metrics())
    assert value(metrics, "webhook_forward_attempts_total", destination="billing", outcome="timeout") >= 3


def most_at_once(process: Forwarder) -> int:
    """The most attempts in flight at one moment, from the forwarder's log lines."""
    events = []
    for line in process.log_lines():
        if line.get("event") == "forward attempt":
            ended = epoch_from_iso(line["ts"])
            events += [(ended - line["latency_ms"] / 1000, 1), (ended, -1)]
    most = current = 0
    for _, change in sorted(events):
        current += change
        most = max(most, current)
    return most


def test_sigkill_of_the_forwarder_under_load_three_times_loses_nothing(tmp_path, server_env, served):
    server, started = served
    destination = consumer(started)
    config = destination_toml("billing", destination.url, **FAST_RETRIES)
    with Load(server.port, "e2e-secret", threads=4) as load:
        for _ in range(3):
            process = forwarder(tmp_path, server_env, started, config)
            time.sleep(2)
            process.kill()
        process = forwarder(tmp_path, server_env, started, config)
        time.sleep(1)
    acknowledged = set(load.acknowledged)
    assert len(acknowledged) > 100
    # PostgreSQL: what the killed forwarders held is taken again once their leases run out.
    assert wait_until(lambda: destination.delivered_ids() >= acknowledged, timeout=60), len(
        acknowledged - destination.delivered_ids()
    )
    assert process.stop() == 0


def cli(env: dict, *arguments: str) -> subprocess.CompletedProcess:
    return run_cli(env, *arguments, text=True)


def test_replay_of_a_time_range_and_of_dead_letters(tmp_path, server_env, served):
    server, started = served
    refusing = {"on": True}
    destination = consumer(
        started, lambda message: Answer(400 if refusing["on"] and message["message_id"] == "refused" else 200)
    )
    forwarder(tmp_path, server_env, started, destination_toml("billing", destination.url, **FAST_RETRIES))
    for day in (1, 2, 3):
        payload = make_message(message_id=f"day-{day}", ts=f"2025-03-0{day}T12:00:00Z")
        assert signed_post(server.port, payload).status == 200
    assert signed_post(server.port, make_message(message_id="refused")).status == 200
    assert wait_until(lambda: destination.delivered_ids() == {"day-1", "day-2", "day-3"}, timeout=30)
    assert wait_until(
        lambda: "1 dead letters" in cli(server_env, "deliveries", "--destination", "billing", "--failed").stderr
    )
    header, row = cli(server_env, "deliveries", "--destination", "billing", "--failed").stdout.splitlines()
    assert header.split("\t") == ["message_id", "state", "attempts", "last outcome", "last attempt at"]
    message_id, state, attempts, outcome, _at = row.split("\t")
    assert (message_id, state, outcome) == ("refused", "dead", "HTTP 400") and int(attempts) >= 1

    dry = cli(server_env, "replay", "--destination", "billing", "--since", "2025-03-02T00:00:00Z", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.strip() == "would queue 2 messages for billing"
    ranged = cli(
        server_env,
        "replay",
        "--destination",
        "billing",
        "--since",
        "2025-03-02T00:00:00Z",
        "--before",
        "2025-03-03T00:00:00Z",
    )
    assert ranged.stdout.strip() == "queued 1 messages for billing"
    assert wait_until(lambda: len(destination.attempts_of("day-2")) == 2, timeout=30)
    assert len(destination.attempts_of("day-1")) == 1 and len(destination.attempts_of("day-3")) == 1

    refusing["on"] = False
    replayed = cli(server_env, "replay", "--destination", "billing", "--failed")
    assert replayed.stdout.strip() == "queued 1 messages for billing"
    assert wait_until(lambda: "refused" in destination.delivered_ids(), timeout=30)
    assert wait_until(
        lambda: "0 dead letters" in cli(server_env, "deliveries", "--destination", "billing", "--failed").stderr
    )
    unknown = cli(server_env, "replay", "--destination", "nowhere", "--failed")
    assert unknown.returncode == 1 and "nowhere" in unknown.stderr


@pytest.mark.postgresql_only
def test_two_forwarders_of_one_destination_share_it_never_sending_one_message_at_once(
    tmp_path, server_env, served, backend
):
    server, started = served
    destination = consumer(started, lambda _message: Answer(200, delay=0.02))
    config = destination_toml("billing", destination.url, concurrency=3, **FAST_RETRIES)
    first = forwarder(tmp_path, server_env, started, config)
    second = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "shared", 150)
    assert wait_until(lambda: destination.delivered_ids() == set(ids), timeout=60)
    assert destination.concurrent_same_id == 0
    assert len(destination.received) == len(ids), "a message was sent twice"

    def shares() -> list[float]:
        return [process.attempts("billing", "delivered") for process in (first, second)]

    # The consumer counts a delivery before it answers; the forwarders, once the answer is in.
    assert wait_until(lambda: sum(shares()) == 150, timeout=10), shares()
    assert all(share > 0 for share in shares())


@pytest.mark.sqlite_only
def test_on_sqlite_a_second_forwarder_of_a_destination_says_so_and_waits(tmp_path, server_env, served):
    server, started = served
    destination = consumer(started)
    config = destination_toml("billing", destination.url, **FAST_RETRIES)
    first = forwarder(tmp_path, server_env, started, config)
    second = forwarder(tmp_path, server_env, started, config)
    assert wait_until(lambda: "another forwarder serves this destination" in second.output(), timeout=10)
    ids = post_messages(server.port, "one-at-a-time", 10)
    assert wait_until(lambda: destination.delivered_ids() == set(ids), timeout=30)
    assert first.stop() == 0
    more = post_messages(server.port, "taken-over", 5)
    assert wait_until(lambda: destination.delivered_ids() == set(ids + more), timeout=30)
    assert len(destination.received) == 15


def test_sigterm_stops_the_forwarder_at_once_with_exit_0(tmp_path, server_env, served):
    server, started = served
    destination = consumer(started, lambda _message: Answer(200, delay=0.5))
    process = forwarder(tmp_path, server_env, started, destination_toml("billing", destination.url, timeout_seconds=2))
    post_messages(server.port, "stopping", 10)
    time.sleep(0.5)
    began = time.monotonic()
    assert process.stop() == 0
    assert time.monotonic() - began < 10


@pytest.mark.sqlite_only  # about the consumer's certificate, not the database
def test_an_https_consumer_is_verified_against_the_configured_ca_file(tmp_path, server_env, served):
    server, started = served
    ca_file, certificate, key = make_server_certificate(tmp_path)
    trusted = consumer_with_tls(started, (certificate, key))
    untrusted = consumer_with_tls(started, (certificate, key))
    config = destination_toml("private-ca", trusted.url, ca_file=str(ca_file), **FAST_RETRIES) + destination_toml(
        "system-cas", untrusted.url, **FAST_RETRIES
    )
    process = forwarder(tmp_path, server_env, started, config)
    ids = post_messages(server.port, "tls", 3)
    assert wait_until(lambda: trusted.delivered_ids() == set(ids), timeout=30)
    # Without the CA the certificate is refused: nothing arrives, the attempts fail and are retried.
    assert wait_until(
        lambda: process.attempts("system-cas", "connection_error") >= 1,
        timeout=30,
    )
    assert untrusted.received == []
    assert any("CERTIFICATE_VERIFY_FAILED" in str(line.get("error")) for line in process.log_lines())


def consumer_with_tls(started, tls) -> Consumer:
    process = Consumer(FORWARD_SECRET, tls=tls).start()
    started.append(process)
    return process
