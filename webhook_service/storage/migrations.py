"""Running the alembic migrations in `migrations/` and reading the schema revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, func, inspect, select

from webhook_service.storage.engine import WRITE_OPTION, create_database_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# The PostgreSQL advisory lock every migrator of a database takes first (a fixed number
# that names this service's migrations), so that hosts starting together take turns.
MIGRATION_LOCK_KEY = 0x77656268_6F6F6B01

# alembic's own bookkeeping table, read directly so that a readiness probe stays quiet.
_version_table = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))


def alembic_config(database_url: str) -> Config:
    """An alembic Config for this project's migrations against `database_url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision in `migrations/versions`."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    if not inspect(conn).has_table(_version_table.name):
        return None
    return conn.execute(select(_version_table.c.version_num)).scalar_one_or_none()


def database_revision(engine: Engine) -> str | None:
    """Connect and read the schema revision; raises SQLAlchemyError when unreachable."""
    with engine.connect() as conn:
        return current_revision(conn)


class SchemaMismatch(RuntimeError):
    """The database is not one these migrations can bring to their newest revision."""


def known_revisions() -> set[str]:
    """Every revision in `migrations/versions`."""
    return {script.revision for script in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}


def check_upgradable(conn: Connection) -> None:
    """Raise SchemaMismatch, saying what to do, for a database these migrations must not touch:
    one at a revision they do not know (migrated by a newer release), or one that holds
    tables but no revision (another application's database)."""
    revision = current_revision(conn)
    if revision is not None and revision not in known_revisions():
        raise SchemaMismatch(
            f"the database is at schema revision {revision}, which this release does not know (its newest is "
            f"{head_revision()}): a newer release migrated it. Deploy that release again, or restore a backup "
            "taken before the upgrade"
        )
    if revision is None:
        tables = sorted(name for name in inspect(conn).get_table_names() if name != _version_table.name)
        if tables:
            raise SchemaMismatch(
                f"the database holds tables ({', '.join(tables[:5])}) but no schema revision: it is not this "
                "service's database. Point DATABASE_URL at a new file or an empty database"
            )


def upgrade_to_head(database_url: str, revision: str = "head") -> str:
    """Migrate the database to the newest revision (or to `revision`) and return where it is.

    Raises SchemaMismatch for a database these migrations must not touch, and
    sqlalchemy.exc.SQLAlchemyError or OSError when the database cannot be reached.
    """
    _run_alembic(database_url, command.upgrade, revision, check=check_upgradable)
    engine = create_database_engine(database_url)
    try:
        return database_revision(engine) or ""
    finally:
        engine.dispose()


def downgrade_to_base(database_url: str) -> None:
    """Undo every migration (for tests and rollbacks)."""
    _run_alembic(database_url, command.downgrade, "base")


def _run_alembic(database_url: str, alembic_command, revision: str, check=None) -> None:
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as conn:
            # One transaction (immediate on SQLite, under an advisory lock on PostgreSQL): a
            # second migrator waits, then finds the work done, rather than interleaving.
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                if check is not None:
                    check(conn)
                config = alembic_config(database_url)
                config.attributes["connection"] = conn
                alembic_command(config, revision)
    finally:
        engine.dispose()
