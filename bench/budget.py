"""Read budget benchmark: how far past QUERY_BUDGET_MS a read can run under concurrent
expensive reads, measured at the client and in the server's own request lines.

Builds ROWS messages (the sms corpus by default: a small vocabulary, every trigram common;
or reuses --database), serves them with gunicorn (3 workers), and runs CONCURRENCY clients
that loop over the slowest reads of bench/search_memory.py and deep offset pages under a
search for SECONDS. Prints, per answer
status, how many and their latency (p50, p99, max), and for reads stopped at the budget (422
query_too_expensive) how far past the budget they answered.

    python bench/budget.py [--rows 200000] [--concurrency 8] [--seconds 30] [--budget-ms 2000]

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server
from bench.queries import build
from bench.search_memory import expensive
from webhook_service.storage.migrations import upgrade_to_head


def reads(rows: int) -> list[str]:
    """The slowest reads of bench/search_memory.py, and deep offset pages under `q` + `since`
    (each 0.7 s alone at 200,000 sms messages: several at once pass a 2 s budget)."""
    deep = int(rows * 0.75)
    return [
        *expensive(rows),
        f"/messages?q=th&since=2024-01-01T00:00:00Z&offset={deep}",
        f"/messages?q=o&since=2020-01-01T00:00:00Z&offset={int(rows * 0.99)}",
    ]


def timed_get(port: int, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, (time.perf_counter() - started) * 1000
    finally:
        conn.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--budget-ms", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--corpus", choices=("otp", "sms"), default="sms")
    parser.add_argument("--database", type=Path, default=None, help="reuse (or build once into) this file")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-budget-") as scratch:
        path = arguments.database or Path(scratch) / "messages.db"
        if not path.exists():
            build(path, arguments.rows, arguments.corpus)
        upgrade_to_head(f"sqlite:///{path}")
        env = {
            "DATABASE_URL": f"sqlite:///{path}",
            "WEBHOOK_SECRET": "bench",
            "LOG_LEVEL": "INFO",
            "QUERY_BUDGET_MS": str(arguments.budget_ms),
        }
        log_path = Path(scratch) / "gunicorn.log"
        results: list[tuple[str, int, float]] = []
        with Server(env, log_path, workers=arguments.workers) as server:
            time.sleep(1)
            queries = reads(arguments.rows)
            deadline = time.monotonic() + arguments.seconds

            def client(number: int) -> None:
                turn = number
                while time.monotonic() < deadline:
                    query = queries[turn % len(queries)]
                    status, latency = timed_get(server.port, query)
                    results.append((query, status, latency))
                    turn += 1

            threads = [threading.Thread(target=client, args=(n,)) for n in range(arguments.concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        served, stopped_after = [], []
        for line in log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("event") == "request" and record.get("path") == "/messages":
                served.append((record["status"], record["latency_ms"]))
            elif record.get("event") == "read stopped at its time budget":
                stopped_after.append(record["stopped_after_ms"])

    budget = arguments.budget_ms
    print(
        f"{len(results)} reads by {arguments.concurrency} clients in {arguments.seconds:g} s, "
        f"{arguments.rows} messages ({arguments.corpus}), QUERY_BUDGET_MS={budget}, {arguments.workers} workers"
    )
    for source, rows in (("client", [(s, ms) for _q, s, ms in results]), ("server", served)):
        for status in sorted({s for s, _ms in rows}):
            latencies = [ms for s, ms in rows if s == status]
            print(
                f"{source} {status}: {len(latencies):5d}  p50 {percentile(latencies, 0.5):7.0f} ms  "
                f"p99 {percentile(latencies, 0.99):7.0f} ms  max {max(latencies):7.0f} ms"
            )
        stopped = [ms - budget for s, ms in rows if s == 422]
        if stopped:
            print(
                f"{source} 422 past the budget: p99 {percentile(stopped, 0.99):+.0f} ms, max {max(stopped):+.0f} ms "
                f"({max(stopped) / budget:.0%} of the budget)"
            )
    if stopped_after:
        past = [ms - budget for ms in stopped_after]
        print(
            f"statements stopped past the budget: p50 {percentile(past, 0.5):+.0f} ms, p99 "
            f"{percentile(past, 0.99):+.0f} ms, max {max(past):+.0f} ms (the rest of a 422's time is the request's own)"
        )
    slowest = sorted(results, key=lambda item: -item[2])[:5]
    for query, status, latency in slowest:
        print(f"slowest: {latency:7.0f} ms {status} {query[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
