"""schemathesis against real gunicorn, driven by the service's own /openapi.json: no server
error, every answer in the documented shape and media type, in a bounded run."""

import os
import subprocess
import sys

import pytest

from tests.support.messages import E2E_SECRET as SECRET
from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


@pytest.fixture
def server_env(server_env):
    # Generated /feed requests with wait > 0 are answered at once (no long-poll is held),
    # as the document says they are past the waiter limit: the run stays short.
    return {**server_env, "FEED_MAX_WAITERS": "0"}


def test_generated_requests_meet_the_document(gunicorn_server, tmp_path):
    base = f"http://127.0.0.1:{gunicorn_server.port}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/openapi.json",
            f"--url={base}",
            f"--checks={CHECKS}",
            "--max-examples=60",
            "--phases=examples,coverage,fuzzing",
            "--generation-deterministic",
            "--request-timeout=10",
            "--no-color",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
            "FUZZ_WEBHOOK_SECRET": SECRET,
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    # The signing hook got generated bodies into validation and storage, not just to 401.
    lines = gunicorn_server.log_lines()
    assert any('"status": 200' in line and '"path": "/webhook"' in line for line in lines)
    assert any('"status": 422' in line and '"path": "/webhook"' in line for line in lines)
