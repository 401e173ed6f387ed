"""Logs and metrics as operators see them: real gunicorn with 3 worker processes."""

import json
import uuid

import pytest

from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.metrics import value as count
from tests.support.servers import Gunicorn, concurrent_posts, request, scrape, signed_post

pytestmark = [pytest.mark.e2e, pytest.mark.http_only]


def test_every_scrape_sums_all_workers(gunicorn_server):
    port = gunicorn_server.port
    for _ in range(40):
        assert request(port, "GET", "/stats").status == 200
    totals = [count(scrape(port), "http_requests_total", method="GET", path="/stats", status="200") for _ in range(8)]
    assert totals == [40.0] * 8
    histogram_counts = {
        count(scrape(port), "http_request_duration_seconds_count", method="GET", path="/stats") for _ in range(4)
    }
    assert histogram_counts == {40.0}


def test_concurrent_duplicates_count_one_success_and_the_rest_duplicates(gunicorn_server):
    port = gunicorn_server.port
    before = scrape(port)
    assert concurrent_posts(port, make_message(message_id="dup-metrics"), 48) == [200] * 48
    after = scrape(port)

    def moved(result):
        return count(after, "webhook_requests_total", result=result) - count(
            before, "webhook_requests_total", result=result
        )

    assert (moved("success"), moved("duplicate")) == (1.0, 47.0)


def test_random_unmatched_urls_add_no_series(gunicorn_server):
    port = gunicorn_server.port
    request(port, "GET", "/no-such-page")
    before = {key for key in scrape(port) if key[0] == "http_requests_total"}
    for _ in range(30):
        assert request(port, "GET", f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status == 404
    after = {key for key in scrape(port) if key[0] == "http_requests_total"}
    new_paths = {dict(labels)["path"] for _, labels in after - before}
    assert new_paths <= {"/metrics"}


def test_counts_survive_killed_workers(gunicorn_server):
    port = gunicorn_server.port
    for number in range(10):
        assert signed_post(port, make_message(message_id=f"survive-{number}"), SECRET).status == 200
    gunicorn_server.kill_workers()
    assert count(scrape(port), "webhook_requests_total", result="success") == 10


def test_every_printed_line_is_json_and_request_lines_carry_their_fields(gunicorn_server):
    port = gunicorn_server.port
    signed_post(port, make_message(message_id="logged", text="do not log me"), SECRET)
    signed_post(port, make_message(message_id="logged"), SECRET, headers={"X-Request-ID": "trace-42"})
    request(port, "POST", "/webhook", b"{}", {"X-Signature": "0" * 64})
    request(port, "GET", "/messages?limit=abc")
    request(port, "GET", "/nope")
    gunicorn_server.stop()

    lines = gunicorn_server.log_lines()
    parsed = [json.loads(line) for line in lines]
    assert all({"ts", "level", "event"} <= set(entry) for entry in parsed)
    assert any(entry["event"].startswith("Booting worker") for entry in parsed)
    assert any(entry["event"].startswith("Shutting down") for entry in parsed)
    requests = [entry for entry in parsed if entry["event"] == "request"]
    webhook = [entry for entry in requests if entry["path"] == "/webhook"]
    assert [(e["result"], e["dup"], e.get("message_id")) for e in webhook] == [
        ("success", False, "logged"),
        ("duplicate", True, "logged"),
        ("invalid_signature", False, None),
    ]
    assert webhook[1]["request_id"] == "trace-42"
    for entry in requests:
        assert {"request_id", "method", "path", "status", "latency_ms", "client"} <= set(entry)
    assert "do not log me" not in gunicorn_server.output()
    assert SECRET not in gunicorn_server.output()


def test_dead_workers_are_folded_so_the_folder_stays_small_and_counts_exact(tmp_path, server_env):
    metrics_dir = tmp_path / "metrics"
    server = Gunicorn(workdir=tmp_path, env=dict(server_env, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)), workers=2)
    server.start()
    try:
        port = server.port
        for round_number in range(8):
            for number in range(3):
                message = make_message(message_id=f"fold-{round_number}-{number}")
                assert signed_post(port, message, SECRET).status == 200
            server.kill_workers()
        values = scrape(port)
        assert count(values, "webhook_requests_total", result="success") == 24
        assert count(values, "http_requests_total", method="POST", path="/webhook", status="200") == 24
        assert count(values, "http_request_duration_seconds_count", method="POST", path="/webhook") == 24
        # Two live workers write a counter, a histogram and three gauge files (livemax: build
        # info, livesum: held long-polls, livemostrecent: the oldest message's age) each; the
        # 16 dead ones live on in one archive per type (their gauges go with them).
        files = sorted(path.name for path in metrics_dir.glob("*.db"))
        assert len(files) <= 2 * 5 + 2, files
        assert {"counter_archive.db", "histogram_archive.db"} <= set(files)
    finally:
        server.stop()
