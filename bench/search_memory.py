"""Memory benchmark: worker RSS under many concurrent expensive searches, and after them.

Builds ROWS messages with bench/queries.py's corpus (or reuses --database), serves them with
gunicorn (--workers, 3 by default), and sends ROUNDS rounds of CONCURRENCY simultaneous
searches, each one of the ten slowest reads of bench/queries.py (deep offsets, phrases of
common words, combined filters, short and long needles). Prints each worker's resident memory before, at its highest during the
rounds, and after them: growth that stays is memory the workers do not give back.

    python bench/search_memory.py [--rows 200000] [--corpus otp|sms] [--concurrency 50] [--rounds 2]

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server
from bench.queries import build
from webhook_service.storage.migrations import upgrade_to_head


def expensive(rows: int) -> list[str]:
    """The ten slowest reads of bench/queries.py on either corpus, with 100 a page."""
    since, sender = "2024-12-01T00:00:00Z", "%2B919800000001"
    return [
        f"/messages?offset={int(rows * 0.9)}&limit=100",
        "/messages?q=order%20shipped&limit=100",
        f"/messages?from={sender}&q=order%20shipped&since={since}&limit=100",
        f"/messages?from={sender}&q=you&since={since}&limit=100",
        f"/messages?since={since}&offset={int(rows * 0.05)}&limit=100",
        "/messages?q=" + "a" * 4096,
        "/messages?q=ks&limit=100",
        "/messages?q=e%20s&limit=100",
        "/messages?q=you&limit=100",
        f"/messages?since={since}&limit=100",
    ]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--corpus", choices=("otp", "sms"), default="sms")
    parser.add_argument("--database", type=Path, default=None, help="reuse (or build once into) this file")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-search-memory-") as scratch:
        path = arguments.database or Path(scratch) / "messages.db"
        if not path.exists():
            build(path, arguments.rows, arguments.corpus)
        upgrade_to_head(f"sqlite:///{path}")
        env = {"DATABASE_URL": f"sqlite:///{path}", "WEBHOOK_SECRET": "bench", "LOG_LEVEL": "WARNING"}
        with Server(env, Path(scratch) / "gunicorn.log", workers=arguments.workers) as server:
            time.sleep(1)
            for path_ in ("/health/ready", "/messages", "/stats"):  # every worker opens its pool
                for _ in range(arguments.workers * 2):
                    get(server.port, path_)
            workers = sorted(server.worker_pids())
            before = {pid: rss_kib(pid) for pid in workers}
            peak = dict(before)
            statuses: list[int] = []
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    for pid in workers:
                        peak[pid] = max(peak[pid], rss_kib(pid))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            after_rounds = []
            queries = expensive(arguments.rows)
            for round_number in range(arguments.rounds):
                threads = [
                    threading.Thread(target=lambda n=n: statuses.append(get(server.port, queries[n % len(queries)])))
                    for n in range(arguments.concurrency)
                ]
                started = time.monotonic()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                elapsed = time.monotonic() - started
                time.sleep(2)
                after_rounds.append(({pid: rss_kib(pid) for pid in workers}, elapsed))
                print(f"round {round_number + 1}: {arguments.concurrency} searches in {elapsed:.1f} s", flush=True)
            sampling.set()
            sampler.join()
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(f"{arguments.rows} messages, {len(workers)} workers, answers {counts}")
    header = f"{'worker':>8} {'before MB':>10} {'peak MB':>9}" + "".join(
        f" {f'after {n + 1} MB':>11}" for n in range(len(after_rounds))
    )
    print(header)
    for pid in workers:
        row = f"{pid:>8} {before[pid] / 1024:>10.1f} {peak[pid] / 1024:>9.1f}"
        row += "".join(f" {rounds[pid] / 1024:>11.1f}" for rounds, _ in after_rounds)
        print(row)
    growth = max(after_rounds[-1][0][pid] - before[pid] for pid in workers) / 1024
    peak_growth = max(peak[pid] - before[pid] for pid in workers) / 1024
    print(
        f"largest growth of one worker: at its peak {peak_growth:.1f} MB, staying after the last round {growth:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
