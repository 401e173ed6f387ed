"""Forwarding benchmark: does the forwarder keep up with ingestion at full rate?

Starts the service (gunicorn.conf.py) on a new database, a local consumer that answers 200 at
once (a separate process), and `webhook-service forward` to it; drives POST /webhook with wrk
as fast as the service answers for SECONDS, then waits for the forwarder to drain. Prints
ingested per second (rows stored in the window), forwarded per second (arrivals at the
consumer in the same window), their ratio, and the delay from each message's store
(created_at, taken in the transaction its 200 waits for) to its arrival at the consumer, p50/p99.

    python bench/forward.py [--seconds 10] [--connections 32] [--concurrency 8] [--postgres-url URL]

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

from bench.harness import Server, free_port, get_json
from bench.ingest import SECRET, load_test_problem, run_wrk, write_signed_messages
from webhook_service.timestamps import epoch_from_iso

FORWARD_SECRET = "whsec_" + "YmVuY2gtZm9yd2FyZGVyLXNlY3JldC0zMg=="
DRAIN_SECONDS = 60


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


def measure(name: str, database_url: str, workdir: Path, seconds: int, connections: int, concurrency: int) -> dict:
    messages = workdir / f"messages-{name}.txt"
    write_signed_messages(messages, 8_000 * seconds, prefix=f"forward-{name}")
    record = workdir / f"arrivals-{name}.txt"
    consumer_port, metrics_port = free_port(), free_port()
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--consume", str(consumer_port), str(record)], start_new_session=True
    )
    config = workdir / f"forward-{name}.toml"
    config.write_text(
        f'[destinations.bench]\nurl = "http://127.0.0.1:{consumer_port}/"\nsecret = "{FORWARD_SECRET}"\n'
        f'start = "beginning"\nconcurrency = {concurrency}\n'
    )
    env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    try:
        with Server(env, workdir / f"gunicorn-{name}.log") as server:
            forwarder_log = open(workdir / f"forwarder-{name}.log", "wb")  # noqa: SIM115
            forwarder = subprocess.Popen(
                [sys.executable, "-m", "webhook_service", "forward", "--config", str(config)]
                + ["--metrics-port", str(metrics_port)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=forwarder_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                time.sleep(2)
                started = time.time()
                wrk = run_wrk(server.port, messages, seconds, connections, 2)
                ended = time.time()
                stored = get_json(server.port, "/stats")["total_messages"]
                deadline = time.monotonic() + DRAIN_SECONDS
                while time.monotonic() < deadline and _count(record) < stored:
                    time.sleep(0.2)
            finally:
                os.killpg(forwarder.pid, signal.SIGTERM)
                forwarder.wait(timeout=60)
    finally:
        os.killpg(consumer.pid, signal.SIGKILL)
        consumer.wait(timeout=10)
    rows = [line.split() for line in record.read_text().splitlines()]
    arrivals = [(float(arrived), epoch_from_iso(created)) for arrived, created in rows]
    in_window = [pair for pair in arrivals if started <= pair[1] <= ended]
    forwarded_in_window = sum(1 for arrived, _ in arrivals if started <= arrived <= ended)
    delays = sorted((arrived - created) * 1000 for arrived, created in in_window)
    return {
        "ingested_per_second": len(in_window) / (ended - started),
        "forwarded_per_second": forwarded_in_window / (ended - started),
        "wrk_rps": wrk["rps"],
        "stored": stored,
        "arrived": len(arrivals),
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[int(len(delays) * 0.99) - 1],
    }


def _count(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8, help="the destination's concurrency")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to measure on as well")
    parser.add_argument("--consume", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(int(args.consume[0]), args.consume[1])
        return 0
    if problem := load_test_problem(args.postgres_url):
        print(problem, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="forward-bench-"))
    runs = [("sqlite", f"sqlite:///{workdir / 'messages.db'}")]
    if args.postgres_url:
        runs.append(("postgresql", args.postgres_url))
    print(
        f"POST /webhook with wrk for {args.seconds} s, {args.connections} connections; one destination, concurrency {args.concurrency}"
    )
    print(
        f"{'':11} {'ingested/s':>10} {'forwarded/s':>11} {'ratio':>6} {'delay p50 ms':>12} {'p99 ms':>8} {'all arrived':>11}"
    )
    try:
        for name, url in runs:
            result = measure(name, url, workdir, args.seconds, args.connections, args.concurrency)
            print(
                f"{name:11} {result['ingested_per_second']:10.0f} {result['forwarded_per_second']:11.0f} "
                f"{result['forwarded_per_second'] / result['ingested_per_second']:6.2f} {result['p50_ms']:12.1f} "
                f"{result['p99_ms']:8.1f} {result['arrived'] >= result['stored']!s:>11}",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
