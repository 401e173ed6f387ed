"""The shipped alert rules and dashboard, proven against a real Prometheus scraping real gunicorn."""

import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from tests.support.consumer import Answer, Consumer
from tests.support.forwarder import FORWARD_SECRET, Forwarder, destination_toml
from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.servers import ROOT, Gunicorn, Prometheus, request, signed_post, wait_until

pytestmark = pytest.mark.e2e

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "webhook-service.json"
METRICS_TOKEN = "prometheus-scrape-token-0123"

if shutil.which("promtool") is None or shutil.which("prometheus") is None:
    if os.environ.get("REQUIRE_PROMETHEUS"):
        raise RuntimeError("prometheus and promtool are required (REQUIRE_PROMETHEUS is set) but not installed")
    pytest.skip("prometheus is not installed (apt-get install prometheus)", allow_module_level=True)


def test_the_rules_and_the_scrape_config_are_valid_and_the_rule_tests_pass():
    for command in (
        ["promtool", "check", "rules", str(RULES)],
        ["promtool", "test", "rules", str(RULE_TESTS)],
        ["promtool", "check", "config", "--syntax-only", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    # Every panel follows the job/instance variables; "All" selects everything.
    return [expression.replace("$job", ".+").replace("$instance", ".+") for expression in expressions]


def recording_rules() -> list[str]:
    return re.findall(r"^\s+- record: (\S+)$", RULES.read_text(), re.MULTILINE)


@pytest.fixture
def monitored(tmp_path, server_env):
    app = Gunicorn(workdir=tmp_path, env=dict(server_env, METRICS_TOKEN=METRICS_TOKEN), workers=3).start()
    # A consumer that refuses one message: the forwarder's dead-letter alert fires for it.
    consumer = Consumer(FORWARD_SECRET, lambda message: Answer(400 if message["message_id"] == "live-3" else 200))
    consumer.start()
    forwarder = Forwarder(workdir=tmp_path, env=server_env, config=destination_toml("billing", consumer.url)).start()
    # The shipped rules, with one alert made quick to fire: what this test proves is that it can.
    quick_rules = tmp_path / "rules.yml"
    quick, replaced = re.subn(
        r"(- alert: WebhookInvalidSignatureSurge\n(?:.*\n)*?\s+for: )10m", r"\g<1>0s", RULES.read_text()
    )
    assert replaced == 1
    quick_rules.write_text(quick)
    prometheus = Prometheus(
        workdir=tmp_path,
        scrape_port=app.port,
        rule_files=[quick_rules],
        metrics_token=METRICS_TOKEN,
        forwarder_port=forwarder.metrics_port,
    )
    try:
        prometheus.start()
        yield app, prometheus
    finally:
        prometheus.stop()
        forwarder.kill()
        consumer.stop()
        app.stop()


def drive_mixed_traffic(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    number = 0
    while time.monotonic() < deadline:
        number += 1
        signed_post(port, make_message(message_id=f"live-{number}"), SECRET)
        signed_post(port, make_message(message_id=f"live-{number}"), SECRET)  # duplicate
        for _ in range(4):
            request(port, "POST", "/webhook", b"{}", {"X-Signature": "0" * 64})  # bad signature
        signed_post(port, {"message_id": f"bad-{number}"}, SECRET)  # invalid body
        request(port, "GET", "/messages?limit=5")
        request(port, "GET", "/stats")
        request(port, "GET", f"/no-such-page/{number}")
        time.sleep(0.05)


def test_every_dashboard_query_and_recording_rule_returns_data_and_an_alert_fires(monitored):
    app, prometheus = monitored
    assert wait_until(lambda: prometheus.query('up{job="webhook-service"} == 1'), timeout=30)
    assert wait_until(lambda: prometheus.query('up{job="webhook-forwarder"} == 1'), timeout=30)
    drive_mixed_traffic(app.port, seconds=8)

    missing = []
    for expression in [*dashboard_queries(), *recording_rules()]:
        if not wait_until(lambda expression=expression: prometheus.query(expression), timeout=20, interval=0.5):
            missing.append(expression)
    assert not missing, f"no data for: {missing}"

    def surge_firing() -> bool:
        return any(
            alert["labels"]["alertname"] == "WebhookInvalidSignatureSurge" and alert["state"] == "firing"
            for alert in prometheus.alerts()
        )

    # The surge goes on until the alert says so: on a busy machine the traffic above may have
    # been too slow to stay over the alert's rate of one a second for long.
    surging = threading.Event()

    def surge() -> None:
        while not surging.is_set():
            request(app.port, "POST", "/webhook", b"{}", {"X-Signature": "0" * 64})
            time.sleep(0.05)

    sender = threading.Thread(target=surge, daemon=True)
    sender.start()
    try:
        assert wait_until(surge_firing, timeout=30), prometheus.alerts()
    finally:
        surging.set()
        sender.join(timeout=10)

    def dead_letters_alerted() -> bool:
        return any(
            alert["labels"]["alertname"] == "WebhookForwardDeadLettersGrowing"
            and alert["labels"].get("destination") == "billing"
            and alert["state"] == "firing"
            for alert in prometheus.alerts()
        )

    assert wait_until(dead_letters_alerted, timeout=30), prometheus.alerts()
    calm = {alert["labels"]["alertname"] for alert in prometheus.alerts() if alert["state"] == "firing"}
    assert "WebhookServiceDown" not in calm and "WebhookIngestionFailing" not in calm
    assert "WebhookForwarderDown" not in calm and "WebhookForwardLagHigh" not in calm
