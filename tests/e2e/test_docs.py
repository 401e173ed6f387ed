"""/docs in a real browser (headless Chromium) against real gunicorn: every operation of
/openapi.json is rendered, with every host but the service unreachable (no CDN)."""

import re
import subprocess

import pytest

from tests.support.browser import chromium_path
from tests.support.servers import request

pytestmark = pytest.mark.e2e


@pytest.mark.sqlite_only
def test_swagger_ui_renders_every_operation_of_the_document(gunicorn_server, tmp_path):
    browser = chromium_path()
    document = request(gunicorn_server.port, "GET", "/openapi.json").json()
    expected = sorted((method.upper(), path) for path, operations in document["paths"].items() for method in operations)
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # as root in CI; the page is the service's own
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}",
            # Any host but the service fails to resolve: a page that needs a CDN renders nothing.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"http://127.0.0.1:{gunicorn_server.port}/docs/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    methods = re.findall(r'class="opblock-summary-method">([A-Z]+)<', dom)
    paths = re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom)
    assert sorted(zip(methods, paths, strict=True)) == expected
    assert "Webhook service" in dom
