"""Feed benchmark: pages deep in a large feed, the wake-up latency of long-polls, idle waiters.

Builds ROWS messages into a SQLite file through the storage layer (or reuses --database),
serves it with gunicorn.conf.py (3 workers), and prints:
- the median and p90 time of a page of 100 at the start, the middle and the end of the feed;
- the delay from a delivery's 200 to the answer of a long-poll held for it (another
  connection, whichever worker), p50/p99 over DELIVERIES deliveries one after the other;
- the workers' CPU time and memory over a quiet interval with no waiters, then with
  FEED_MAX_WAITERS x workers long-polls held (4 x 3 by default).

    python bench/feed.py [--rows 1000000] [--deliveries 200] [--database PATH]

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server, get_json
from bench.queries import build, time_query
from webhook_service.signatures import sign_legacy
from webhook_service.storage.migrations import upgrade_to_head

SECRET = "bench-secret"
WORKERS = 3
WAITERS_PER_WORKER = 4
QUIET_SECONDS = 10


def time_page(port: int, path: str, runs: int) -> tuple[float, float]:
    """Median and p90 ms of a full page of 100 (checked once, then timed as /messages reads are)."""
    assert len(get_json(port, path)["data"]) == 100, path
    median, p90, status, _size = time_query(port, path, runs)
    assert status == 200, (status, path)
    return median, p90


def post(port: int, message_id: str) -> int:
    body = json.dumps(
        {"message_id": message_id, "from": "+14155550111", "to": "+14155550100", "ts": "2026-01-01T00:00:00Z"}
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/webhook", body=body, headers={"X-Signature": sign_legacy(SECRET, body)})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wake_up_latencies(port: int, deliveries: int) -> list[float]:
    """Milliseconds from each delivery's 200 to the answer of the long-poll waiting for it."""
    after = get_json(port, "/feed?after=latest")["next"]
    rng = random.Random(1)
    run = time.time_ns()  # new ids on every run, also on a reused database
    latencies = []
    for number in range(deliveries):
        answered: dict = {}

        def follow(position: str = after, answered: dict = answered) -> None:
            document = get_json(port, f"/feed?after={position}&wait=10")
            answered["at"] = time.perf_counter()
            answered["document"] = document

        reader = threading.Thread(target=follow)
        reader.start()
        # The long-poll is held by then; a random delay, so deliveries land anywhere in the
        # watchers' polling cycle, as real ones do.
        time.sleep(rng.uniform(0.05, 0.15))
        assert post(port, f"wake-{run}-{number}") == 200
        acknowledged = time.perf_counter()
        reader.join(timeout=20)
        assert [item["message_id"] for item in answered["document"]["data"]] == [f"wake-{run}-{number}"]
        latencies.append(max(0.0, answered["at"] - acknowledged) * 1000)
        after = answered["document"]["next"]
    return latencies


def quiet_usage(server: Server, seconds: float) -> tuple[float, float]:
    """Workers' CPU (percent of one core) and summed resident memory (MB) over `seconds`."""
    before = server.worker_cpu_seconds()
    time.sleep(seconds)
    cpu = (server.worker_cpu_seconds() - before) / seconds * 100
    rss = 0
    for pid in server.worker_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
    return cpu, rss / 1024


def held_long_polls(port: int) -> int:
    """How many long-polls the workers hold, as /metrics says."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(
        int(float(line.split()[-1])) for line in text.splitlines() if line.startswith("webhook_feed_long_polls ")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=51)
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--database", type=Path, default=None, help="reuse (or build once into) this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="feed-bench-"))
    path = args.database or workdir / "messages.db"
    if not path.exists():
        build(path, args.rows)
    upgrade_to_head(f"sqlite:///{path}")
    env = {
        "WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": f"sqlite:///{path}",
        "LOG_LEVEL": "WARNING",
        "FEED_MAX_WAITERS": str(WAITERS_PER_WORKER),
    }
    with Server(env, workdir / "gunicorn.log", workers=WORKERS) as server:
        end = int(get_json(server.port, "/feed?after=latest")["next"])
        print(f"feed of {end} positions, {path.stat().st_size / 1e6:.0f} MB database, {WORKERS} workers")
        print(f"{'page of 100':24} {'median ms':>10} {'p90 ms':>8}")
        with sqlite3.connect(path) as conn:
            # Positions skipped by duplicates leave gaps: the last full page starts here.
            [(last_page,)] = conn.execute("SELECT id - 1 FROM messages ORDER BY id DESC LIMIT 1 OFFSET 99")
        for name, after in (("start", 0), ("middle", end // 2), ("end", last_page)):
            median, p90 = time_page(server.port, f"/feed?after={after}&limit=100", args.runs)
            print(f"{name:24} {median:10.2f} {p90:8.2f}", flush=True)

        latencies = sorted(wake_up_latencies(server.port, args.deliveries))
        p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"wake-up, delivery's 200 to the long-poll's answer ({len(latencies)} deliveries): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms",
            flush=True,
        )

        idle_cpu, idle_rss = quiet_usage(server, QUIET_SECONDS)
        held = WORKERS * WAITERS_PER_WORKER
        readers = [
            threading.Thread(target=get_json, args=(server.port, "/feed?after=latest&wait=30"), daemon=True)
            for _ in range(held)
        ]
        for reader in readers:
            reader.start()
        time.sleep(1)
        held = held_long_polls(server.port)
        waiting_cpu, waiting_rss = quiet_usage(server, QUIET_SECONDS)
        print(
            f"workers over {QUIET_SECONDS} s: no waiters {idle_cpu:.2f}% of a core, {idle_rss:.0f} MB; "
            f"{held} long-polls held {waiting_cpu:.2f}% of a core, {waiting_rss:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
