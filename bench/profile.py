"""Where a delivery's CPU goes: py-spy samples the gunicorn workers under `make bench` load.

Starts the service as `bench/ingest.py` does, drives POST /webhook with wrk, and samples
every worker with py-spy (only the thread holding the GIL: Python CPU, not waits, not
fsync), then attributes each sample to the innermost frame that belongs to a known part
and prints a table: share of samples and microseconds per request (the share times the
workers' measured CPU per request).

    python bench/profile.py [--seconds 10] [--connections 64] [--raw FILE]

Needs wrk and py-spy (`pip install py-spy`; sampling another process needs root or
ptrace permission). Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server
from bench.ingest import SECRET, WARMUP_SECONDS, run_wrk, write_signed_messages

# (part, file prefixes of its frames): each sample goes to the part of its innermost frame
# that one claims; frames of generic helpers (threading, contextlib, ...) are looked through.
# A frame reads "function (package/file.py:line)".
PARTS = [
    ("JSON (parse, render)", ("json/",)),
    ("logging (structlog + stdlib)", ("structlog/", "logging/", "webhook_service/observability/logging.py")),
    ("validation (marshmallow, api/inputs.py)", ("marshmallow/", "webhook_service/api/inputs.py")),
    ("signature (HMAC)", ("hmac.py", "hashlib", "webhook_service/signatures.py")),
    (
        "metrics (prometheus)",
        ("prometheus_client/", "prometheus_flask_exporter/", "webhook_service/observability/metrics.py"),
    ),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("group commit (queue, hand-off, wake-ups)", ("webhook_service/storage/group_commit.py",)),
    ("storage (messages.py, engine.py, sqlite3 calls)", ("webhook_service/storage/", "sqlite3/")),
    ("request id, log line fields, client address", ("webhook_service/observability/", "ipaddress.py", "uuid.py")),
    (
        "view and error handlers (api/)",
        ("webhook_service/api/",),
    ),
    ("Flask + werkzeug", ("flask/", "werkzeug/", "email/", "http/", "urllib/")),
    (
        "gunicorn (HTTP parsing, sockets, thread pool)",
        ("gunicorn/", "selectors.py", "socket.py", "concurrent/", "queue.py"),
    ),
]
SAMPLES_PER_SECOND = 200
GENERIC = ("threading.py", "contextlib.py", "functools.py", "typing.py", "abc.py", "enum.py", "<frozen", "weakref")


def _file(frame: str) -> str:
    return frame.rpartition(" (")[2]


def attribute(stack: list[str]) -> str:
    files = [_file(frame) for frame in reversed(stack)]
    for name in files:
        if name.startswith(GENERIC):
            continue
        for part, prefixes in PARTS:
            if name.startswith(prefixes):
                return part
    # Only generic frames: a thread between requests (the pool's threads start in threading).
    return "gunicorn (HTTP parsing, sockets, thread pool)" if files else "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks in this file")
    args = parser.parse_args()
    for tool, hint in (("wrk", "apt-get install wrk"), ("py-spy", "pip install py-spy")):
        if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
            print(f"{tool} is needed: {hint}", file=sys.stderr)
            return 2
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    workdir = Path(tempfile.mkdtemp(prefix="webhook-profile-"))
    try:
        messages, warmup = workdir / "messages.txt", workdir / "warmup.txt"
        write_signed_messages(messages, 12_000 * (args.seconds + 2))
        write_signed_messages(warmup, 12_000 * WARMUP_SECONDS, prefix="warmup")
        env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": str(workdir / "messages.db"), "LOG_LEVEL": "INFO"}
        with Server(env, workdir / "gunicorn.log") as server:
            run_wrk(server.port, warmup, WARMUP_SECONDS, args.connections, 2)
            raw = workdir / "stacks.txt"
            samplers = [
                subprocess.Popen(
                    [py_spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", str(SAMPLES_PER_SECOND)]
                    + ["--format", "raw", "--duration", str(args.seconds), "--output", f"{raw}.{pid}"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in server.worker_pids()
            ]
            cpu_before = server.worker_cpu_seconds()
            result = {}
            load = threading.Thread(
                target=lambda: result.update(run_wrk(server.port, messages, args.seconds, args.connections, 2))
            )
            load.start()
            load.join()
            cpu = server.worker_cpu_seconds() - cpu_before
            for sampler in samplers:
                sampler.wait(timeout=args.seconds + 60)
        samples: Counter[str] = Counter()
        stacks_text = ""
        for path in workdir.glob("stacks.txt.*"):
            text = path.read_text()
            stacks_text += text
            for line in text.splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    samples[attribute(stack.split(";"))] += int(count)
        if args.raw:
            args.raw.write_text(stacks_text)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    total = sum(samples.values()) or 1
    requests = result["requests"]
    per_request_us = cpu * 1e6 / requests
    held_us = total / SAMPLES_PER_SECOND * 1e6 / requests
    print(
        f"POST /webhook under wrk ({args.connections} connections, {args.seconds}s): {result['rps']:.0f} req/s, "
        f"p99 {result['p99_ms']:.1f} ms; worker CPU {per_request_us:.0f} us/request, of which the GIL was held "
        f"{held_us:.0f} us ({total} samples at {SAMPLES_PER_SECOND}/s)"
    )
    print(f"{'part (GIL held)':50} {'share':>6} {'us/req':>7}")
    for part, count in samples.most_common():
        print(f"{part:50} {count / total:6.1%} {count / SAMPLES_PER_SECOND * 1e6 / requests:7.0f}")
    print(f"{'outside the GIL (SQLite C code, system calls)':50} {'':>6} {per_request_us - held_us:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
