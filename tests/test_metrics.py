import pytest

from tests.support.messages import make_message
from tests.support.metrics import samples, value
from webhook_service.config import Settings


def test_metrics_are_prometheus_text_0_0_4(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE http_requests_total counter" in response.get_data(as_text=True)


def test_requests_are_counted_by_route_template_and_status(client, signed_post):
    client.get("/messages")
    client.get("/messages?limit=0")
    signed_post(make_message())
    values = samples(client)
    assert value(values, "http_requests_total", method="GET", path="/messages", status="200") == 1
    assert value(values, "http_requests_total", method="GET", path="/messages", status="422") == 1
    assert value(values, "http_requests_total", method="POST", path="/webhook", status="200") == 1


def test_the_scrape_itself_is_counted(client):
    client.get("/metrics")
    values = samples(client)
    assert value(values, "http_requests_total", method="GET", path="/metrics", status="200") == 1


def test_unmatched_urls_and_odd_methods_share_fixed_labels(client):
    before = samples(client)
    for number in range(20):
        client.get(f"/probe/{number}")
    client.open("/messages", method="BREW")
    client.open("/no-such-route", method="DELETE")
    after = samples(client)
    assert value(after, "http_requests_total", method="GET", path="<unmatched>", status="404") == 20
    assert value(after, "http_requests_total", method="DELETE", path="<unmatched>", status="404") == 1
    # A 405 belongs to the route it was asked of.
    assert value(after, "http_requests_total", method="OTHER", path="/messages", status="405") == 1
    new_series = {key for key in after if key not in before and key[0] == "http_requests_total"}
    assert {dict(labels)["path"] for _, labels in new_series} <= {"<unmatched>", "/metrics", "/messages"}


def test_webhook_outcomes_are_counted(make_app, database_url, signed_post, client):
    signed_post(make_message(message_id="a"))
    signed_post(make_message(message_id="a"))
    signed_post(make_message(message_id="b", ts="bad"))
    client.post("/webhook", data=b"{}")
    signed_post(make_message(message_id="c", text="x" * 70_000))
    values = samples(client)
    for result, count in [
        ("success", 1),
        ("duplicate", 1),
        ("validation_error", 1),
        ("invalid_signature", 1),
        ("payload_too_large", 1),
        ("stale_timestamp", 0),
        ("db_error", 0),
        ("not_configured", 0),
        ("bad_request", 0),
    ]:
        assert value(values, "webhook_requests_total", result=result) == count, result

    unconfigured = make_app(Settings(webhook_secrets=(), database_url=database_url)).test_client()
    unconfigured.post("/webhook", data=b"{}")
    assert value(samples(unconfigured), "webhook_requests_total", result="not_configured") == 1


def test_latency_is_observed_in_seconds_and_milliseconds(client):
    for _ in range(3):
        client.get("/stats")
    values = samples(client)
    labels = {"method": "GET", "path": "/stats"}
    assert value(values, "http_request_duration_seconds_count", **labels) == 3
    assert value(values, "request_latency_ms_count", **labels) == 3
    seconds = value(values, "http_request_duration_seconds_sum", **labels)
    milliseconds = value(values, "request_latency_ms_sum", **labels)
    assert abs(milliseconds - seconds * 1000) < 1e-6 * max(1.0, milliseconds)
    assert value(values, "http_request_duration_seconds_bucket", le="0.001", **labels) <= 3
    assert value(values, "http_request_duration_seconds_bucket", le="5.0", **labels) == 3


def test_each_app_has_its_own_registry(make_app, settings):
    first, second = make_app(settings).test_client(), make_app(settings).test_client()
    first.get("/stats")
    assert ("http_requests_total", (("method", "GET"), ("path", "/stats"), ("status", "200"))) not in samples(second)
    assert value(samples(first), "http_requests_total", method="GET", path="/stats", status="200") == 1


def test_the_first_families_are_the_request_counters(client):
    client.get("/stats")
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert families[:2] == ["http_requests_total", "webhook_requests_total"]
    assert lines[0].startswith("# HELP http_requests_total")


def test_build_info_commit_histograms_and_database_errors_are_exported(client, signed_post):
    from webhook_service import __version__

    for number in range(3):
        signed_post(make_message(message_id=f"g{number}"))
    values = samples(client)
    build = [labels for name, labels in values if name == "webhook_service_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] == __version__
    assert value(values, "webhook_service_build_info", **dict(build[0])) == 1
    assert value(values, "webhook_group_commit_rows_count") == 3
    assert value(values, "webhook_group_commit_rows_sum") == 3
    assert value(values, "webhook_group_commit_duration_seconds_count") == 3
    for operation in ("write", "read", "readiness"):
        assert value(values, "webhook_database_errors_total", operation=operation) == 0


@pytest.mark.sqlite_only
def test_database_errors_are_counted_by_operation(client, signed_post, settings):
    import shutil
    from pathlib import Path

    path = Path(settings.database_url.removeprefix("sqlite:///"))
    shutil.move(path, path.with_suffix(".away"))
    assert signed_post(make_message()).status_code == 503
    assert client.get("/stats").status_code == 503
    assert client.get("/health/ready").status_code == 503
    values = samples(client)
    for operation in ("write", "read", "readiness"):
        assert value(values, "webhook_database_errors_total", operation=operation) == 1
