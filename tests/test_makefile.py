"""The Makefile's first-hour targets, run for real in a scratch copy of the checkout's Makefile."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(tmp_path: Path, *targets: str, env: dict | None = None) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    return subprocess.run(
        ["make", "--no-print-directory", *targets, f"PYTHON={sys.executable}"],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_env_writes_a_secret_only_its_owner_can_read(tmp_path):
    result = make(tmp_path, "env")
    assert result.returncode == 0, result.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    [line] = env_file.read_text().splitlines()
    assert line.startswith("WEBHOOK_SECRET=") and len(line) == len("WEBHOOK_SECRET=") + 64
    assert make(tmp_path, "env").returncode == 0 and env_file.read_text().splitlines() == [line]  # made once


def test_compose_targets_say_in_one_line_when_no_docker_engine_answers(tmp_path):
    result = make(tmp_path, "up", env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"})
    assert result.returncode != 0
    assert "no Docker engine answers" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_down_keeps_the_data_volume_and_only_the_named_target_deletes_it(tmp_path):
    down = make(tmp_path, "-n", "down")
    delete = make(tmp_path, "-n", "down-and-delete-data")
    assert " down" in down.stdout and " -v" not in down.stdout
    assert " down -v" in delete.stdout


def test_make_backup_copies_the_database_into_backups(tmp_path):
    from webhook_service.storage.migrations import upgrade_to_head

    database = tmp_path / "data" / "messages.db"
    upgrade_to_head(f"sqlite:///{database}")
    venv = ROOT / ".venv"
    if not (venv / ".runtime-installed").exists():
        pytest.skip("the checkout's .venv is not installed")
    for requirements in ("requirements.txt", "requirements-dev.txt", "setup.cfg", "pyproject.toml"):
        shutil.copy2(ROOT / requirements, tmp_path / requirements)  # older than the .venv's stamps
    env = {"DATABASE_URL": str(database), "PYTHONPATH": str(ROOT)}
    # The checkout's own package stays installed from the checkout, never from this copy.
    keep = f"--old-file={venv}/.package-installed"
    result = make(tmp_path, "backup", f"VENV={venv}", keep, env=env)
    assert result.returncode == 0, result.stderr
    [copy] = (tmp_path / "backups").iterdir()
    assert copy.name.startswith("messages-") and copy.suffix == ".db" and copy.stat().st_size > 0
    again = make(tmp_path, "backup", f"VENV={venv}", keep, f"BACKUP={copy}", env=env)
    assert again.returncode != 0 and "exists" in again.stderr
