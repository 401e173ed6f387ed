"""Ingestion benchmark: durable POST /webhook throughput against a bare Flask floor.

Starts the service with gunicorn.conf.py (as `make run` would, on a fresh SQLite file),
drives POST /webhook with unique signed messages over keep-alive connections using wrk,
then does the same against a Flask app that only answers {"status": "ok"} under the same
gunicorn settings, and prints requests/s, p50 and p99 for both and their ratio. It also
measures the machine's raw SQLite ceiling (WAL, synchronous=FULL, one row per commit from
several processes) in the same run, since fsync, not Python, bounds durable ingestion.

    python bench/ingest.py [--seconds 10] [--connections 64] [--threads 2] [--postgres-url URL]

With --postgres-url (`make bench POSTGRES_URL=postgresql://user:pw@host:5432/db`) the
service is measured a second time on that PostgreSQL database, in the same run; it must
be empty (a new database): the benchmark fills it.

Needs wrk (Debian package `wrk`). Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server, get_json
from webhook_service.signatures import sign_legacy

SECRET = "bench-secret"
# wrk sends as fast as the server answers; generate more messages than it can send.
MESSAGES_PER_SECOND_CEILING = 12_000
# Each server first takes this much load, unmeasured, so that both are measured warm.
WARMUP_SECONDS = 3


def write_signed_messages(
    path: Path, count: int, prefix: str = "bench", senders: int = 5000, parity: bool = False
) -> None:
    """Two lines per message: its signature, then its JSON body. `senders` distinct senders
    in turn (one recipient); with `parity`, every other text says "even", the others "odd"."""
    with open(path, "w") as out:
        for number in range(count):
            tag = (" even" if number % 2 == 0 else " odd") if parity else ""
            body = json.dumps(
                {
                    "message_id": f"{prefix}-{number}",
                    "from": f"+91{9_000_000_000 + number % senders}",
                    "to": "+14155550100",
                    "ts": f"2025-01-{number % 28 + 1:02d}T10:{number % 60:02d}:{number % 60:02d}.{number % 1000:03d}Z",
                    "text": f"Benchmark message {number}: hello from the load generator{tag}",
                },
                separators=(",", ":"),
            ).encode()
            out.write(sign_legacy(SECRET, body) + "\n" + body.decode() + "\n")


def run_wrk(port: int, messages: Path, seconds: int, connections: int, threads: int, delay_ms: int = 0) -> dict:
    """One wrk run; returns its RESULT line as a dict. `delay_ms`: each connection waits that
    long before each request (a paced load instead of as fast as the server answers)."""
    output = subprocess.run(
        [
            "wrk",
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={seconds}s",
            "--timeout=10s",
            f"--script={ROOT / 'bench' / 'signed_requests.lua'}",
            f"http://127.0.0.1:{port}/webhook",
            "--",
            str(messages),
            str(threads),
            str(delay_ms),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def _commit_rows(args: tuple[str, int, float]) -> int:
    path, worker, seconds = args
    # A long timeout: SQLite's busy handler is unfair, and one writer may wait for seconds.
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA synchronous=FULL")
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t(k, v) VALUES (?, ?)", (f"{worker}-{done}", "x" * 100))
        conn.execute("COMMIT")
        done += 1
    return done


def sqlite_commit_ceiling(workdir: Path, processes: int = 3, seconds: float = 5.0) -> float:
    """Single-row durable commits per second from several processes on this disk."""
    path = str(workdir / "ceiling.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT)")
    conn.close()
    with multiprocessing.Pool(processes) as pool:
        counts = pool.map(_commit_rows, [(path, worker, seconds) for worker in range(processes)])
    return sum(counts) / seconds


def load_test_problem(postgres_url: str | None) -> str | None:
    """Why a wrk benchmark cannot run (no wrk, an unusable --postgres-url), or None."""
    if postgres_url and (problem := postgres_problem(postgres_url)):
        return problem
    if shutil.which("wrk") is None:
        return "wrk is needed: apt-get install wrk"
    return None


def postgres_problem(url: str) -> str | None:
    """Why the benchmark may not use this PostgreSQL database, or None."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from webhook_service.config import database_url_from_setting
    from webhook_service.storage.engine import create_database_engine

    try:
        engine = create_database_engine(database_url_from_setting(url))
        try:
            with engine.connect() as conn:
                tables = inspect(conn).get_table_names()
        finally:
            engine.dispose()
    except (ValueError, SQLAlchemyError) as error:
        return f"cannot use --postgres-url: {getattr(error, 'orig', None) or error}"
    if tables:
        return "--postgres-url must name an empty database (the benchmark fills it); it holds tables"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to measure the service on as well")
    args = parser.parse_args()
    if problem := load_test_problem(args.postgres_url):
        print(problem, file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    try:
        messages = workdir / "messages.txt"
        write_signed_messages(messages, MESSAGES_PER_SECOND_CEILING * args.seconds)
        # Warm-up messages have ids of their own, so the measured run sends only new ones.
        warmup_messages = workdir / "warmup.txt"
        write_signed_messages(warmup_messages, MESSAGES_PER_SECOND_CEILING * WARMUP_SECONDS, prefix="warmup")
        database = workdir / "messages.db"
        runs = [("service", "wsgi:app", str(database)), ("bare flask", "bench.bare_app:app", str(database))]
        if args.postgres_url:
            runs.insert(1, ("postgresql", "wsgi:app", args.postgres_url))
        results = {}
        for name, app, database_url in runs:
            env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": database_url, "LOG_LEVEL": "INFO"}
            # Workers and threads as gunicorn.conf.py sets them (WEB_CONCURRENCY overrides).
            with Server(env, workdir / f"gunicorn-{name.replace(' ', '-')}.log", app=app) as server:
                run_wrk(server.port, warmup_messages, WARMUP_SECONDS, args.connections, args.threads)
                before = get_json(server.port, "/stats")["total_messages"] if app == "wsgi:app" else 0
                cpu_before = server.worker_cpu_seconds()
                results[name] = run_wrk(server.port, messages, args.seconds, args.connections, args.threads)
                # Worker CPU per answered request: what each delivery costs, whatever the cores.
                results[name]["cpu_us"] = (server.worker_cpu_seconds() - cpu_before) * 1e6 / results[name]["requests"]
                if app == "wsgi:app":
                    results[name]["stored"] = get_json(server.port, "/stats")["total_messages"] - before
        ceiling = sqlite_commit_ceiling(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"POST /webhook, {args.seconds}s per server after {WARMUP_SECONDS}s warm-up, "
        f"{args.connections} keep-alive connections, "
        f"gunicorn.conf.py workers/threads, LOG_LEVEL=INFO, {os.cpu_count()} cores"
    )
    print(f"{'':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'non-2xx':>8} {'errors':>7}")
    for name, result in results.items():
        print(
            f"{name:12} {result['rps']:9.0f} {result['p50_ms']:8.2f} {result['p99_ms']:8.2f} "
            f"{result['cpu_us']:10.0f} {result['non2xx']:8d} {result['errors']:7d}"
        )
    service, floor = results["service"], results["bare flask"]
    print(f"service / bare flask throughput: {service['rps'] / floor['rps']:.2f}")
    if "postgresql" in results:
        print(f"service on PostgreSQL / bare flask throughput: {results['postgresql']['rps'] / floor['rps']:.2f}")
        print(f"service on PostgreSQL / on SQLite: {results['postgresql']['rps'] / service['rps']:.2f}")
    print(
        f"rows stored: {service['stored']}; responses wrk counted: {service['requests']} "
        "(requests in flight when wrk stops are stored but not counted)"
    )
    print(f"raw SQLite ceiling (WAL, synchronous=FULL, 3 processes, 1 row/commit): {ceiling:.0f} commits/s")
    print(f"service / raw SQLite ceiling: {service['rps'] / ceiling:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
