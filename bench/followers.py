"""Feed followers benchmark: do hundreds of readers following the feed leave deliveries and
readiness fast, and does every reader get every message?

Starts the service (gunicorn.conf.py, its default workers) on a new SQLite database, then
FOLLOWERS threads each running the documented loop (`GET /feed?after=<next>&wait=25`; on 429
or 503, wait Retry-After), while one sender posts RATE messages a second for SECONDS and a
prober asks `GET /health/ready` five times a second. The same delivery and probe run with no
followers first, in the same run. Prints POST /webhook and readiness p50/p99 for both, how
many 429s the followers were told, and how many followers got every message.

    python bench/followers.py [--followers 300] [--seconds 20] [--rate 20]

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server
from webhook_service.signatures import sign_legacy

SECRET = "bench-followers-secret"
WAIT_SECONDS = 25
SETTLE_SECONDS = 30


class Follower(threading.Thread):
    """One reader running the documented loop until stopped; keeps the message ids it got."""

    def __init__(self, port: int, stopping: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stopping = port, stopping
        self.seen: set[str] = set()
        self.told_to_wait = 0
        self.errors = 0

    def run(self) -> None:
        after = ""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_SECONDS + 15)
        while not self.stopping.is_set():
            try:
                connection.request(
                    "GET", f"/feed?wait={WAIT_SECONDS}&limit=1000" + (f"&after={after}" if after else "")
                )
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_SECONDS + 15)
                self.stopping.wait(1)
                continue
            if response.status in (429, 503):
                self.told_to_wait += 1
                self.stopping.wait(int(response.getheader("Retry-After", "2")))
                continue
            page = json.loads(body)
            self.seen.update(message["message_id"] for message in page["data"])
            after = page["next"]


def timed(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path} answered {response.status}")
    finally:
        connection.close()
    return (time.monotonic() - started) * 1000


def run(port: int, prefix: str, seconds: float, rate: float) -> tuple[list[float], list[float], list[str]]:
    """Post `rate` messages a second and probe readiness 5 times a second for `seconds`."""
    posts: list[float] = []
    probes: list[float] = []
    ids: list[str] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.wait(0.2):
            probes.append(timed(port, "GET", "/health/ready"))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.monotonic()
    for number in range(int(seconds * rate)):
        time.sleep(max(0.0, started + number / rate - time.monotonic()))
        message_id = f"{prefix}-{number}"
        body = json.dumps(
            {"message_id": message_id, "from": "+14155550100", "to": "+919876543210", "ts": "2025-01-15T10:00:00Z"}
        ).encode()
        posts.append(timed(port, "POST", "/webhook", body, {"X-Signature": sign_legacy(SECRET, body)}))
        ids.append(message_id)
    stop.set()
    prober.join()
    return posts, probes, ids


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):7.1f} {ordered[max(0, int(len(ordered) * 0.99) - 1)]:8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20, help="messages posted per second")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="followers-bench-"))
    env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": f"sqlite:///{workdir / 'messages.db'}", "LOG_LEVEL": "WARNING"}
    with Server(env, workdir / "gunicorn.log") as server:
        time.sleep(2)
        alone = run(server.port, "alone", args.seconds, args.rate)
        stopping = threading.Event()
        followers = [Follower(server.port, stopping) for _ in range(args.followers)]
        for follower in followers:
            follower.start()
        time.sleep(3)
        followed = run(server.port, "followed", args.seconds, args.rate)
        deadline = time.monotonic() + SETTLE_SECONDS
        wanted = set(followed[2])
        while time.monotonic() < deadline and not all(wanted <= follower.seen for follower in followers):
            time.sleep(0.5)
        stopping.set()
    complete = sum(1 for follower in followers if wanted <= follower.seen)
    print(f"{args.rate:g} deliveries/s for {args.seconds:g} s; readiness probed 5 times a second")
    print(f"{'':24} {'POST p50':>8} {'p99 ms':>8} {'ready p50':>9} {'p99 ms':>8}")
    print(f"{'no followers':24} {percentiles(alone[0])}  {percentiles(alone[1])}")
    print(f"{f'{args.followers} followers':24} {percentiles(followed[0])}  {percentiles(followed[1])}")
    told = sum(follower.told_to_wait for follower in followers)
    errors = sum(follower.errors for follower in followers)
    print(f"followers with every message: {complete} of {args.followers}; told 429/503: {told}; errors: {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
