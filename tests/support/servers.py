"""Start and stop real gunicorn (and nginx) processes on free loopback ports for end-to-end tests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tests.support.messages import E2E_SECRET, make_message, signed_body
from tests.support.metrics import parse_metrics

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 15
) -> Response:
    """One HTTP request on a new connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def signed_post(port: int, payload: dict, secret: str = E2E_SECRET, headers: dict | None = None) -> Response:
    """POST /webhook with a valid signature for `payload` under `secret`."""
    body, all_headers = signed_body(payload, secret)
    all_headers.update(headers or {})
    return request(port, "POST", "/webhook", body, all_headers)


def concurrent_posts(port: int, payload: dict, count: int, secret: str = E2E_SECRET) -> list[int]:
    """`count` simultaneous signed posts of one payload; returns their statuses."""
    barrier = threading.Barrier(count)

    def post(_):
        barrier.wait(timeout=30)
        return signed_post(port, payload, secret).status

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(post, range(count)))


def chunked_post(port: int, body: bytes, headers: dict) -> tuple[int, bytes]:
    """POST /webhook with a chunked body of 4 KiB pieces; returns the status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        pieces = (body[start : start + 4096] for start in range(0, len(body), 4096))
        conn.request("POST", "/webhook", body=pieces, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(port: int) -> dict:
    """GET /metrics, checked for Prometheus' content type, parsed."""
    response = request(port, "GET", "/metrics")
    assert response.status == 200, (response.status, response.body[:500])
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(response.body.decode())


def wait_until(check, timeout: float = START_TIMEOUT_SECONDS, interval: float = 0.1) -> bool:
    """Call `check` until it returns true or `timeout` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def stop_process(process: subprocess.Popen | None, timeout: float) -> int | None:
    """SIGTERM a server started in its own session, then SIGKILL its group if it lingers."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)


@dataclass
class Gunicorn:
    """gunicorn serving wsgi:app with the project's gunicorn.conf.py, as in production."""

    workdir: Path
    env: dict[str, str]
    workers: int | None = 3
    port: int = field(default_factory=free_port)
    app: str = "wsgi:app"
    # False: no --bind on the command line, so gunicorn.conf.py must bind from HOST and PORT.
    bind: bool = True
    # A command that runs gunicorn (setpriv, to drop privileges), if any.
    wrapper: list[str] = field(default_factory=list)
    # The interpreter whose gunicorn and webhook_service run, and the folder they start in
    # (by default the repository's, so that wsgi.py and the package come from the checkout).
    python: str = sys.executable
    cwd: Path = ROOT
    # True: started as `python -m webhook_service serve` (the package's own configuration).
    serve: bool = False
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self, wait: bool = True) -> Gunicorn:
        """Start the server; with `wait`, until /health/live answers. Raises RuntimeError."""
        self.log_path = self.workdir / f"gunicorn-{self.port}-{time.monotonic_ns()}.log"
        env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        # The .env the server reads is the test's (none unless it writes one), not the checkout's.
        env["WEBHOOK_SERVICE_ENV_FILE"] = str(self.workdir / ".env")
        env.update(self.env)
        if self.serve:
            command = [*self.wrapper, self.python, "-m", "webhook_service", "serve"]
            app = []
        else:
            command = [*self.wrapper, self.python, "-m", "gunicorn", "-c", str(self.cwd / "gunicorn.conf.py")]
            app = [self.app]
        if self.bind:
            command += ["--bind", f"127.0.0.1:{self.port}"]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, *app],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait and not wait_until(self._serving):
            output = self.output()
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{output}")
        return self

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
        return request(self.port, "GET", "/health/live", timeout=2).status == 200

    def wait_for_exit(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """Wait for the master to exit by itself and return its exit code."""
        return self.process.wait(timeout=timeout)

    def worker_pids(self) -> list[int]:
        """The pids of the master's worker processes."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def kill_workers(self) -> None:
        """SIGKILL every worker, as a crash would, and wait until the master's new ones serve."""
        for pid in self.worker_pids():
            os.kill(pid, signal.SIGKILL)
        if not wait_until(lambda: request(self.port, "GET", "/health/live", timeout=2).status == 200):
            raise RuntimeError(f"gunicorn did not recover from killed workers:\n{self.output()}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL to the whole process group if it lingers."""
        return stop_process(self.process, timeout)

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.strip()]


class Load:
    """Threads posting unique signed messages until stopped; remembers what was acknowledged."""

    def __init__(self, port: int, secret: str, threads: int = 8, prefix: str = "load") -> None:
        self.port = port
        self.secret = secret
        self.prefix = prefix
        self.acknowledged: list[str] = []
        # When each was acknowledged (time.monotonic() at the answer).
        self.acknowledged_at: dict[str, float] = {}
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, number: int) -> None:
        sequence = 0
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            message_id = f"{self.prefix}-{number}-{sequence}"
            sequence += 1
            try:
                status = signed_post(self.port, make_message(message_id=message_id), self.secret).status
            except (OSError, http.client.HTTPException) as error:  # cut off while the server dies: not acknowledged
                self.statuses.append(type(error).__name__)
                time.sleep(0.05)
                continue
            self.statuses.append(status)
            if status == 200:
                self.acknowledged_at[message_id] = time.monotonic()
                self.acknowledged.append(message_id)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


NGINX_CONFIG = ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    """Where nginx is installed, if it is."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


@dataclass
class Nginx:
    """nginx with the project's deploy/nginx.conf, rewritten only for loopback ports and the
    upstream address, in front of a Gunicorn."""

    workdir: Path
    upstream_port: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        """Start in the foreground of a child process; raises RuntimeError if it does not serve."""
        config = NGINX_CONFIG.read_text()
        for original, replacement in (
            ("listen 80;", f"listen 127.0.0.1:{self.port};"),
            ("server api:8000;", f"server 127.0.0.1:{self.upstream_port};"),
        ):
            if original not in config:
                raise RuntimeError(f"deploy/nginx.conf no longer contains {original!r}")
            config = config.replace(original, replacement)
        config_path = self.workdir / f"nginx-{self.port}.conf"
        config_path.write_text(config)
        self.access_log = self.workdir / f"nginx-{self.port}.access.log"
        self.error_log = self.workdir / f"nginx-{self.port}.error.log"
        with open(self.access_log, "wb") as out, open(self.error_log, "wb") as err:
            self.process = subprocess.Popen(
                [
                    nginx_binary(),
                    "-c",
                    str(config_path),
                    "-g",
                    f"daemon off; pid {self.workdir / f'nginx-{self.port}.pid'};",
                ],
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        if not wait_until(self._serving, timeout=15):
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.error_log.read_text()}")
        return self

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.error_log.read_text()}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), then SIGKILL to its process group if it lingers."""
        stop_process(self.process, timeout=10)

    def access_lines(self) -> list[dict]:
        """nginx's JSON access log, parsed."""
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]


@dataclass
class Prometheus:
    """A real Prometheus (Debian's package) scraping a Gunicorn every second, with rule files."""

    workdir: Path
    scrape_port: int
    rule_files: list[Path]
    metrics_token: str | None = None
    # A forwarder's metrics port, scraped as job webhook-forwarder.
    forwarder_port: int | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> Prometheus:
        """Start it and wait until it is ready; raises RuntimeError."""
        scrape = {
            "job_name": "webhook-service",
            "static_configs": [{"targets": [f"127.0.0.1:{self.scrape_port}"]}],
        }
        if self.metrics_token:
            token_file = self.workdir / "metrics-token"
            token_file.write_text(self.metrics_token)
            scrape["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [scrape],
        }
        if self.forwarder_port is not None:
            config["scrape_configs"].append(
                {"job_name": "webhook-forwarder", "static_configs": [{"targets": [f"127.0.0.1:{self.forwarder_port}"]}]}
            )
        config_path = self.workdir / f"prometheus-{self.port}.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = self.workdir / f"prometheus-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    shutil.which("prometheus") or "/usr/bin/prometheus",
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / f'tsdb-{self.port}'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_until(lambda: request(self.port, "GET", "/-/ready", timeout=2).status == 200, timeout=30):
            self.stop()
            raise RuntimeError(f"prometheus did not start:\n{self.log_path.read_text()}")
        return self

    def query(self, expression: str) -> list[dict]:
        """The result vector of an instant query."""
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        body = request(self.port, "GET", path, timeout=10).json()
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {expression}: {body}")
        return body["data"]["result"]

    def alerts(self) -> list[dict]:
        return request(self.port, "GET", "/api/v1/alerts", timeout=10).json()["data"]["alerts"]

    def stop(self) -> None:
        stop_process(self.process, timeout=15)


def run_cli(env: dict, *arguments: str, input: bytes | None = None, text: bool = False) -> subprocess.CompletedProcess:
    """`python -m webhook_service ARGUMENTS` from the checkout with `env` alone (and a PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "webhook_service", *arguments],
        cwd=ROOT,
        env={"WEBHOOK_SERVICE_ENV_FILE": os.devnull, **env, "PATH": "/usr/bin:/bin"},
        input=input,
        capture_output=True,
        text=text,
        timeout=120,
        check=False,
    )
