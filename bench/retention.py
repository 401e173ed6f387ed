"""Retention benchmark: how fast a run removes old messages while senders keep posting, and
what it does to the senders' latency.

Builds --rows messages (the sms corpus) stored during 2024 (each a second after its ts, as live
traffic; --ts random: at random over the year, as backfilled data) into a new SQLite file (or
loads them into an empty PostgreSQL database: --postgres-url), serves it with gunicorn as `make
run` would (without RETENTION_DAYS), then, with --senders threads posting signed deliveries
over keep-alive connections throughout:

1. --seconds of the senders alone: their p50 and p99;
2. a retention run at the service's pace (as a worker's runner makes it) for at most
   --seconds, and the senders' p50 and p99 meanwhile; messages removed per second;
3. a retention run at the commands' pace (`webhook-service retention`: large batches, no
   pauses) until every message is removed (at most --command-seconds), the same figures.

    python bench/retention.py [--rows 200000] [--senders 4] [--seconds 20] [--postgres-url URL]
                              [--batch 30 --pause 3] [--command-batch 10000] [--ts arrivals|random]

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server
from bench.queries import build
from webhook_service.signatures import sign_legacy
from webhook_service.storage.engine import Database
from webhook_service.storage.migrations import upgrade_to_head
from webhook_service.storage.retention import COMMAND_BATCH, SERVICE_PACE, Pace, new_owner, run_retention

SECRET = "bench-secret"


class Senders:
    """Threads posting new signed messages over keep-alive connections, timing each answer."""

    def __init__(self, port: int, threads: int) -> None:
        self.port, self.threads = port, threads
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._send, args=(number,)) for number in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def take(self) -> list[float]:
        """The latencies measured since the last take."""
        with self._lock:
            taken, self.latencies = self.latencies, []
        return taken

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _send(self, number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = 0
        while not self._stop.is_set():
            sent += 1
            body = json.dumps(
                {
                    "message_id": f"sender-{number}-{sent}-{time.monotonic_ns()}",
                    "from": f"+9190000{number:05d}",
                    "to": "+14155550100",
                    "ts": "2026-01-01T00:00:00Z",
                    "text": "order shipped, see you tomorrow",
                }
            ).encode()
            started = time.perf_counter()
            try:
                conn.request("POST", "/webhook", body=body, headers={"X-Signature": sign_legacy(SECRET, body)})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                ok = False
            elapsed = time.perf_counter() - started
            with self._lock:
                self.latencies.append(elapsed)
                self.errors += not ok
        conn.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else float("nan")


def timed_run(database: Database, pace: Pace, seconds: float) -> tuple[int, float, str]:
    """One retention run at `pace` for at most `seconds`: (removed, seconds taken, outcome)."""
    removed, deadline = [0], time.monotonic() + seconds

    def counted(batch: int) -> None:
        removed[0] += batch

    def until_deadline(pause: float) -> bool:
        time.sleep(pause)
        return time.monotonic() < deadline

    started = time.monotonic()
    result = run_retention(database, 1, new_owner(), progress=counted, pause=until_deadline, pace=pace)
    return removed[0], time.monotonic() - started, result.outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="of the senders alone, and of the service's run")
    parser.add_argument("--command-seconds", type=float, default=120.0, help="the most the command's run may take")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to measure on instead of SQLite")
    parser.add_argument("--batch", type=int, default=SERVICE_PACE.batch, help="the service's run: per transaction")
    parser.add_argument("--pause", type=float, default=SERVICE_PACE.pause_per_batch, help="... pause, times a batch")
    parser.add_argument("--command-batch", type=int, default=COMMAND_BATCH, help="the command's run: per transaction")
    parser.add_argument(
        "--ts",
        choices=("arrivals", "random"),
        default="arrivals",
        help="messages' ts: each a second before it was stored, as live traffic (default), or at random over a"
        " year (backfilled or imported data: the ts index is then removed from in random order)",
    )
    args = parser.parse_args()
    paces = [
        ("the service's run", Pace(args.batch, args.pause), args.seconds),
        ("the command's run", Pace(args.command_batch, 0.0), args.command_seconds),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="webhook-retention-"))
    try:
        url = args.postgres_url or f"sqlite:///{workdir / 'messages.db'}"
        build(url if args.postgres_url else workdir / "messages.db", args.rows, "sms", arrivals=args.ts == "arrivals")
        upgrade_to_head(url)
        env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
        measured = []
        with Server(env, workdir / "gunicorn.log") as server:
            senders = Senders(server.port, args.senders)
            senders.start()
            database = Database(url)
            try:
                time.sleep(2)  # warm
                senders.take()
                time.sleep(args.seconds)
                alone = senders.take()
                for label, pace, seconds in paces:
                    removed, took, outcome = timed_run(database, pace, seconds)
                    measured.append((label, pace, removed, took, outcome, senders.take()))
            finally:
                database.dispose()
                senders.stop()
        where = "PostgreSQL" if args.postgres_url else "SQLite"
        stamped = "ts a second before" if args.ts == "arrivals" else "ts at random over a year before"
        print(f"{where}, {args.rows:,} messages stored long ago ({stamped}), {args.senders} senders posting throughout")
        print(f"{'':62} {'p50 ms':>8} {'p99 ms':>8} {'answers':>8}")
        print(f"{'senders alone':62} {percentile(alone, 0.5):8.1f} {percentile(alone, 0.99):8.1f} {len(alone):8}")
        for label, pace, removed, took, outcome, during in measured:
            how = f"{pace.batch} a transaction, pauses {pace.pause_per_batch:g}x"
            print(
                f"{'senders during ' + label + ' (' + how + ')':62} {percentile(during, 0.5):8.1f}"
                f" {percentile(during, 0.99):8.1f} {len(during):8}"
            )
        for label, _pace, removed, took, outcome, during in measured:
            print(
                f"{label}: removed {removed:,} in {took:.1f} s = {removed / took:,.0f} messages/s ({outcome});"
                f" senders' p99 {percentile(during, 0.99) / percentile(alone, 0.99):.2f}x alone"
            )
        print(f"failed sends: {senders.errors}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
