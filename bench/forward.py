"""Forwarding benchmark: does the forwarder keep up with ingestion at full rate?

Starts the service (gunicorn.conf.py) on a new database, a local consumer that answers 200 at
once (a separate process), and `webhook-service forward` to it; drives POST /webhook with wrk
as fast as the service answers for SECONDS, then waits for the forwarder to drain. Prints
ingested per second (rows stored that the destination is owed) and forwarded per second
(arrivals at the consumer) over the same window, from its second second (once both flow: in
the first, messages are stored before any can have arrived), their ratio, and the delay from each
message's store (created_at, taken in the transaction its 200 waits for) to its arrival at
the consumer, p50/p99. Destinations (--variants):

  every         every message, as stored
  match-half    a match (text_contains "even") that keeps every other message
  conversation  order = "conversation", over 1,000 conversations (1,000 senders, one recipient)
  nats          a NATS JetStream stream (nats-server -js, started here): published and
                acknowledged by the stream
  amqp          a durable RabbitMQ queue (rabbitmq-server, started here), publisher-confirmed,
                with concurrency 32 (unless --concurrency is given)
  rate          rate_per_second = 50: a backlog is stored first, then arrivals are counted
                over 20 s (the rate achieved, and the most arrivals in any second: the
                forwarder bounds starts, and arrivals carry the network's and the
                consumer's jitter on top, so the most in any 0.95 s is shown too)

Into a broker, a message is forwarded when the broker acknowledges it: the forwarder's attempt
lines say when (its log is at INFO there, as by default), the delay is from created_at to that
acknowledgement, and "all arrived" means the stream or queue holds each acknowledged message
once, every owed one among them. No consumer reads the stream or queue during the run: its
work is not the forwarder's. Under each row: the CPU time per message stored that the service,
the forwarder, the consumer or broker and, on PostgreSQL, its server (every postgres process
on the machine) used in the window, and, when the forwarder was behind as wrk stopped, how
fast it caught up.

    python bench/forward.py [--seconds 10] [--connections 32] [--concurrency N] [--paced RATE] [--postgres-url URL]
                            [--variants every,match-half,conversation,rate,nats,amqp]

With --postgres-url (an empty database) the same is measured on PostgreSQL too. Needs wrk.
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server, free_port, get_json, group_cpu_seconds, postgres_cpu_seconds
from bench.ingest import SECRET, load_test_problem, run_wrk, write_signed_messages
from webhook_service.timestamps import epoch_from_iso

FORWARD_SECRET = "whsec_" + "YmVuY2gtZm9yd2FyZGVyLXNlY3JldC0zMg=="
DRAIN_SECONDS = 60
VARIANTS = {
    # name: (extra TOML for the destination, senders, parity tags in texts)
    "every": ("", 5000, False),
    "match-half": ('[destinations.bench.match]\ntext_contains = ["even"]\n', 5000, True),
    "conversation": ('order = "conversation"\n', 1000, False),
    "rate": ("rate_per_second = 50\n", 5000, False),
    "nats": ('subject = "bench.inbound"\n', 5000, False),
    "amqp": ('exchange = ""\nrouting_key = "bench"\n', 5000, False),
}
# RabbitMQ confirms a persistent message once it is on disk (about 10 ms here): 8 publishes
# awaiting their confirms carried 790 a second against 1,000 ingested; 32 keep up on SQLite.
CONCURRENCY = {"amqp": 32}
DEFAULT_CONCURRENCY = 8
RATE_WINDOW_SECONDS = 20
# The start of the window left out of the rates: the pipeline filling.
FILL_SECONDS = 1.0


def consume(port: int, record: str) -> None:
    """The consumer process: answers 200 at once, appends (arrival, created_at) per message."""
    arrivals = open(record, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrived = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            arrivals.write(f"{arrived} {json.loads(body)['created_at']}\n")

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def _start_broker(variant: str, workdir: Path):
    """The broker of a broker variant, with its stream or queue; None for HTTP variants."""
    from tests.support.brokers import NatsServer, RabbitServer

    if variant == "nats":
        broker = NatsServer(workdir / f"nats-{time.monotonic_ns()}").start()
        broker.add_stream("BENCH", ["bench.>"])
        return broker
    if variant == "amqp":
        broker = RabbitServer(workdir / f"rabbit-{time.monotonic_ns()}").start()
        broker.declare_queue("bench")
        return broker
    return None


def measure(
    name: str,
    variant: str,
    database_url: str,
    workdir: Path,
    seconds: int,
    connections: int,
    concurrency: int | None,
    delay_ms: int = 0,
) -> dict:
    extra, senders, parity = VARIANTS[variant]
    concurrency = concurrency or CONCURRENCY.get(variant, DEFAULT_CONCURRENCY)
    messages = workdir / f"messages-{name}-{variant}.txt"
    write_signed_messages(messages, 8_000 * seconds, prefix=f"forward-{name}-{variant}", senders=senders, parity=parity)
    record = workdir / f"arrivals-{name}-{variant}.txt"
    consumer_port, metrics_port = free_port(), free_port()
    broker = _start_broker(variant, workdir)
    consumer = None
    if broker is None:
        consumer = subprocess.Popen(
            [sys.executable, __file__, "--consume", str(consumer_port), str(record)], start_new_session=True
        )
        url = f"http://127.0.0.1:{consumer_port}/"
    else:
        url = broker.url
    config = workdir / f"forward-{name}-{variant}.toml"
    # The match table comes last: it ends the destination's own table.
    table, match = (extra, "") if not extra.startswith("[") else ("", extra)
    # One destination per variant: on one database, each starts at the feed's end.
    match = match.replace("[destinations.bench.", f"[destinations.bench-{variant}.")
    config.write_text(
        f'[destinations.bench-{variant}]\nurl = "{url}"\nsecret = "{FORWARD_SECRET}"\n'
        f'start = "latest"\nconcurrency = {concurrency}\n{table}{match}'
    )
    env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    # Into a broker, a message is delivered when the broker acknowledges it: the forwarder's
    # attempt lines (logged at INFO) say when, by message_id.
    forwarder_env = {**env, "LOG_LEVEL": "INFO"} if broker is not None else env
    forwarder_log_path = workdir / f"forwarder-{name}-{variant}.log"
    in_broker = None
    try:
        with Server(env, workdir / f"gunicorn-{name}-{variant}.log") as server:
            forwarder_log = open(forwarder_log_path, "wb")  # noqa: SIM115
            forwarder = subprocess.Popen(
                [sys.executable, "-m", "webhook_service", "forward", "--config", str(config)]
                + ["--metrics-port", str(metrics_port)],
                cwd=ROOT,
                env={**os.environ, **forwarder_env},
                stdout=forwarder_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                time.sleep(2)
                groups = {"service": server.process.pid, "forwarder": forwarder.pid}
                if consumer is not None:
                    groups["consumer"] = consumer.pid
                if broker is not None:
                    groups["broker"] = broker.process.pid
                before = get_json(server.port, "/stats")["total_messages"]
                cpu_before = _cpu(groups, name)
                started = time.time()
                if variant == "rate":
                    wrk = run_wrk(server.port, messages, 2, connections, 2)
                else:
                    wrk = run_wrk(server.port, messages, seconds, connections, 2, delay_ms)
                ended = time.time()
                cpu = {part: seconds - cpu_before[part] for part, seconds in _cpu(groups, name).items()}
                stored = get_json(server.port, "/stats")["total_messages"] - before
                owed = _owed(server.port, stored, parity)
                if variant == "rate":
                    time.sleep(RATE_WINDOW_SECONDS + 3)
                else:
                    delivered = (lambda: _count(record)) if broker is None else (lambda: _delivered(forwarder_log_path))
                    deadline = time.monotonic() + DRAIN_SECONDS
                    while time.monotonic() < deadline and delivered() < owed:
                        time.sleep(0.2)
                    # What the stream or queue holds: each message once (JetStream's window drops
                    # a resend; a RabbitMQ queue would show one).
                    in_broker = _held(broker) if broker is not None else None
            finally:
                os.killpg(forwarder.pid, signal.SIGTERM)
                forwarder.wait(timeout=60)
    finally:
        if consumer is not None:
            os.killpg(consumer.pid, signal.SIGKILL)
            consumer.wait(timeout=10)
        if broker is not None:
            broker.stop()
    if broker is None:
        rows = [line.split() for line in record.read_text().splitlines()]
        deliveries = [(float(arrived), epoch_from_iso(created)) for arrived, created in rows]
        arrived = len(deliveries)
    else:
        acknowledged = _acknowledged(forwarder_log_path)
        created = _created(database_url)
        deliveries = [(at, created[message_id]) for message_id, at in acknowledged.items()]
        arrived = in_broker
    if variant == "rate":
        return _rate(deliveries, wrk, owed)
    # Over HTTP a resend can arrive twice; a stream or queue holds each acknowledged message
    # once (a request wrk left in flight may be stored after the count: more than owed).
    complete = arrived >= owed if broker is None else arrived == len(acknowledged) and arrived >= owed
    shown = str(complete) if complete else f"{arrived} of {owed}"
    window = _window(deliveries, started, ended)
    cpu_ms = {part: seconds * 1000 / window["stored"] for part, seconds in cpu.items()}
    backlog = [at for at, _created in deliveries if at > ended]
    # Once wrk stops, the forwarder has the cores: how fast it catches up, when behind.
    drained = len(backlog) / (max(backlog) - ended) if len(backlog) >= 200 else None
    return {"wrk_rps": wrk["rps"], "owed": owed, "all_arrived": shown, "cpu_ms": cpu_ms, "drained": drained, **window}


def _window(deliveries: list[tuple[float, float]], started: float, ended: float) -> dict:
    """Ingested and delivered per second in the window once both are flowing (from its second
    second: in the first, messages are stored before any can have arrived, however fast the
    forwarder), and the delays of every message stored in the window."""
    in_window = [pair for pair in deliveries if started <= pair[1] <= ended]
    flowing = started + FILL_SECONDS
    ingested = sum(1 for _, created in deliveries if flowing <= created <= ended)
    delivered = sum(1 for at, _ in deliveries if flowing <= at <= ended)
    delays = sorted((delivered - created) * 1000 for delivered, created in in_window)
    return {
        "stored": len(in_window),
        "ingested_per_second": ingested / (ended - flowing),
        "forwarded_per_second": delivered / (ended - flowing),
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[int(len(delays) * 0.99) - 1],
    }


def _acknowledged(log: Path) -> dict[str, float]:
    """When the broker acknowledged each message (epoch seconds), from the forwarder's attempt lines."""
    found = {}
    for line in log.read_text().splitlines():
        if '"forward attempt"' not in line:
            continue
        attempt = json.loads(line)
        if attempt["outcome"] == "delivered":
            found[attempt["message_id"]] = epoch_from_iso(attempt["started_at"]) + attempt["latency_ms"] / 1000
    return found


def _cpu(groups: dict[str, int], database: str) -> dict[str, float]:
    """CPU seconds used so far by each part (a process group), and by PostgreSQL's server."""
    used = {part: group_cpu_seconds(group) for part, group in groups.items()}
    if database == "postgresql":
        used["postgresql"] = postgres_cpu_seconds()
    return used


def _delivered(log: Path) -> int:
    return log.read_text().count('"outcome": "delivered"')


def _created(database_url: str) -> dict[str, float]:
    """When each stored message was stored (epoch seconds), by message_id."""
    from sqlalchemy import select

    from webhook_service.storage.engine import Database
    from webhook_service.storage.tables import messages

    database = Database(database_url)
    try:
        with database.read_transaction() as conn:
            rows = conn.execute(select(messages.c.message_id, messages.c.created_at)).all()
    finally:
        database.dispose()
    return {message_id: epoch_from_iso(created_at) for message_id, created_at in rows}


def _held(broker) -> int:
    """How many messages the bench's stream or queue holds now."""
    from tests.support.brokers import NatsServer

    if isinstance(broker, NatsServer):

        async def count(jetstream):
            return (await jetstream.stream_info("BENCH")).state.messages

        return broker.run(count)

    async def depth(channel):
        queue = await channel.declare_queue("bench", durable=True, passive=True)
        return queue.declaration_result.message_count

    return broker.run(depth)


def _owed(port: int, stored: int, parity: bool) -> int:
    """How many of the stored messages the destination is owed."""
    if not parity:
        return stored
    return get_json(port, "/messages?q=even&limit=1")["total"]


def _rate(arrivals: list[tuple[float, float]], wrk: dict, owed: int) -> dict:
    times = sorted(arrived for arrived, _created in arrivals)
    first = times[0]
    window = [at for at in times if first + 1 <= at < first + 1 + RATE_WINDOW_SECONDS]

    def most_within(seconds: float) -> int:
        return max(sum(1 for other in times[index:] if other < at + seconds) for index, at in enumerate(times))

    return {
        "rate": len(window) / RATE_WINDOW_SECONDS,
        "most_in_a_second": most_within(1.0),
        "most_in_095": most_within(0.95),
        "owed": owed,
        "wrk_rps": wrk["rps"],
    }


def _count(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"the destination's concurrency ({DEFAULT_CONCURRENCY}; amqp: {CONCURRENCY['amqp']})",
    )
    parser.add_argument(
        "--paced",
        type=int,
        metavar="RATE",
        help="send about RATE a second (each connection waits connections/RATE before each request) instead of"
        " as fast as the service answers",
    )
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to measure on as well")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--consume", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(int(args.consume[0]), args.consume[1])
        return 0
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant {min(unknown)}")
    if problem := load_test_problem(args.postgres_url):
        print(problem, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="forward-bench-"))
    runs = [("sqlite", f"sqlite:///{workdir / 'messages.db'}")]
    if args.postgres_url:
        runs.append(("postgresql", args.postgres_url))
    shown = args.concurrency or f"{DEFAULT_CONCURRENCY} (amqp {CONCURRENCY['amqp']})"
    delay_ms = round(args.connections * 1000 / args.paced) if args.paced else 0
    pace = f", each waiting {delay_ms} ms before each request" if delay_ms else ""
    print(
        f"POST /webhook with wrk for {args.seconds} s, {args.connections} connections{pace};"
        f" one destination, concurrency {shown}"
    )
    print(
        f"{'':24} {'ingested/s':>10} {'forwarded/s':>11} {'ratio':>6} {'delay p50 ms':>12} {'p99 ms':>8} {'all arrived':>11}"
    )
    try:
        for name, url in runs:
            for variant in variants:
                result = measure(
                    name, variant, url, workdir, args.seconds, args.connections, args.concurrency, delay_ms
                )
                label = f"{name} {variant}"
                if variant == "rate":
                    print(
                        f"{label:24} rate_per_second 50: {result['rate']:.2f}/s over {RATE_WINDOW_SECONDS} s "
                        f"({(result['rate'] / 50 - 1) * 100:+.1f}%); arrivals in any second at most {result['most_in_a_second']}, "
                        f"in any 0.95 s {result['most_in_095']} (backlog {result['owed']})",
                        flush=True,
                    )
                    continue
                print(
                    f"{label:24} {result['ingested_per_second']:10.0f} {result['forwarded_per_second']:11.0f} "
                    f"{result['forwarded_per_second'] / result['ingested_per_second']:6.2f} {result['p50_ms']:12.1f} "
                    f"{result['p99_ms']:8.1f} {result['all_arrived']:>11}",
                    flush=True,
                )
                parts = ", ".join(f"{part} {ms:.2f}" for part, ms in result["cpu_ms"].items())
                drained = (
                    f"; behind when wrk stopped, caught up at {result['drained']:.0f}/s" if result["drained"] else ""
                )
                print(f"{'':24} CPU ms per message stored: {parts}{drained}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
