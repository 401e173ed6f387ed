"""The forwarder as a real process (`python -m webhook_service forward`), for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.consumer import Consumer
from tests.support.messages import make_message
from tests.support.metrics import parse_metrics, value
from tests.support.servers import ROOT, free_port, request, signed_post, stop_process, wait_until
from webhook_service.timestamps import epoch_from_iso

FORWARD_SECRET = "whsec_" + "Zm9yd2FyZGVyLXRlc3Qtc2VjcmV0LTMyYnl0ZXM="


def destination_toml(name: str, url: str, **fields) -> str:
    """One [destinations.NAME] table; fields as TOML values (str, int, float, lists of
    strings, and tables of those)."""
    values = {"url": url, "secret": FORWARD_SECRET, "start": "beginning", **fields}
    lines = [f"[destinations.{name}]"]
    for key, setting in values.items():
        lines.append(f"{key} = {_toml(setting)}")
    return "\n".join(lines) + "\n"


def _toml(setting) -> str:
    if isinstance(setting, dict):
        return "{ " + ", ".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in setting.items()) + " }"
    return json.dumps(setting)


@dataclass
class Forwarder:
    """`webhook-service forward --config FILE` with its metrics on a free loopback port."""

    workdir: Path
    env: dict[str, str]
    config: str
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self, wait: bool = True) -> Forwarder:
        config_path = self.workdir / f"forward-{self.metrics_port}.toml"
        config_path.write_text(self.config)
        self.log_path = self.workdir / f"forwarder-{self.metrics_port}-{time.monotonic_ns()}.log"
        env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "webhook_service",
                    "forward",
                    "--config",
                    str(config_path),
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait and not wait_until(self._serving, timeout=30):
            output = self.output()
            self.kill()
            raise RuntimeError(f"the forwarder did not start:\n{output}")
        return self

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the forwarder exited with {self.process.returncode}:\n{self.output()}")
        return request(self.metrics_port, "GET", "/metrics", timeout=2).status == 200

    def metrics(self) -> str:
        return request(self.metrics_port, "GET", "/metrics").body.decode()

    def attempts(self, destination: str, outcome: str) -> float:
        """webhook_forward_attempts_total of one destination and outcome, as scraped now."""
        return value(
            parse_metrics(self.metrics()), "webhook_forward_attempts_total", destination=destination, outcome=outcome
        )

    def stop(self, timeout: float = 30) -> int | None:
        return stop_process(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.output().splitlines():
            if line.strip():
                lines.append(json.loads(line))
        return lines

    def attempt_starts(self) -> list[float]:
        """When each attempt started, as rate_per_second counted it (epoch seconds, sorted)."""
        lines = [line for line in self.log_lines() if line.get("event") == "forward attempt"]
        return sorted(epoch_from_iso(line["started_at"]) for line in lines)


def most_in_a_second(moments: list[float]) -> int:
    """The most of `moments` (epoch seconds) in any half-open second."""
    return max(sum(1 for other in moments if at <= other < at + 1.0) for at in moments)


def post_messages(port: int, prefix: str, count: int) -> list[str]:
    """`count` signed deliveries to the service, one after another; returns their message_ids."""
    ids = [f"{prefix}-{number:03d}" for number in range(count)]
    for message_id in ids:
        assert signed_post(port, make_message(message_id=message_id, text=f"text of {message_id}")).status == 200
    return ids


def forwarder(tmp_path: Path, server_env: dict, started: list, config: str) -> Forwarder:
    """A forwarder started with `config`, stopped with the test's other processes."""
    process = Forwarder(workdir=tmp_path, env=server_env, config=config).start()
    started.append(process)
    return process


def consumer(started: list, answer=None, **options) -> Consumer:
    """A consumer started now, stopped with the test's other processes."""
    process = Consumer(FORWARD_SECRET, answer, **options).start()
    started.append(process)
    return process
