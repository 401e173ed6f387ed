"""The package as a user installs it: `pip install .` into a new virtual environment gives a
`webhook-service` that migrates and a server that stores a delivery, from any folder."""

import configparser
import json
import os
import re
import stat
import subprocess
import sys

import pytest

from tests.support.database import stored_ids
from tests.support.messages import E2E_SECRET, make_message
from tests.support.servers import ROOT, Gunicorn, request, signed_post

pytestmark = pytest.mark.e2e

TOKEN = "token-from-the-env-file-0123456789"


def requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_setup_cfg_requires_every_direct_requirement():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = requirement_names(config["options"]["install_requires"].splitlines())
    pinned_text = (ROOT / "requirements.txt").read_text()
    # requirements.txt lists the direct requirements first, then their pinned dependencies.
    direct = requirement_names(pinned_text.split("# transitive")[0].splitlines())
    assert declared == direct


def test_an_installed_wheel_migrates_and_serves(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    [wheel] = wheels.glob("webhook_service-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The versions requirements.txt pins (as constraints: what install_requires pulls in
    # comes from the wheel's metadata alone; constraints take no extras).
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(re.sub(r"\[[a-z]+\]", "", (ROOT / "requirements.txt").read_text()))
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel), "-c", str(constraints)],
        check=True,
        timeout=600,
    )
    # A deployment folder with nothing of the checkout: `serve` brings the server's configuration.
    site = tmp_path / "site"
    site.mkdir()
    # The environment wins; .env fills what it lacks (here: the tokens that guard reads).
    (site / ".env").write_text(f"WEBHOOK_SECRET=not-the-secret-the-environment-sets\nAPI_TOKENS={TOKEN}\n")
    url = f"sqlite:///{tmp_path / 'data' / 'messages.db'}"
    env = {
        "DATABASE_URL": url,
        "WEBHOOK_SECRET": E2E_SECRET,
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "SIGNATURE_SCHEME": "standard",  # misspelled: ignored, with a warning
    }
    migrated = subprocess.run(
        [str(venv / "bin" / "webhook-service"), "migrate"],
        check=False,
        cwd=site,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.decode().startswith("database at schema revision ")
    warning = "SIGNATURE_SCHEME is not a setting and is ignored: did you mean SIGNATURE_SCHEMES?"
    assert warning in migrated.stderr.decode()
    # The .env of the folder it starts in: the server's own default, not the tests' file.
    env["WEBHOOK_SERVICE_ENV_FILE"] = ""
    server = Gunicorn(workdir=tmp_path, env=env, workers=2, python=str(venv / "bin" / "python"), cwd=site, serve=True)
    server.start()
    try:
        assert signed_post(server.port, make_message(message_id="from-the-wheel")).status == 200
        assert request(server.port, "GET", "/messages").status == 401
        authorized = {"Authorization": f"Bearer {TOKEN}"}
        assert request(server.port, "GET", "/messages", headers=authorized).json()["total"] == 1
        # The console's template and files are in the wheel too.
        page = request(server.port, "GET", "/console")
        assert page.status == 200 and b"console.js" in page.body
        for asset in ("console.js", "console.css", "favicon.svg"):
            assert request(server.port, "GET", f"/console/static/{asset}").status == 200, asset
    finally:
        server.stop()
    assert stored_ids(url) == ["from-the-wheel"]
    output = server.output()
    log = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [read] = [line for line in log if line.get("env_file_set")]
    assert read["event"] == f"read {site / '.env'} for the settings the environment lacks"
    assert read["env_file_set"] == ["API_TOKENS"]
    assert any(line["level"] == "WARNING" and line["event"] == warning for line in log)
    assert TOKEN not in output and "not-the-secret" not in output
    # What the server created is its user's only.
    database = tmp_path / "data" / "messages.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700


def test_serve_says_in_one_line_that_web_concurrency_is_not_a_number(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "webhook_service", "serve"],
        cwd=tmp_path,
        env={**os.environ, "WEB_CONCURRENCY": "two", "DATABASE_URL": str(tmp_path / "messages.db")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "Error: invalid configuration: WEB_CONCURRENCY: expected a whole number, got 'two'\n"
    assert not (tmp_path / "messages.db").exists()
