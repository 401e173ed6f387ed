"""GET /console and its files (no token, strict headers), and GET /stats/forwarding, the
numbers its forwarding view shows. The page in a real browser: tests/e2e/test_console.py."""

import re
import time

from tests.support.messages import make_message
from webhook_service.config import Settings
from webhook_service.storage.engine import Database
from webhook_service.storage.forwarding import Outcome, claim_new, record_outcomes, register_destination
from webhook_service.timestamps import iso_from_epoch

TOKEN = "console-token-0123456789"


def test_the_page_and_its_files_need_no_token_and_carry_strict_headers(make_app, settings):
    guarded = make_app(
        Settings(webhook_secrets=("s",), database_url=settings.database_url, api_tokens=(TOKEN,))
    ).test_client()
    for path, mimetype in (
        ("/console", "text/html"),
        ("/console/static/console.js", "text/javascript"),
        ("/console/static/console.css", "text/css"),
    ):
        answer = guarded.get(path)
        assert answer.status_code == 200 and answer.mimetype == mimetype, path
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        answer.close()
    assert guarded.get("/stats/forwarding").status_code == 401
    assert guarded.get("/console/static/missing.js").get_json() == {"detail": "Not Found"}


def test_the_page_holds_no_script_or_style_of_its_own(client):
    html = client.get("/console").get_data(as_text=True)
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert re.search(r"<[^>]*\son[a-z]+=", html) is None  # no onclick= and the like


def test_forwarding_summaries_count_pending_and_dead_letters(client, settings, signed_post):
    assert client.get("/stats/forwarding").get_json() == {"destinations": []}
    for number in range(3):
        assert signed_post(make_message(message_id=f"f{number}")).status_code == 200
    database = Database(settings.database_url)
    now = time.time()
    try:
        with database.write_transaction() as conn:
            register_destination(conn, "billing", "beginning")
            register_destination(conn, "audit", "latest")
            claimed = claim_new(conn, "billing", "me", now + 60, now, 10).claimed
            first, second, third = (claim.position for claim in claimed)
            record_outcomes(
                conn,
                "billing",
                [
                    Outcome(first, delivered=True),
                    Outcome(second, delivered=False, attempts=15, dead=True, status=400),
                    Outcome(third, delivered=False, attempts=1, next_attempt_at=now + 30, status=503),
                ],
            )
    finally:
        database.dispose()
    audit, billing = client.get("/stats/forwarding").get_json()["destinations"]
    # Started at the feed's end: after every message stored (billing's position is the last one's).
    assert int(audit.pop("position")) >= int(billing["position"])
    assert audit == {
        "name": "audit",
        "lag_seconds": 0.0,
        "pending": 0,
        "dead_letters": 0,
        "latest_dead_letters": [],
        "waiting": [],
    }
    assert billing["name"] == "billing" and (billing["pending"], billing["dead_letters"]) == (1, 1)
    [dead] = billing["latest_dead_letters"]
    assert (dead["message_id"], dead["attempts"], dead["last_status"], dead["next_attempt_at"]) == ("f1", 15, 400, None)
    [waiting] = billing["waiting"]
    assert (waiting["message_id"], waiting["attempts"], waiting["last_status"]) == ("f2", 1, 503)
    assert waiting["next_attempt_at"] == iso_from_epoch(now + 30)
    # The oldest message it has not had (the retry) was stored moments ago.
    assert 0 < billing["lag_seconds"] < 60
