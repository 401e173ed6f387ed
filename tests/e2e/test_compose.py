"""compose.yaml as docker-compose reads it: the default services, and the monitoring profile."""

import os
import shutil
import subprocess

import pytest

from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e

if shutil.which("docker-compose") is None:
    if os.environ.get("REQUIRE_COMPOSE"):
        raise RuntimeError("docker-compose is required (REQUIRE_COMPOSE is set) but not installed")
    pytest.skip("docker-compose is not installed (apt-get install docker-compose)", allow_module_level=True)


@pytest.fixture
def compose(tmp_path):
    """Run docker-compose on compose.yaml with only the given environment (no .env file)."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")

    def run(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
        inherited = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
        return subprocess.run(
            ["docker-compose", "-f", str(ROOT / "compose.yaml"), "--env-file", str(empty_env_file), *arguments],
            cwd=ROOT,
            env={**inherited, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def test_prometheus_and_grafana_belong_to_the_monitoring_profile_only(compose):
    result = compose("config", env={"WEBHOOK_SECRET": "x"})
    assert result.returncode == 0, result.stderr
    # The services, each with the lines below its name; only the monitoring ones name a profile.
    services: dict[str, list[str]] = {}
    section = service = None
    for line in result.stdout.splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
        elif section == "services" and line.startswith("  ") and not line.startswith("   "):
            service = line.strip().rstrip(":")
            services[service] = []
        elif section == "services" and service is not None:
            services[service].append(line.strip())
    assert {name for name, lines in services.items() if "- monitoring" in lines} == {"prometheus", "grafana"}
    assert {"api", "nginx"} <= set(services)


def test_the_monitoring_profile_uses_the_shipped_files(compose):
    result = compose("--profile", "monitoring", "config", env={"WEBHOOK_SECRET": "x", "METRICS_TOKEN": "t" * 20})
    assert result.returncode == 0, result.stderr
    for expected in (
        "prom/prometheus",
        "grafana/grafana",
        "deploy/prometheus/rules.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/grafana/dashboards",
        "deploy/grafana/provisioning",
    ):
        assert expected in result.stdout


def test_the_forwarding_profile_runs_the_forwarder_on_the_same_data_with_its_config_and_secret(compose):
    result = compose("--profile", "forwarding", "config", env={"WEBHOOK_SECRET": "x"})
    assert result.returncode == 0, result.stderr
    forwarder = result.stdout.split("\n  forwarder:\n", 1)[1].split("\n  grafana:", 1)[0]
    for expected in (
        "- forward",
        "- --metrics-port",
        "deploy/forward.example.toml:/etc/webhook-service/forward.toml:ro",
        "data:/data",
        "forward-billing",
        "condition: service_healthy",
        "- forwarding",
    ):
        assert expected in forwarder, expected


def test_a_missing_secret_is_refused_with_a_message(compose):
    result = compose("config", "-q", env={})
    assert result.returncode != 0
    assert "WEBHOOK_SECRET" in result.stderr


def test_the_trust_settings_are_passed_through(compose):
    result = compose("config", env={"WEBHOOK_SECRET": "x", "API_TOKENS": "a" * 20, "SIGNATURE_SCHEMES": "standard"})
    assert result.returncode == 0, result.stderr
    assert "API_TOKENS: " + "a" * 20 in result.stdout and "SIGNATURE_SCHEMES: standard" in result.stdout


def test_the_postgres_file_runs_the_api_on_postgres_16_once_it_is_healthy(compose):
    result = compose(
        "-f", str(ROOT / "compose.postgres.yaml"), "config", env={"WEBHOOK_SECRET": "x", "POSTGRES_PASSWORD": "pw1"}
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "DATABASE_URL: postgresql://webhook:pw1@postgres:5432/webhook" in out
    assert "image: postgres:16" in out and "pg_isready -U webhook -d webhook" in out
    api = out[out.index("  api:") : out.index("  nginx:")]
    assert "postgres:\n        condition: service_healthy" in api
    assert "postgres-data:/var/lib/postgresql/data" in out and "\n  postgres-data:" in out


def test_the_postgres_file_refuses_to_start_without_a_password(compose):
    result = compose("-f", str(ROOT / "compose.postgres.yaml"), "config", "-q", env={"WEBHOOK_SECRET": "x"})
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr
