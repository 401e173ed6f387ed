"""GET /openapi.json (the API document) and GET /docs (Swagger UI, served from the
flask-swagger-ui package's own files: no CDN)."""

from __future__ import annotations

import json

from flask import Blueprint, current_app
from flask_swagger_ui import get_swaggerui_blueprint

from webhook_service.api.openapi import build_openapi_document
from webhook_service.version import __version__

bp = Blueprint("openapi", __name__)
OPENAPI_DOCUMENT_KEY = "webhook_service.openapi_document"

docs_bp = get_swaggerui_blueprint(
    "/docs",
    "/openapi.json",
    config={
        "app_name": "Webhook service API",
        # Set here, so that the page never echoes the request's Host header into its script.
        "oauth2RedirectUrl": "/docs/oauth2-redirect.html",
        # The page of this document only: no box to load other documents from.
        "layout": "BaseLayout",
    },
    blueprint_name="docs",
)


@bp.get("/docs")
def docs_page():
    """The Swagger UI page at /docs itself, as at /docs/ (its assets are linked by absolute
    paths): no redirect, whose body would be an HTML page."""
    return current_app.view_functions["docs.show"]()


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3 document, built once per process."""
    document = current_app.extensions.get(OPENAPI_DOCUMENT_KEY)
    if document is None:
        document = json.dumps(build_openapi_document(__version__), separators=(",", ":")) + "\n"
        current_app.extensions[OPENAPI_DOCUMENT_KEY] = document
    return current_app.response_class(document, mimetype="application/json")
