"""/console in a real browser (Debian's Chromium through Playwright) against real gunicorn:
what a person sees matches what the API answers, new deliveries appear live, tokens are
asked for, message texts stay text, and the page fetches nothing from any other host.
A screenshot of each view is kept in the test's temporary folder."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.support.browser import launched_browser, watched_page
from tests.support.database import run_sql
from tests.support.messages import E2E_SECRET, make_message
from tests.support.servers import Gunicorn, Nginx, nginx_binary, request, signed_post
from webhook_service.storage import messages as message_storage
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import NewMessage, insert_messages_if_new
from webhook_service.storage.migrations import upgrade_to_head

pytestmark = [pytest.mark.e2e, pytest.mark.sqlite_only]

XSS_TEXT = "<img src=x onerror=alert(1)>"
LONG_TEXT = "long " * 100
TOKEN = "console-token-0123456789"
HOURS_AGO = (30, 5, 1)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seed(database_url: str) -> None:
    """Messages stored over three hours of the last two days (through the storage layer, as
    if they had arrived then), before the server starts."""
    upgrade_to_head(database_url)
    database = Database(database_url)
    now = datetime.now(UTC)
    stamp = message_storage.utc_now_iso
    try:
        for hours in HOURS_AGO:
            batch = [
                NewMessage(f"old-{hours}-{n}", f"+1{n % 3}", "+2", f"2025-01-{n + 1:02d}T00:00:00Z", f"earlier {n}")
                for n in range(hours % 4 + 1)
            ]
            message_storage.utc_now_iso = lambda at=now - timedelta(hours=hours): iso(at)
            with database.write_transaction() as conn:
                insert_messages_if_new(conn, batch)
    finally:
        message_storage.utc_now_iso = stamp
        database.dispose()


@pytest.fixture(scope="module")
def browser():
    with launched_browser() as launched:
        yield launched


def start_server(tmp_path, server_env, **extra_env) -> Gunicorn:
    seed(server_env["DATABASE_URL"])
    server = Gunicorn(workdir=tmp_path, env={**server_env, **extra_env}, workers=2).start()
    for number in range(22):
        payload = make_message(
            message_id=f"m{number:02d}",
            ts=f"2025-03-{number + 1:02d}T10:00:00Z",
            text=f"message number {number}",
        )
        payload["from"] = "+15550001" if number % 2 else "+15550002"
        assert signed_post(server.port, payload).status == 200
    for message_id, text in (("xss", XSS_TEXT), ("long", LONG_TEXT), ("silent", None)):
        assert (
            signed_post(server.port, make_message(message_id=message_id, ts="2025-04-01T00:00:00Z", text=text)).status
            == 200
        )
    return server


@pytest.fixture
def console_server(tmp_path, server_env):
    server = start_server(tmp_path, server_env)
    yield server
    server.stop()


def api(port: int, path: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = request(port, "GET", path, headers=headers)
    assert answer.status == 200, answer.body
    return answer.json()


def shown_ids(page, list_id: str = "message-list") -> list[str]:
    return page.eval_on_selector_all(f"#{list_id} > li", "items => items.map(item => item.dataset.messageId)")


def test_the_page_loads_with_no_error_and_no_request_to_another_host(browser, console_server, tmp_path):
    origin = f"http://127.0.0.1:{console_server.port}"
    with watched_page(browser, origin, viewport={"width": 1280, "height": 900}) as (page, watched):
        response = page.goto(f"{origin}/console")
        assert response.status == 200
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        page.wait_for_selector("#message-list > li")
        for tab, drawn in (
            ("live", "#live-status:not(:empty)"),
            ("stats", "#timeline-chart rect.point"),
            ("forwarding", "#forwarding-status:not(:empty)"),
            ("messages", "#message-list > li"),
        ):
            page.click(f"#tab-{tab}")
            page.wait_for_selector(drawn)
    assert watched.console_errors == [] and watched.page_errors == []
    assert watched.foreign_requests == []
    assert any(url.endswith("/console/static/console.js?v=" + url.rsplit("=", 1)[-1]) for url in watched.requests)


def test_filters_paging_and_total_match_messages(browser, console_server, tmp_path):
    port = console_server.port
    with watched_page(browser, f"http://127.0.0.1:{port}") as (page, watched):
        page.goto(f"http://127.0.0.1:{port}/console")
        page.wait_for_selector("#message-list > li")
        everything = api(port, "/messages")
        assert shown_ids(page) == [item["message_id"] for item in everything["data"]]
        assert page.text_content("#messages-status") == f"{everything['total']} messages · page 1"

        page.fill("input[name=from]", "+15550001")
        page.select_option("select[name=limit]", "10")
        page.click("#filters button[type=submit]")
        expect(page.locator("#messages-status")).to_contain_text("11 messages")
        first = api(port, f"/messages?from={quote('+15550001')}&limit=10")
        assert first["total"] == 11 and shown_ids(page) == [item["message_id"] for item in first["data"]]
        page.click("#next-page")
        expect(page.locator("#messages-status")).to_have_text(re.compile("page 2$"))
        second = api(port, f"/messages?from={quote('+15550001')}&limit=10&cursor={first['next_cursor']}")
        assert shown_ids(page) == [item["message_id"] for item in second["data"]] == ["m21"]
        assert page.is_hidden("#next-page")

        page.fill("input[name=from]", "")
        page.fill("input[name=q]", "NUMBER 1")
        page.click("#filters button[type=submit]")
        expect(page.locator("#messages-status")).to_have_text(re.compile("page 1$"))
        found = api(port, "/messages?q=NUMBER%201&limit=10")
        expect(page.locator("#message-list > li")).to_have_count(len(found["data"]))
        assert shown_ids(page) == [item["message_id"] for item in found["data"]]
        assert page.text_content("#messages-status") == f"{found['total']} messages · page 1"

        # Newest first: the same order from its end, ten at a time.
        page.fill("input[name=q]", "")
        page.select_option("select[name=order]", "newest")
        page.click("#filters button[type=submit]")
        total = api(port, "/messages?limit=1")["total"]
        for number in (1, 2):
            expected = api(port, f"/messages?offset={total - 10 * number}&limit=10")["data"][::-1]
            first = page.locator("#message-list > li").first
            expect(first).to_have_attribute("data-message-id", expected[0]["message_id"])
            assert shown_ids(page) == [item["message_id"] for item in expected]
            expect(page.locator("#messages-status")).to_have_text(f"{total} messages · page {number}")
            page.click("#next-page")

        page.select_option("select[name=order]", "oldest")
        page.fill("input[name=since]", "yesterday")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#messages-error:not(:empty)")
        assert "since" in page.text_content("#messages-error")
        page.screenshot(path=str(tmp_path / "console-messages.png"), full_page=True)
    assert watched.page_errors == []


def test_a_delivery_appears_in_the_live_view_within_two_seconds_and_pause_holds_it(browser, console_server, tmp_path):
    port = console_server.port
    with watched_page(browser, f"http://127.0.0.1:{port}") as (page, watched):
        page.goto(f"http://127.0.0.1:{port}/console#live")
        expect(page.locator("#live-status")).to_have_text(re.compile("^Following"))
        # It opens with the latest 20 messages, the newest on top, then follows the feed.
        total = api(port, "/messages?limit=1")["total"]
        latest = [item["message_id"] for item in api(port, f"/messages?offset={total - 20}&limit=20")["data"]][::-1]
        assert shown_ids(page, "live-list") == latest
        page.wait_for_timeout(500)  # the first long-poll is held by the server now
        posted = time.monotonic()
        assert signed_post(port, make_message(message_id="live-1", text="arrived just now")).status == 200
        page.wait_for_selector('#live-list > li[data-message-id="live-1"]', timeout=2000)
        assert time.monotonic() - posted < 2.0
        assert shown_ids(page, "live-list") == ["live-1", *latest]

        page.click("#live-toggle")
        assert page.get_attribute("#live-toggle", "aria-pressed") == "true"
        assert signed_post(port, make_message(message_id="live-2", text="while paused")).status == 200
        page.wait_for_timeout(1500)
        assert shown_ids(page, "live-list") == ["live-1", *latest]
        page.click("#live-toggle")
        page.wait_for_selector('#live-list > li[data-message-id="live-2"]', timeout=3000)
        assert shown_ids(page, "live-list") == ["live-2", "live-1", *latest]
        page.screenshot(path=str(tmp_path / "console-live.png"), full_page=True)
    assert watched.page_errors == [] and watched.console_errors == []


def test_message_texts_are_shown_as_text_never_as_html(browser, console_server):
    port = console_server.port
    with watched_page(browser, f"http://127.0.0.1:{port}") as (page, watched):
        page.goto(f"http://127.0.0.1:{port}/console")
        page.wait_for_selector('#message-list > li[data-message-id="xss"]')
        assert page.inner_text('li[data-message-id="xss"] .text') == XSS_TEXT
        assert page.query_selector("#message-list img") is None
        # A long text is folded: its first 280 characters, the rest behind a click.
        long_item = 'li[data-message-id="long"]'
        assert page.inner_text(f"{long_item} summary") == LONG_TEXT[:280] + "…"
        assert not page.is_visible(f"{long_item} details p")
        page.click(f"{long_item} summary")
        assert page.inner_text(f"{long_item} details p") == LONG_TEXT
        assert page.inner_text('li[data-message-id="silent"] .text') == "(no text)"
        page.wait_for_timeout(300)
    assert watched.dialogs == [] and watched.page_errors == []


def test_stats_and_the_chart_have_one_point_per_bucket_of_the_data(browser, console_server, tmp_path):
    port = console_server.port
    with watched_page(browser, f"http://127.0.0.1:{port}") as (page, watched):
        page.goto(f"http://127.0.0.1:{port}/console#stats")
        page.wait_for_selector("#timeline-chart rect.point")
        since = (datetime.now(UTC) - timedelta(hours=48)).strftime("%Y-%m-%dT%H:%M:%SZ")
        timeline = api(port, f"/stats/timeline?bucket=hour&since={since}")
        drawn = page.eval_on_selector_all(
            "#timeline-chart rect.point", "rects => rects.map(r => [r.dataset.start, Number(r.dataset.count)])"
        )
        assert drawn == [[point["start"], point["count"]] for point in timeline["points"]]
        assert len(drawn) == len(HOURS_AGO) + 1  # the seeded hours, and this one
        stats = api(port, "/stats")
        bars = page.eval_on_selector_all(
            "#senders-chart g.sender", "groups => groups.map(g => [g.dataset.from, Number(g.dataset.count)])"
        )
        assert bars == [[sender["from"], sender["count"]] for sender in stats["messages_per_sender"]]
        numbers = page.inner_text("#stats-numbers")
        assert f"{stats['total_messages']}" in numbers and stats["last_message_ts"] in numbers

        page.select_option("#timeline-bucket", "day")
        expect(page.locator("#timeline-status")).to_contain_text(" days shown")
        since = (datetime.now(UTC) - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
        days = api(port, f"/stats/timeline?bucket=day&since={since}")
        assert page.locator("#timeline-chart rect.point").count() == len(days["points"])
        page.screenshot(path=str(tmp_path / "console-stats.png"), full_page=True)
    assert watched.page_errors == [] and watched.console_errors == []


def test_the_forwarding_view_shows_each_destinations_dead_letters(browser, console_server, server_env, tmp_path):
    url = server_env["DATABASE_URL"]
    run_sql(
        url,
        "INSERT INTO forward_destinations (name, position, created_at) VALUES ('billing', 3, '2025-01-01T00:00:00Z')",
    )
    run_sql(
        url,
        "INSERT INTO forward_deliveries "
        "(destination, position, state, attempts, queued_at, next_attempt_at, last_status, last_error, last_attempt_at) "
        "VALUES ('billing', 1, 'dead', 15, 0, 100, 400, NULL, 100), "
        "('billing', 2, 'dead', 15, 0, 200, NULL, 'timed out', 200), "
        "('billing', 3, 'pending', 2, 0, 4102444800, 503, NULL, 300)",
    )
    ids = {position: message_id for position, message_id in run_sql(url, "SELECT id, message_id FROM messages")}
    port = console_server.port
    with watched_page(browser, f"http://127.0.0.1:{port}") as (page, watched):
        page.goto(f"http://127.0.0.1:{port}/console#forwarding")
        page.wait_for_selector('#destinations tr[data-destination="billing"]')
        cells = page.eval_on_selector_all(
            'tr[data-destination="billing"] > *', "cells => cells.map(c => c.textContent)"
        )
        [destination] = api(port, "/stats/forwarding")["destinations"]
        assert destination["dead_letters"] == 2 and destination["pending"] == 1 and destination["lag_seconds"] > 0
        assert cells[0] == "billing" and cells[2:] == ["1", "2"]
        # Its dead letters, the last to die first, and what waits, with when it is tried next.
        rows = page.eval_on_selector_all(
            '#owed section[data-destination="billing"] tbody tr',
            "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))",
        )
        assert rows == [
            [ids.get(2, "(removed)"), "15", "timed out", "1970-01-01T00:03:20.000000Z"],
            [ids.get(1, "(removed)"), "15", "HTTP 400", "1970-01-01T00:01:40.000000Z"],
            [ids.get(3, "(removed)"), "2", "HTTP 503", "2100-01-01T00:00:00.000000Z"],
        ]
        assert page.locator('#owed section[data-kind="dead"] h2').text_content() == "Dead letters of billing"
        page.screenshot(path=str(tmp_path / "console-forwarding.png"), full_page=True)
    assert watched.page_errors == []


def test_the_token_prompt_keeps_the_token_for_the_tab_and_shows_the_401(browser, tmp_path, server_env):
    server = start_server(tmp_path, server_env, API_TOKENS=TOKEN)
    try:
        origin = f"http://127.0.0.1:{server.port}"
        with watched_page(browser, origin) as (page, watched):
            page.goto(f"{origin}/console")
            page.wait_for_selector("#token-prompt:not([hidden])")
            assert shown_ids(page) == []
            page.fill("#token-input", "wrong-token-0123456789")
            page.keyboard.press("Enter")
            page.wait_for_selector("#token-error:not(:empty)")
            assert page.text_content("#token-error") == "The token was refused: not authenticated"
            page.fill("#token-input", TOKEN)
            page.click("#token-form button")
            page.wait_for_selector("#message-list > li")
            assert page.is_hidden("#token-prompt")
            assert page.evaluate("sessionStorage.getItem('webhook-console-token')") == TOKEN
            page.reload()
            page.wait_for_selector("#message-list > li")
            assert page.is_hidden("#token-prompt")
            page.click("#tab-live")
            expect(page.locator("#live-status")).to_have_text(re.compile("^Following"))
            page.wait_for_timeout(300)
            assert signed_post(server.port, make_message(message_id="with-token")).status == 200
            page.wait_for_selector('#live-list > li[data-message-id="with-token"]', timeout=3000)
        # Only the 401s that asked for the token.
        assert all("401" in error for error in watched.console_errors), watched.console_errors
    finally:
        server.stop()


def test_keyboard_narrow_screens_and_dark_mode(browser, console_server, tmp_path):
    port = console_server.port
    origin = f"http://127.0.0.1:{port}"
    backgrounds = {}
    for scheme in ("light", "dark"):
        with watched_page(browser, origin, viewport={"width": 400, "height": 800}, color_scheme=scheme) as (page, _):
            page.goto(f"{origin}/console")
            page.wait_for_selector("#message-list > li")
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            # Nothing wider than the screen: no sideways scrolling at 400 px.
            assert page.evaluate("document.documentElement.scrollWidth") <= 400
            page.screenshot(path=str(tmp_path / f"console-400-{scheme}.png"), full_page=True)
            if scheme == "dark":
                continue
            page.focus("#tab-messages")
            page.keyboard.press("ArrowRight")
            assert page.get_attribute("#tab-live", "aria-selected") == "true"
            assert page.evaluate("document.activeElement.id") == "tab-live"
            assert page.is_visible("#view-live") and page.is_hidden("#view-messages")
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("Tab")  # from the tab list into the filters
            page.keyboard.type("+15550002")
            page.keyboard.press("Enter")
            expect(page.locator("#messages-status")).to_have_text(re.compile("^11 "))
    assert backgrounds["light"] != backgrounds["dark"]


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
def test_the_console_works_behind_the_shipped_nginx(browser, console_server, tmp_path):
    proxy = Nginx(workdir=tmp_path, upstream_port=console_server.port).start()
    try:
        origin = f"http://127.0.0.1:{proxy.port}"
        with watched_page(browser, origin) as (page, watched):
            response = page.goto(f"{origin}/console")
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            page.wait_for_selector("#message-list > li")
            page.click("#tab-live")
            expect(page.locator("#live-status")).to_have_text(re.compile("^Following"))
            page.wait_for_timeout(500)
            assert signed_post(console_server.port, make_message(message_id="through-nginx")).status == 200
            page.wait_for_selector('#live-list > li[data-message-id="through-nginx"]', timeout=3000)
        assert watched.console_errors == [] and watched.page_errors == [] and watched.foreign_requests == []
    finally:
        proxy.stop()


def test_the_page_needs_no_token_and_holds_no_data(tmp_path, server_env):
    server = start_server(tmp_path, server_env, API_TOKENS=TOKEN)
    try:
        page = request(server.port, "GET", "/console")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert "m01" not in page.body.decode() and "+15550001" not in page.body.decode()
        assert request(server.port, "GET", "/stats/timeline?bucket=day&since=2025-01-01T00:00:00Z").status == 401
        styles = request(server.port, "GET", "/console/static/console.css")
        assert styles.status == 200 and styles.headers["x-content-type-options"] == "nosniff"
        missing = request(server.port, "GET", "/console/static/nothing.js")
        assert missing.status == 404 and json.loads(missing.body)["detail"]
        assert E2E_SECRET not in page.body.decode()
    finally:
        server.stop()
