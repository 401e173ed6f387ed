"""Bearer tokens: API_TOKENS for /messages and /stats, METRICS_TOKEN for /metrics."""

import pytest

from tests.support.logs import request_lines
from tests.support.messages import SECRET, make_message
from webhook_service.api.access import token_matches
from webhook_service.config import Settings

READER = "reader-token-0123456789"
ROTATED = "reader-token-abcdefghij"
SCRAPER = "scraper-token-0123456789"


@pytest.fixture
def guarded(make_app, database_url):
    settings = Settings(
        webhook_secrets=(SECRET,), database_url=database_url, api_tokens=(READER, ROTATED), metrics_token=SCRAPER
    )
    return make_app(settings).test_client()


@pytest.mark.parametrize("path", ["/messages", "/messages?limit=1", "/stats"])
@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Bearer wrong-token-000000000", f"Basic {READER}", READER]
)
def test_reads_without_a_valid_token_are_401_with_a_bearer_challenge(guarded, path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"detail": "not authenticated"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("token", [READER, ROTATED])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_any_configured_token_reads(guarded, token, scheme):
    headers = {"Authorization": f"{scheme} {token}"}
    assert guarded.get("/messages", headers=headers).status_code == 200
    assert guarded.get("/stats", headers=headers).status_code == 200


def test_metrics_need_their_own_token(guarded):
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {READER}"}).status_code == 401
    response = guarded.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER}"})
    assert response.status_code == 200 and b"http_requests_total" in response.data


def test_probes_and_ingestion_need_no_token(guarded, signed_post):
    assert guarded.get("/health/live").status_code == 200
    assert guarded.get("/health/ready").status_code == 200
    assert signed_post(make_message()).status_code == 200


def test_without_tokens_reads_and_metrics_stay_open(client):
    assert client.get("/messages").status_code == 200
    assert client.get("/stats").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_refusals_are_logged_with_a_reason_and_never_the_token(guarded, log_lines):
    guarded.get("/messages")
    guarded.get("/stats", headers={"Authorization": "Bearer not-the-right-token-000"})
    guarded.get("/stats", headers={"Authorization": f"Bearer {READER}"})
    missing, wrong, allowed = request_lines(log_lines())
    assert (missing["status"], missing["reason"], missing["level"]) == (401, "missing_token", "WARNING")
    assert (wrong["status"], wrong["reason"]) == (401, "bad_token")
    assert allowed["status"] == 200 and "reason" not in allowed
    assert READER not in log_lines.raw() and "not-the-right-token" not in log_lines.raw()


def test_refused_reads_are_counted_under_their_route(guarded):
    guarded.get("/stats")
    response = guarded.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER}"})
    assert 'http_requests_total{method="GET",path="/stats",status="401"} 1.0' in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "header, expected",
    [
        (f"Bearer {READER}", True),
        (f"bearer   {READER}  ", True),
        (f"Bearer {READER}x", False),
        (f"Bearer {READER[:-1]}", False),
        ("Bearer ", False),
        (None, False),
        ("Bearer \udcff", False),
    ],
)
def test_token_matching(header, expected):
    assert token_matches(header, [READER]) is expected
