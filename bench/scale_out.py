"""Scale-out benchmark: PostgreSQL writers storing in parallel, against plain inserts.

N writer processes (1, 4 and 16 by default), each looping transactions of --batch new
messages through the service's own write path (`Database.write_transaction()` +
`insert_messages_if_new`, what one host's group committer runs), against the same number
of processes sending the same kind of rows by plain `INSERT ... ON CONFLICT DO NOTHING`
into a copy of the messages table (every index included), in the same run. Prints
messages/s for both, their ratio, and the share of the machine's CPU the PostgreSQL
server used in each.

    python bench/scale_out.py --postgres-url URL [--writers 1,4,16] [--seconds 8] [--batch 16]

`make bench-scale-out POSTGRES_URL=postgresql://user:pw@host:5432/db`. The database is
migrated to the newest revision first; the benchmark adds messages to it and creates (and
drops again) the table scale_out_plain. The texts are the sms corpus of bench/queries.py:
a small vocabulary, so most grams are common, as in real message text. While the service's
writers run, one process folds the kept counts as a serving host does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import MetaData, Table, text
from sqlalchemy.dialects.postgresql import insert

from bench.harness import postgres_cpu_seconds
from bench.queries import sender_for, sms_text
from webhook_service.storage.engine import Database, create_database_engine
from webhook_service.storage.messages import NewMessage, insert_messages_if_new, message_row
from webhook_service.storage.migrations import upgrade_to_head

PLAIN_TABLE = "scale_out_plain"
START_SECONDS = 1.0  # every process connects and is waiting before the clock starts
CPU_MARGIN_SECONDS = 0.25


def new_messages(rng: random.Random, prefix: str, start: int, count: int) -> list[NewMessage]:
    messages = []
    for number in range(start, start + count):
        seconds = 1_735_689_600 + rng.randrange(30 * 86_400)
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
        messages.append(NewMessage(f"{prefix}-{number}", sender_for(rng), "+14155550100", ts, sms_text(rng)))
    return messages


def service_writer(url: str, writer: int, batch: int, start_at: float, stop_at: float, results) -> None:
    database = Database(url, pool_size=1)
    rng, prefix, stored, number = random.Random(writer), f"so-{uuid.uuid4().hex[:8]}-{writer}", 0, 0
    with database.write_transaction() as conn:  # connect before the clock starts
        conn.execute(text("SELECT 1"))
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < stop_at:
        messages = new_messages(rng, prefix, number, batch)
        number += batch
        with database.write_transaction() as conn:
            stored += sum(insert_messages_if_new(conn, messages))
    database.dispose()
    results.put(stored)


def plain_writer(url: str, writer: int, batch: int, start_at: float, stop_at: float, results) -> None:
    engine = create_database_engine(url, serving=True, pool_size=1)
    plain = Table(PLAIN_TABLE, MetaData(), autoload_with=engine)
    statement = insert(plain).on_conflict_do_nothing(index_elements=[plain.c.message_id])
    rng, prefix, stored, number = random.Random(writer), f"plain-{uuid.uuid4().hex[:8]}-{writer}", 0, 0
    base = (writer + 1) * 10**12
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        conn.commit()
        while time.time() < start_at:
            time.sleep(0.005)
        while time.time() < stop_at:
            messages = new_messages(rng, prefix, number, batch)
            rows = [
                message_row(_Stored(), message, base + number + offset, "2026-01-01T00:00:00.000000Z")
                for offset, message in enumerate(messages)
            ]
            number += batch
            with conn.begin():
                result = conn.execute(statement.returning(plain.c.id), rows)
                stored += len(result.all())
    engine.dispose()
    results.put(stored)


class _Stored:
    """The PostgreSQL dialect's value mapping for texts without NUL: as they are."""

    @staticmethod
    def to_column(value: str) -> str:
        return value


def run(target, url: str, writers: int, batch: int, seconds: float, folder=None) -> tuple[float, float]:
    """Messages stored per second by `writers` processes running `target`, and the server's
    share of the machine's CPU meanwhile."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + START_SECONDS + writers * 0.05
    stop_at = start_at + seconds
    processes = [
        context.Process(target=target, args=(url, writer, batch, start_at, stop_at, results))
        for writer in range(writers)
    ]
    for process in processes:
        process.start()
    if folder is not None:
        folder.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_before = postgres_cpu_seconds()
    # Sampled before the writers stop: a backend that exits takes its time with it until the
    # postmaster has reaped it.
    while time.time() < stop_at - CPU_MARGIN_SECONDS:
        time.sleep(0.01)
    cpu = postgres_cpu_seconds() - cpu_before
    while time.time() < stop_at:
        time.sleep(0.01)
    stored = sum(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if folder is not None:
        folder.stop()
    return stored / seconds, cpu / ((seconds - CPU_MARGIN_SECONDS) * os.cpu_count())


def _fold_every(url: str, fold_all, interval: float) -> None:
    engine = create_database_engine(url, serving=True, pool_size=1)
    while True:
        time.sleep(interval)
        fold_all(engine)


class Folder:
    """Folds the kept counts once a second in a process of its own, as a serving host does
    (where the service defers its counts; a no-op otherwise)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._process = None

    def start(self) -> None:
        try:
            from webhook_service.storage.read_model import FOLD_INTERVAL_SECONDS, fold_all
        except ImportError:  # a build that keeps its counts in place
            return
        context = multiprocessing.get_context("fork")
        self._process = context.Process(
            target=_fold_every, args=(self.url, fold_all, FOLD_INTERVAL_SECONDS), daemon=True
        )
        self._process.start()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=10)
            self._process = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    url = args.postgres_url
    upgrade_to_head(url)
    engine = create_database_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {PLAIN_TABLE}"))
        conn.execute(text(f"CREATE TABLE {PLAIN_TABLE} (LIKE messages INCLUDING ALL)"))
    print(
        f"{'writers':>7} {'service msg/s':>14} {'server cpu':>10} {'plain msg/s':>12} {'server cpu':>10} {'ratio':>6}"
    )
    try:
        for writers in (int(value) for value in args.writers.split(",")):
            service, service_cpu = run(service_writer, url, writers, args.batch, args.seconds, Folder(url))
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {PLAIN_TABLE}"))
            plain, plain_cpu = run(plain_writer, url, writers, args.batch, args.seconds)
            print(
                f"{writers:>7} {service:>14,.0f} {service_cpu:>10.0%} {plain:>12,.0f} {plain_cpu:>10.0%}"
                f" {service / plain:>6.2f}",
                flush=True,
            )
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {PLAIN_TABLE}"))
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
