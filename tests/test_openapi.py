"""GET /openapi.json describes every endpoint as it behaves; GET /docs shows it from local files."""

import re

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from tests.support.messages import make_message
from webhook_service import __version__
from webhook_service.config import Settings


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def conforms(document: dict, path: str, method: str, response) -> None:
    """Assert that `response` has a documented status, media type and body shape."""
    operation = document["paths"][path][method]
    documented = operation["responses"][str(response.status_code)]
    media_type = response.mimetype
    assert media_type in documented["content"], (path, response.status_code, media_type)
    schema = documented["content"][media_type]["schema"]
    if media_type == "application/json":
        resolved = {"$ref": schema["$ref"]} if "$ref" in schema else schema
        validator = OAS30Validator({**resolved, "components": document["components"]})
        errors = [error.message for error in validator.iter_errors(response.get_json())]
        assert errors == [], (path, response.status_code, errors)
    for header in documented.get("headers", {}):
        assert header in response.headers, (path, response.status_code, header)


def test_the_document_is_valid_openapi_3_naming_this_release(document):
    validate(document)
    assert document["openapi"].startswith("3.") and document["info"]["version"] == __version__


# Swagger UI itself and the console's static files: pages' assets, not API.
UNDOCUMENTED_FILES = ("/docs", "/console/static/")


def test_every_route_of_the_app_is_documented(app, document):
    routes = {
        re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if not rule.rule.startswith(UNDOCUMENTED_FILES)
    }
    assert routes == set(document["paths"])
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED_FILES):
            continue
        documented = set(document["paths"][rule.rule])
        assert documented == {method.lower() for method in rule.methods - {"HEAD", "OPTIONS"}}, rule.rule


def test_the_request_schemas_state_the_validation_rules(document):
    body = document["components"]["schemas"]["WebhookMessage"]
    assert set(body["required"]) == {"message_id", "from", "to", "ts"}
    assert body["properties"]["message_id"]["maxLength"] == 256
    assert body["properties"]["text"]["maxLength"] == 4096 and body["properties"]["text"]["nullable"] is True
    assert body["properties"]["from"]["pattern"] == r"^\+[0-9]{1,15}$"
    parameters = {p["name"]: p for p in document["paths"]["/messages"]["get"]["parameters"]}
    assert set(parameters) == {"limit", "offset", "from", "since", "q", "cursor"}
    assert (parameters["limit"]["schema"]["minimum"], parameters["limit"]["schema"]["maximum"]) == (1, 100)
    assert parameters["limit"]["schema"]["default"] == 50
    assert document["paths"]["/webhook"]["post"]["security"] == [{"standardWebhooks": []}, {"legacySignature": []}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["legacySignature"]["name"] == "X-Signature" and schemes["bearerToken"]["scheme"] == "bearer"


def test_answers_match_the_document_for_success_and_every_error(client, signed_post, document, make_app, settings):
    assert signed_post(make_message(text=None)).status_code == 200
    assert signed_post(make_message(message_id="m2", text="hi")).status_code == 200
    conforms(document, "/webhook", "post", signed_post(make_message()))
    conforms(document, "/webhook", "post", signed_post(make_message(ts="2024-02-30T00:00:00Z")))
    conforms(document, "/webhook", "post", signed_post(body=b"\xff{"))
    conforms(document, "/webhook", "post", signed_post(body=b"{", secret="wrong"))
    conforms(document, "/webhook", "post", signed_post(body=b"x" * 70_000))
    conforms(document, "/messages", "get", client.get("/messages?limit=1"))
    conforms(document, "/messages", "get", client.get("/messages?limit=0&cursor=x"))
    conforms(document, "/stats", "get", client.get("/stats"))
    conforms(document, "/health/live", "get", client.get("/health/live"))
    conforms(document, "/health/ready", "get", client.get("/health/ready"))
    conforms(document, "/metrics", "get", client.get("/metrics"))
    unready = make_app(Settings(webhook_secrets=(), database_url=settings.database_url)).test_client()
    conforms(document, "/health/ready", "get", unready.get("/health/ready"))
    conforms(document, "/webhook", "post", unready.post("/webhook", data=b"{}"))
    guarded = make_app(
        Settings(webhook_secrets=("s",), database_url=settings.database_url, api_tokens=("t" * 20,))
    ).test_client()
    conforms(document, "/messages", "get", guarded.get("/messages"))
    conforms(document, "/stats", "get", guarded.get("/stats"))


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_docs_page_loads_swagger_ui_from_the_service_itself(client, path):
    # At /docs itself, not a redirect to /docs/ (whose body would be an HTML page).
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/docs/") for source in sources), sources
    for source in sources:
        asset = client.get(source)
        asset.close()
        assert asset.status_code == 200, source
    assert "evil.example" not in client.get(path, headers={"Host": "evil.example"}).get_data(as_text=True)


def test_the_document_and_docs_need_no_token(make_app, settings):
    guarded = make_app(
        Settings(webhook_secrets=("s",), database_url=settings.database_url, api_tokens=("t" * 20,))
    ).test_client()
    assert guarded.get("/openapi.json").status_code == 200
    assert guarded.get("/docs/").status_code == 200


def test_message_documents_are_what_the_documented_schemas_dump():
    import random

    from webhook_service.api import outputs
    from webhook_service.storage.feed import FeedPage
    from webhook_service.storage.messages import MessagePage, StoredMessage, message_document

    rng = random.Random(3)
    pieces = ["a", "É", "\x00", '"', "😀", " ", "\\", "<b>"]
    items = [
        StoredMessage(
            message_id="".join(rng.choices(pieces, k=rng.randint(1, 6))),
            sender=f"+1{rng.randint(0, 999)}",
            recipient="+2",
            ts="2025-01-01T00:00:00.5Z",
            text=None if rng.random() < 0.2 else "".join(rng.choices(pieces, k=rng.randint(0, 9))),
            created_at="2025-01-01T00:00:01.000001Z",
        )
        for _ in range(60)
    ]
    page = MessagePage(items=items, total=7, next_position=None)
    expected = outputs.MessagePageSchema().dump(
        {"items": items, "total": 7, "limit": 60, "offset": 3, "next_cursor": "abc"}
    )
    assert outputs.page_document(page, 60, 3, "abc") == expected
    assert outputs.page_document(MessagePage(items=[], total=0, next_position=None), 5, 0, None) == (
        outputs.MessagePageSchema().dump({"items": [], "total": 0, "limit": 5, "offset": 0, "next_cursor": None})
    )
    feed = FeedPage(items=items, next_position=12)
    assert outputs.feed_document(feed) == outputs.FeedPageSchema().dump(
        {"items": items, "next": outputs.encode_position(12)}
    )
    assert [message_document(item) for item in items] == outputs.MessageSchema(many=True).dump(items)
