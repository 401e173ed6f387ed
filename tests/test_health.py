import sqlite3

from webhook_service.config import Settings
from webhook_service.storage.migrations import downgrade_to_base, upgrade_to_head


def test_live_always_answers(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_when_database_migrated_and_secret_set(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ready"


def test_not_ready_without_a_secret(make_app, database_url):
    client = make_app(Settings(webhook_secrets=(), database_url=database_url)).test_client()
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["secret"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert "secret" in body["detail"]
    assert client.get("/health/live").status_code == 200


def test_not_ready_when_the_database_is_not_migrated(make_app, tmp_path):
    sqlite3.connect(tmp_path / "empty.db").close()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    client = make_app(Settings(webhook_secrets=("s",), database_url=url)).test_client()
    response = client.get("/health/ready")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["database"] == "ok"
    assert checks["schema"] != "ok"


def test_not_ready_when_the_schema_is_behind(make_app, settings):
    downgrade_to_base(settings.database_url)
    response = make_app(settings).test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["schema"] != "ok"


def test_not_ready_when_the_database_is_unreachable(make_app, tmp_path):
    # A directory where the database file should be: SQLite cannot open it.
    (tmp_path / "db-is-a-dir").mkdir()
    url = f"sqlite:///{tmp_path / 'db-is-a-dir'}"
    client = make_app(Settings(webhook_secrets=("s",), database_url=url)).test_client()
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == "unavailable"
    assert "Traceback" not in response.get_data(as_text=True)


def test_not_ready_when_the_file_is_not_a_database(make_app, tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    client = make_app(Settings(webhook_secrets=("s",), database_url=f"sqlite:///{path}")).test_client()
    assert client.get("/health/ready").status_code == 503
    # The read endpoints answer 503 JSON too, not a stack trace.
    for url in ("/messages", "/stats"):
        response = client.get(url)
        assert response.status_code == 503
        assert "detail" in response.get_json()


def test_missing_parent_folder_is_created_by_the_migrations_at_start(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'messages.db'}"
    upgrade_to_head(url)
    client = make_app(Settings(webhook_secrets=("s",), database_url=url)).test_client()
    assert client.get("/stats").status_code == 200
    assert (tmp_path / "a" / "b").is_dir()
    assert sqlite3.connect(tmp_path / "a" / "b" / "messages.db").execute("PRAGMA journal_mode").fetchone() == ("wal",)
