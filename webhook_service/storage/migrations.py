"""Running the alembic migrations (shipped in the package as webhook_service/migrations, the
repository's `migrations/`) and reading the schema revision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.dialects.base import LOCK_WAIT_OPTION, WRITE_OPTION
from webhook_service.storage.engine import DATABASE_ERRORS, create_database_engine, describe_database_error

logger = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"

# alembic's own bookkeeping table, read directly so that a readiness probe stays quiet.
_version_table = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))

# What upgrade_to_head tells a caller that follows it: how many revisions it applies, then
# each revision applied (None before the first).
Progress = Callable[[int, "str | None"], None]

# How long a migrator waits for another to finish (processes and hosts starting together).
MIGRATION_LOCK_WAIT_MS = 120_000


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


def upgrade_to_head(database_url: str, revision: str = "head", progress: Progress | None = None) -> str:
    """Migrate the database to the newest revision (or to `revision`) and return where it is.
    `progress(to_apply, applied)` hears how many revisions are to be applied, then after each
    the revision just applied.

    Raises SchemaMismatch for a database these migrations must not touch, and
    sqlalchemy.exc.SQLAlchemyError or OSError when the database cannot be reached.
    """
    _run_alembic(
        database_url,
        command.upgrade,
        revision,
        check=check_upgradable,
        progress=progress,
        after=_align_positions if revision == "head" else None,
    )
    engine = create_database_engine(database_url)
    try:
        return database_revision(engine) or ""
    finally:
        engine.dispose()


def downgrade_to_base(database_url: str) -> None:
    """Undo every migration (for tests and rollbacks)."""
    _run_alembic(database_url, command.downgrade, "base")


def _align_positions(conn: Connection) -> None:
    moved = dialect_of(conn).align_positions(conn)
    if moved:
        logger.warning(
            "the database's feed positions were ahead of this PostgreSQL cluster's transaction ids (restored "
            "from another cluster?): positions taken from now on follow the newest stored message",
            transactions_moved=moved,
        )


def _run_alembic(database_url: str, alembic_command, revision: str, check=None, progress=None, after=None) -> None:
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as conn:
            # One transaction (immediate on SQLite, under an advisory lock on PostgreSQL): a
            # second migrator waits, then finds the work done, rather than interleaving. It
            # waits as long as the migrations before it may take, not a delivery's 5 s.
            conn.execution_options(**{WRITE_OPTION: True, LOCK_WAIT_OPTION: MIGRATION_LOCK_WAIT_MS})
            with conn.begin():
                dialect_of(conn).lock_migrations(conn)
                if check is not None:
                    check(conn)
                config = alembic_config(database_url)
                config.attributes["connection"] = conn
                if progress is not None:
                    _follow(config, conn, revision, progress)
                alembic_command(config, revision)
                if after is not None:
                    after(conn)
    finally:
        engine.dispose()


def _follow(config: Config, conn: Connection, revision: str, progress: Progress) -> None:
    scripts = ScriptDirectory.from_config(config)
    current = current_revision(conn)
    to_apply = sum(1 for _ in scripts.iterate_revisions(revision, current or "base"))
    progress(to_apply, None)
    config.attributes["on_version_apply"] = lambda ctx, step, heads, run_args: progress(to_apply, step.up_revision_id)


class MigrationFailed(RuntimeError):
    """The database could not be reached or migrated; the message says why, in one line."""


def migrate(database_url: str, progress: Progress | None = None) -> str:
    """Upgrade to the newest revision and return it (`progress`: as upgrade_to_head); raises
    MigrationFailed."""
    try:
        return upgrade_to_head(database_url, progress=progress)
    except SchemaMismatch as error:
        raise MigrationFailed(f"database migration refused: {error}") from None
    except DATABASE_ERRORS as error:
        # A file system error names its path (where the SQLite file could not be made).
        reason = f"{type(error).__name__}: {error}" if isinstance(error, OSError) else describe_database_error(error)
        raise MigrationFailed(f"database migration failed: {reason}") from None
