"""WAL size under ingestion while long reads hold old snapshots, and after they end.

A reader keeps SQLite from recycling the WAL past its snapshot, so under steady ingestion
the WAL grows for as long as a long read (an export, a slow report) lasts. This starts
gunicorn on a fresh database, posts unique signed messages from several threads, holds a
read transaction open for --hold seconds in the middle, and prints the WAL file's size
before, at the end of, and after the long read, with the database's journal_size_limit.

    python bench/wal.py [--hold 8] [--after 4] [--threads 16]

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server

SECRET = "bench-secret"


def post_forever(port: int, prefix: str, stop: threading.Event, counts: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    number = 0
    while not stop.is_set():
        body = json.dumps(
            {
                "message_id": f"{prefix}-{number}",
                "from": f"+9190000{number % 5000:05d}",
                "to": "+14155550100",
                "ts": "2025-01-15T10:00:00Z",
                "text": f"message {number} " + "lorem ipsum " * 20,
            }
        ).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        conn.request("POST", "/webhook", body, {"X-Signature": signature})
        response = conn.getresponse()
        response.read()
        counts.append(response.status)
        number += 1
    conn.close()


def wal_megabytes(path: Path) -> float:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size / 1e6 if wal.exists() else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=8.0, help="seconds the long read lasts")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of ingestion after it ends")
    parser.add_argument("--threads", type=int, default=16, help="posting threads")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="wal-bench-"))
    database = workdir / "messages.db"
    env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": f"sqlite:///{database}", "LOG_LEVEL": "WARNING"}
    stop = threading.Event()
    counts: list[int] = []
    with Server(env, workdir / "gunicorn.log") as server:
        threads = [
            threading.Thread(target=post_forever, args=(server.port, f"t{n}", stop, counts), daemon=True)
            for n in range(args.threads)
        ]
        try:
            for thread in threads:
                thread.start()
            time.sleep(2)
            before = wal_megabytes(database)
            reader = sqlite3.connect(database, isolation_level=None)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM messages").fetchone()
            started = len(counts)
            time.sleep(args.hold)
            during = wal_megabytes(database)
            written_during = len(counts) - started
            reader.execute("COMMIT")
            reader.close()
            time.sleep(args.after)
            after = wal_megabytes(database)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    print(f"WAL under ingestion ({args.threads} posting threads, {sum(s == 200 for s in counts)} messages stored)")
    print(f"  before the long read:              {before:8.1f} MB")
    print(f"  after a {args.hold:.0f} s read ({written_during} posts):   {during:8.1f} MB")
    print(f"  {args.after:.0f} s after the read ended:        {after:8.1f} MB")
    print(f"  non-200 answers: {sum(s != 200 for s in counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
