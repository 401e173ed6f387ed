"""Faults under real gunicorn: a full disk loses no acknowledged message and shows no trace."""

import json
import os
import subprocess

import pytest

from tests.conftest import make_message
from tests.e2e.conftest import SECRET
from tests.e2e.server import Gunicorn, request, signed_post

pytestmark = pytest.mark.e2e

MAX_POSTS = 400


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs for the database; skipped where mounting is not permitted."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        if os.environ.get("REQUIRE_MOUNT"):
            pytest.fail(f"REQUIRE_MOUNT is set but a tmpfs cannot be mounted: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_answers_503_and_keeps_every_acknowledged_message(tmp_path, small_disk):
    env = {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": f"sqlite:///{small_disk / 'messages.db'}"}
    server = Gunicorn(workdir=tmp_path, env=env).start()
    acknowledged, refused = [], []
    try:
        for number in range(MAX_POSTS):
            message_id = f"fill-{number}"
            response = signed_post(server.port, make_message(message_id=message_id, text="é" * 4000), SECRET)
            assert response.status in (200, 503), response.body
            assert "detail" in response.json() or response.status == 200
            (acknowledged if response.status == 200 else refused).append(message_id)
            if len(refused) >= 5:
                break
        assert refused, "the disk never filled up"
        assert acknowledged, "nothing was stored before the disk filled up"

        # Room again: ingestion recovers without a restart, and a refused message can be resent.
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        assert signed_post(server.port, make_message(message_id=refused[0]), SECRET).status == 200
        acknowledged.append(refused[0])
    finally:
        server.stop()
    # The database errors were handled: no unhandled exception was logged, no 500 answered.
    logged = [json.loads(line) for line in server.log_lines()]
    assert not [entry for entry in logged if "exception" in entry]
    assert not [entry for entry in logged if entry.get("status") == 500]
    assert {entry["result"] for entry in logged if entry.get("status") == 503} == {"db_error"}

    again = Gunicorn(workdir=tmp_path, env=env).start()
    try:
        listed = []
        while len(listed) < len(acknowledged) + 10:
            page = request(again.port, "GET", f"/messages?limit=100&offset={len(listed)}").json()
            if not page["data"]:
                break
            listed += [message["message_id"] for message in page["data"]]
    finally:
        again.stop()
    assert sorted(listed) == sorted(acknowledged)
