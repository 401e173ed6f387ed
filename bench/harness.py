"""What the benchmarks share: a gunicorn started with the project's settings on a free
loopback port, stopped by its own process group, and a plain HTTP GET."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(port: int, path: str) -> dict:
    """GET a JSON document from 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from its third field on (state, parent, ...), or None once it is gone.
    The command (field 2) may hold spaces, so the split starts after its closing parenthesis."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group_cpu_seconds(group: int) -> float:
    """User plus system CPU time the live processes of a process group have used so far."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) and int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time used so far by every process named postgres on this machine, and by the
    ones that ended (a backend's time goes to the postmaster that reaped it)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)
                name = fields[0].split("(", 1)[1]
                if name.startswith("postgres"):
                    values = fields[1].split()
                    ticks += sum(int(value) for value in values[11:15])
        except (OSError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    """gunicorn with gunicorn.conf.py serving `app` from the checkout; a context manager."""

    def __init__(self, env: dict[str, str], log_path: Path, app: str = "wsgi:app", workers: int | None = None):
        self.port = free_port()
        self.env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        self.env.update(env)
        self.log_path = log_path
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}"]
        self.command = [*command, *(["--workers", str(workers)] if workers else []), app]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise SystemExit(f"gunicorn did not start; see {self.log_path}") from None
                time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's child processes."""
        master = self.process.pid
        return [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) and int(fields[1]) == master
        ]

    def worker_cpu_seconds(self) -> float:
        """User plus system CPU time the workers have used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.worker_pids():
            if fields := _stat_fields(pid):
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def __exit__(self, *_exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
