"""Read benchmark: every query of GET /messages and GET /stats on a large database.

Builds a database of ROWS realistic messages (about 10,000 senders with a skewed share,
short texts, one year of ts) through the storage layer at the first release's schema
(revision 0001), times the upgrade to the newest revision (which backfills the counters),
starts gunicorn on it, and prints the median and p90 of each query, one request at a time.

    python bench/queries.py [--rows 1000000] [--runs 21] [--database PATH]

A database built once is reused when --database names an existing file (then no upgrade is
timed). Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select

from bench.harness import Server
from webhook_service.storage.cursor import Position, encode_cursor
from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import create_database_engine
from webhook_service.storage.messages import NewMessage, message_row
from webhook_service.storage.migrations import upgrade_to_head
from webhook_service.storage.tables import messages

SENDERS = 10_000
RARE_WORD = "zebrafish"
COMMON_WORD = "otp"
WORDS = [
    "hello",
    "hi",
    "thanks",
    "ok",
    "see",
    "you",
    "soon",
    "meeting",
    "call",
    "me",
    "later",
    "please",
    "confirm",
    "order",
    "shipped",
    "delivered",
    "payment",
    "received",
    "invoice",
    "due",
    "tomorrow",
    "today",
    "tonight",
    "weekend",
    "lunch",
    "dinner",
    "coffee",
    "train",
    "late",
    "sorry",
]
TEMPLATES = (
    "Your otp is {n}",
    "{w1} {w2} {w3}",
    "otp {n} expires in 5 minutes",
    "{w1} {w2}, {w3} {w4} {w5}",
    "Order {n} {w1}",
    "{w1}!",
    "Use otp {n} to sign in",
    "{w1} {w2} at {h}pm?",
)
YEAR_START = 1_704_067_200  # 2024-01-01T00:00:00Z


def sender_for(rng: random.Random) -> str:
    # A few senders send most messages: rank r is picked about 1/r as often.
    rank = min(int(SENDERS ** rng.random()), SENDERS - 1)
    return f"+9198{rank:08d}"


def make_messages(count: int, seed: int = 1):
    rng = random.Random(seed)
    for number in range(count):
        words = {f"w{slot}": rng.choice(WORDS) for slot in range(1, 6)}
        text = rng.choice(TEMPLATES).format(n=rng.randint(100_000, 999_999), h=rng.randint(1, 12), **words)
        if number % 50_000 == 7:
            text += f" {RARE_WORD}"
        if number % 10_000 == 3:
            text += " aaaaaaaah"  # so that a needle of thousands of a's has candidates to check
        seconds = YEAR_START + rng.randrange(365 * 86_400)
        fraction = f".{rng.randrange(1000):03d}" if number % 3 else ""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"
        yield NewMessage(f"msg-{number:08d}", sender_for(rng), "+14155550100", ts, text)


def build(path: Path, rows: int) -> None:
    url = f"sqlite:///{path}"
    upgrade_to_head(url, "0001")
    engine = create_database_engine(url)
    started = time.perf_counter()
    try:
        batch: list[dict] = []
        with engine.connect() as conn:
            dialect = dialect_of(conn)
            for position, message in enumerate(make_messages(rows), 1):
                batch.append(message_row(dialect, message, position, "2025-01-01T00:00:00.000000Z"))
                if len(batch) == 20_000:
                    with conn.begin():
                        conn.execute(insert(messages), batch)
                    batch = []
            if batch:
                with conn.begin():
                    conn.execute(insert(messages), batch)
    finally:
        engine.dispose()
    print(f"built {rows} messages at revision 0001 in {time.perf_counter() - started:.1f} s", flush=True)


def cursor_at(path: Path, fraction: float, rows: int) -> str:
    engine = create_database_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(messages.c.ts_instant, messages.c.message_id)
                .order_by(messages.c.ts_instant, messages.c.message_id)
                .offset(int(rows * fraction))
                .limit(1)
            ).one()
    finally:
        engine.dispose()
    return encode_cursor(Position(row.ts_instant, row.message_id))


def time_query(port: int, path: str, runs: int) -> tuple[float, float, int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, status = [], 0
    size = 0
    try:
        for _ in range(runs):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            times.append((time.perf_counter() - started) * 1000)
            status, size = response.status, len(body)
    finally:
        conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], status, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--database", type=Path, default=None, help="reuse (or build once into) this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="queries-bench-"))
    path = args.database or workdir / "messages.db"
    if not path.exists():
        build(path, args.rows)
        started = time.perf_counter()
        upgrade_to_head(f"sqlite:///{path}")
        print(f"upgrade from 0001 to the newest revision: {time.perf_counter() - started:.1f} s", flush=True)
    deep_cursor = cursor_at(path, 0.9, args.rows)
    busiest = "+919800000001"  # rank 1: about one message in thirteen
    since = "2024-12-01T00:00:00Z"
    queries = [
        ("/stats", "/stats"),
        ("first page", "/messages"),
        ("cursor page at 90% depth", f"/messages?cursor={deep_cursor}"),
        ("offset page at 90% depth", f"/messages?offset={int(args.rows * 0.9)}"),
        ("from", f"/messages?from={urllib.parse.quote(busiest)}"),
        ("since", f"/messages?since={since}"),
        ("q rare", f"/messages?q={RARE_WORD}"),
        ("q absent", "/messages?q=qqqzzzx"),
        (f"q common 3-letter ({COMMON_WORD})", f"/messages?q={COMMON_WORD}"),
        ("from + q + since", f"/messages?from={urllib.parse.quote(busiest)}&q=otp&since={since}"),
        ("q 2 characters", "/messages?q=ks"),
        ("q 4096 repeated letters", "/messages?q=" + "a" * 4096),
    ]
    env = {"WEBHOOK_SECRET": "bench", "DATABASE_URL": f"sqlite:///{path}", "LOG_LEVEL": "WARNING"}
    with Server(env, workdir / "gunicorn.log") as server:
        print(f"{args.runs} runs each, one request at a time, {path.stat().st_size / 1e6:.0f} MB database")
        print(f"{'query':34} {'median ms':>10} {'p90 ms':>8} {'status':>7}")
        for name, url in queries:
            median, p90, status, _size = time_query(server.port, url, args.runs)
            print(f"{name:34} {median:10.1f} {p90:8.1f} {status:7d}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
