"""GET /console: a read-only page for people, with its script and styles (no CDN, no build).

The page holds no data: its script reads the same endpoints as any client (/messages,
/feed, /stats, /stats/timeline, /stats/forwarding), with the token the user gives it when
reads need one. It renders every value as text, and its Content-Security-Policy allows
scripts, styles and requests from the service itself only.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from webhook_service.version import __version__

bp = Blueprint(
    "console",
    __name__,
    template_folder="console/templates",
    static_folder="console/static",
    static_url_path="/console/static",
)

# Scripts, styles, images and requests from the service itself only: no inline script or
# style, no eval, no plugins, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/console")
def console_page():
    """The console's one page; everything it shows is fetched by its script."""
    return render_template("console.html", version=__version__)


@bp.after_request
def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
