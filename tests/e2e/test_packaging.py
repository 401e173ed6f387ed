"""The package as a user installs it: `pip install .` into a new virtual environment gives a
`webhook-service` that migrates and a server that stores a delivery, from any folder."""

import configparser
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.database import stored_ids
from tests.support.messages import E2E_SECRET, make_message
from tests.support.servers import ROOT, Gunicorn, request, signed_post

pytestmark = pytest.mark.e2e


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
    # A deployment folder with the two server files and nothing of the checkout.
    site = tmp_path / "site"
    site.mkdir()
    for name in ("gunicorn.conf.py", "wsgi.py"):
        shutil.copy(ROOT / name, site / name)
    url = f"sqlite:///{tmp_path / 'data' / 'messages.db'}"
    env = {"DATABASE_URL": url, "WEBHOOK_SECRET": E2E_SECRET, "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
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
    server = Gunicorn(workdir=tmp_path, env=env, workers=2, python=str(venv / "bin" / "python"), cwd=site)
    server.start()
    try:
        assert signed_post(server.port, make_message(message_id="from-the-wheel")).status == 200
        # The console's template and files are in the wheel too.
        page = request(server.port, "GET", "/console")
        assert page.status == 200 and b"console.js" in page.body
        for asset in ("console.js", "console.css", "favicon.svg"):
            assert request(server.port, "GET", f"/console/static/{asset}").status == 200, asset
    finally:
        server.stop()
    assert stored_ids(url) == ["from-the-wheel"]
