"""The operator's command line against a real database file."""

import base64
import csv
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.messages import SECRET, make_message
from webhook_service.cli import main
from webhook_service.signatures import Outcome, Verifier, sign_legacy
from webhook_service.storage.migrations import head_revision


@pytest.fixture
def run(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("WEBHOOK_SECRET", f"old-secret,{SECRET}")

    def invoke(*arguments, input=None):
        return CliRunner().invoke(main, list(arguments), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def seeded(signed_post):
    rows = [
        make_message(message_id="a", ts="2024-01-01T00:00:00Z", text="line one\nline two, with a comma"),
        make_message(message_id="b", ts="2024-06-01T00:00:00Z", text='say "hi"', **{"from": "+222"}),
        make_message(message_id="c", ts="2025-01-01T00:00:00Z", text=None),
    ]
    for row in rows:
        assert signed_post(row).status_code == 200
    return rows


def test_every_command_has_help(run):
    assert len(main.commands) >= 11
    for command in main.commands:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command
        assert main.commands[command].help, f"{command} says nothing of itself in --help"


def test_migrate_names_the_revision(run):
    result = run("migrate")
    assert result.exit_code == 0 and result.output.startswith("database at schema revision ")


def test_a_bad_setting_is_one_line_and_exit_1(run, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://db/x")
    result = run("stats")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: invalid configuration: DATABASE_URL: unsupported database 'mysql'; supported: sqlite, postgresql"
    ]


def test_sign_legacy_uses_the_newest_secret(run):
    body = b'{"message_id": "m1"}'
    result = run("sign", "--scheme", "legacy", input=body)
    assert result.output == f"X-Signature: {sign_legacy(SECRET, body)}\n"


def test_sign_standard_headers_verify(run):
    body = json.dumps(make_message()).encode()
    result = run("sign", "--id", "msg_1", "--timestamp", str(int(time.time())), input=body)
    headers = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert headers["webhook-id"] == "msg_1"
    assert Verifier([SECRET]).verify(headers, body, time.time()).outcome is Outcome.VERIFIED


def test_sign_with_a_whsk_key_gives_v1a(run, tmp_path):
    private = Ed25519PrivateKey.generate()
    key = "whsk_" + base64.b64encode(private.private_bytes_raw()).decode()
    public = "whpk_" + base64.b64encode(private.public_key().public_bytes_raw()).decode()
    (tmp_path / "body.json").write_bytes(b"{}")
    result = run("sign", str(tmp_path / "body.json"), "--key", key)
    headers = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert headers["webhook-signature"].startswith("v1a,")
    assert Verifier(public_keys=[public]).verify(headers, b"{}", time.time()).verified
    assert run("sign", "--scheme", "legacy", "--key", key, input=b"{}").exit_code == 1


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["sign", "/no/such/file"], "cannot read /no/such/file"),
        (["sign", "--key", "whsec_!!"], "--key"),
        (["purge", "--before", "yesterday"], "Invalid value for '--before'"),
        (["export", "--since", "2024-13-01T00:00:00Z"], "Invalid value for '--since'"),
        (["send", "http://127.0.0.1:9/webhook"], "cannot reach"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(run, arguments, message):
    result = CliRunner().invoke(main, arguments, input=b"{}")
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_stats_prints_the_stats_document(run, seeded, client):
    result = run("stats")
    assert json.loads(result.output) == client.get("/stats").get_json()


def test_export_jsonl_in_message_order_with_filters(run, seeded):
    lines = [json.loads(line) for line in run("export").output.splitlines()]
    assert [line["message_id"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["text"] == "line one\nline two, with a comma"
    assert set(lines[0]) == {"message_id", "from", "to", "ts", "text", "created_at"}
    assert [json.loads(line)["message_id"] for line in run("export", "--from", "+222").output.splitlines()] == ["b"]
    since = run("export", "--since", "2024-06-01T00:00:00Z", "--q", "HI").output.splitlines()
    assert [json.loads(line)["message_id"] for line in since] == ["b"]


def test_export_csv_quotes_newlines_commas_and_quotes(run, seeded, tmp_path):
    target = tmp_path / "out.csv"
    result = run("export", "--format", "csv", "--output", str(target))
    assert result.output == f"exported 3 messages to {target}\n"
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert [row["message_id"] for row in rows] == ["a", "b", "c"]
    assert rows[0]["text"] == "line one\nline two, with a comma" and rows[1]["text"] == 'say "hi"'


def test_export_refuses_to_replace_a_file_unless_forced(run, seeded, tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("keep me\n")
    refused = CliRunner().invoke(main, ["export", "--output", str(target)])
    assert refused.exit_code == 1
    assert refused.output == f"Error: {target} exists; choose a new file or add --force to replace it\n"
    assert target.read_text() == "keep me\n"
    assert run("export", "--output", str(target), "--force").output == f"exported 3 messages to {target}\n"
    assert [json.loads(line)["message_id"] for line in target.read_text().splitlines()] == ["a", "b", "c"]
    assert [path.name for path in tmp_path.iterdir() if "partial" in path.name] == []


def test_export_into_a_missing_folder_is_one_line(run, seeded, tmp_path):
    result = CliRunner().invoke(main, ["export", "--output", str(tmp_path / "nowhere" / "out.jsonl")])
    assert result.exit_code == 1
    assert result.output == f"Error: no folder {tmp_path / 'nowhere'}: create it first\n"


def test_settings_the_environment_lacks_come_from_the_env_file(monkeypatch, database_url, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"# written by make run\nWEBHOOK_SECRET={SECRET}\nexport DATABASE_URL='{database_url}'\n")
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WEBHOOK_SERVICE_ENV_FILE")  # the default: .env in the current folder
    body = b'{"a": 1}'
    signed = CliRunner().invoke(main, ["sign", "--scheme", "legacy", "-"], input=body)
    assert signed.output == f"X-Signature: {sign_legacy(SECRET, body)}\n"
    assert CliRunner().invoke(main, ["migrate"]).output.startswith("database at schema revision ")
    assert not (tmp_path / "data").exists()  # the file's DATABASE_URL, not the default data/messages.db
    # The environment wins over the file.
    monkeypatch.setenv("WEBHOOK_SECRET", "from-the-environment")
    signed = CliRunner().invoke(main, ["sign", "--scheme", "legacy", "-"], input=body)
    assert signed.output == f"X-Signature: {sign_legacy('from-the-environment', body)}\n"


def test_a_malformed_env_file_is_one_line(monkeypatch, tmp_path):
    env_file = tmp_path / "settings.env"
    env_file.write_text("WEBHOOK_SECRET=x\nnot an assignment\n")
    monkeypatch.setenv("WEBHOOK_SERVICE_ENV_FILE", str(env_file))
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 1
    assert result.output == f"Error: {env_file} line 2: expected NAME=value\n"


def test_purge_dry_run_counts_and_purge_keeps_totals_exact(run, seeded, client):
    assert run("purge", "--before", "2024-12-31T00:00:00Z", "--dry-run").output == (
        "would delete 2 messages with ts before 2024-12-31T00:00:00Z\n"
    )
    assert client.get("/messages").get_json()["total"] == 3
    assert run("purge", "--before", "2024-12-31T00:00:00Z").output == (
        "deleted 2 messages with ts before 2024-12-31T00:00:00Z\n"
    )
    body = client.get("/messages").get_json()
    assert [m["message_id"] for m in body["data"]] == ["c"] and body["total"] == 1
    stats = client.get("/stats").get_json()
    assert (stats["total_messages"], stats["senders_count"]) == (1, 1)


def test_purge_takes_a_batch_size_and_refuses_one_below_1(run, seeded, client):
    refused = run("purge", "--before", "2030-01-01T00:00:00Z", "--batch", "0")
    assert refused.exit_code == 2 and "--batch" in refused.output
    assert client.get("/messages").get_json()["total"] == 3  # nothing deleted
    one_by_one = run("purge", "--before", "2030-01-01T00:00:00Z", "--batch", "1")
    assert one_by_one.output == "deleted 3 messages with ts before 2030-01-01T00:00:00Z\n"
    stats = client.get("/stats").get_json()
    assert (stats["total_messages"], stats["senders_count"]) == (0, 0)


@pytest.mark.sqlite_only
def test_backup_copies_a_database_that_serves_as_is(run, seeded, tmp_path, make_app):
    from webhook_service.config import Settings

    target = tmp_path / "copy.db"
    result = run("backup", str(target))
    assert result.exit_code == 0 and str(target) in result.output
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    copy = make_app(Settings(webhook_secrets=(SECRET,), database_url=f"sqlite:///{target}")).test_client()
    assert copy.get("/health/ready").status_code == 200
    assert [m["message_id"] for m in copy.get("/messages").get_json()["data"]] == ["a", "b", "c"]
    again = run("backup", str(target))
    assert again.exit_code == 1 and "exists" in again.output


def test_backup_refuses_postgresql_naming_pg_dump(run, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    result = run("backup", str(tmp_path / "x.db"))
    assert result.exit_code == 1 and "pg_dump" in result.output


def _run_with_stderr(arguments: list[str], env: dict, terminal: bool) -> tuple[int, str]:
    """Run the command line in a child process, stderr a pseudo-terminal or a pipe."""
    import os
    import pty
    import subprocess
    import sys

    from tests.support.servers import ROOT

    if not terminal:
        result = subprocess.run(
            [sys.executable, "-m", "webhook_service", *arguments],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.returncode, result.stderr
    controller, terminal_end = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook_service", *arguments],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=terminal_end,
    )
    os.close(terminal_end)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


@pytest.mark.parametrize(
    "quiet_run, terminal_run",
    [
        (["export", "--output", "{tmp}/a.jsonl"], ["export", "--output", "{tmp}/b.jsonl"]),
        # Each run has messages to delete: the first the oldest, the second the rest.
        (["purge", "--before", "2024-03-01T00:00:00Z"], ["purge", "--before", "2030-01-01T00:00:00Z"]),
    ],
    ids=["export", "purge"],
)
def test_long_commands_draw_a_progress_bar_on_a_terminal_only(database_url, seeded, tmp_path, quiet_run, terminal_run):
    import os

    env = {**os.environ, "DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET}
    status, quiet = _run_with_stderr([part.replace("{tmp}", str(tmp_path)) for part in quiet_run], env, terminal=False)
    assert status == 0 and quiet == ""
    status, drawn = _run_with_stderr(
        [part.replace("{tmp}", str(tmp_path)) for part in terminal_run], env, terminal=True
    )
    assert status == 0
    assert terminal_run[0] in drawn and "100%" in drawn, drawn


def test_import_and_migrate_draw_a_progress_bar_on_a_terminal_only(database_url, tmp_path):
    import os

    env = {**os.environ, "DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET}
    for name, first in (("a", 0), ("b", 10)):
        stored_at = {"created_at": "2025-01-15T10:00:01.000000Z"}
        records = [make_message(message_id=f"m{first + number}", **stored_at) for number in range(10)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(record) + "\n\n" for record in records))
    status, quiet = _run_with_stderr(["import", str(tmp_path / "a.jsonl")], env, terminal=False)
    assert status == 0 and quiet == ""
    status, drawn = _run_with_stderr(["import", str(tmp_path / "b.jsonl")], env, terminal=True)
    assert status == 0 and "import" in drawn and "10/10" in drawn and "100%" in drawn, drawn

    new = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'new-a.db'}"}
    status, quiet = _run_with_stderr(["migrate"], new, terminal=False)
    assert status == 0 and quiet == ""
    new["DATABASE_URL"] = f"sqlite:///{tmp_path / 'new-b.db'}"
    status, drawn = _run_with_stderr(["migrate"], new, terminal=True)
    assert status == 0 and "migrate" in drawn and "100%" in drawn and f"applied {head_revision()}" in drawn, drawn
    status, again = _run_with_stderr(["migrate"], new, terminal=True)  # nothing to apply: no bar
    assert status == 0 and "%" not in again, again


def test_a_misspelled_setting_is_named_in_one_warning_and_the_command_goes_on(run, monkeypatch):
    monkeypatch.setenv("SIGNATURE_SCHEME", "standard")
    monkeypatch.setenv("log_level", "DEBUG")
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: SIGNATURE_SCHEME is not a setting and is ignored: did you mean SIGNATURE_SCHEMES?",
        "warning: log_level is not a setting and is ignored: did you mean LOG_LEVEL?",
    ]
    assert json.loads(result.stdout)["total_messages"] == 0


def test_a_database_it_cannot_open_is_named_with_its_file_and_where_its_url_came_from(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("WEBHOOK_SERVICE_ENV_FILE")
    (tmp_path / ".env").write_text("DATABASE_URL=no-such-folder/messages.db\n")
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: database unavailable: OperationalError: unable to open database file "
        f"(sqlite:///no-such-folder/messages.db = {tmp_path}/no-such-folder/messages.db; "
        f"DATABASE_URL from {tmp_path}/.env)\n"
    )
    (tmp_path / ".env").unlink()
    monkeypatch.setenv("DATABASE_URL", "postgresql://reader:pass-word-in-url@127.0.0.1:1/messages")
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 1 and "pass-word-in-url" not in result.output
    assert result.output.startswith("Error: database unavailable: ")
    assert result.output.endswith(
        "(postgresql+psycopg://reader:***@127.0.0.1:1/messages; DATABASE_URL from the environment)\n"
    )


@pytest.mark.sqlite_only  # backup copies SQLite files (PostgreSQL's is pg_dump)
def test_files_the_commands_write_are_readable_by_their_user_only(run, seeded, tmp_path):
    assert run("backup", str(tmp_path / "copy.db")).exit_code == 0
    assert run("export", "--output", str(tmp_path / "all.jsonl")).exit_code == 0
    for name in ("copy.db", "all.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    # The command's umask is its own: the process that ran it keeps its own.
    probe = tmp_path / "probe"
    probe.write_text("")
    assert stat.S_IMODE(probe.stat().st_mode) == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.sqlite_only  # about the output, not the database
def test_export_into_a_pipe_closed_early_ends_quietly(run, database_url, tmp_path):
    lines = (
        json.dumps(
            {
                "message_id": f"m{number:05d}",
                "from": "+14155550100",
                "to": "+14155550101",
                "ts": "2025-01-01T00:00:00Z",
                "text": f"message number {number} of a long export",
                "created_at": "2025-01-01T00:00:00.000000Z",
            }
        )
        for number in range(3000)
    )
    (tmp_path / "many.jsonl").write_text("\n".join(lines) + "\n")
    assert run("import", str(tmp_path / "many.jsonl")).exit_code == 0
    for command in ("export", "export --format csv", "tail --beginning"):
        result = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m webhook_service {command} | head -1"],
            env={**os.environ, "DATABASE_URL": database_url},
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert len(result.stdout.splitlines()) == 1, command
        assert "Error" not in result.stderr and "Traceback" not in result.stderr, (command, result.stderr)
