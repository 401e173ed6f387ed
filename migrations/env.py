"""alembic environment: the URL comes from the application's settings (DATABASE_URL).

No logging.fileConfig here: it would disable the service's loggers after a migration.
"""

from alembic import context
from sqlalchemy import Connection

from webhook_service.config import Settings
from webhook_service.storage.engine import create_database_engine
from webhook_service.storage.tables import is_outside_metadata, metadata

config = context.config


def include_name(name, type_, parent_names) -> bool:
    """Leave the full-text index and its shadow tables out of autogenerate comparisons."""
    return not is_outside_metadata(name, type_)


def run_with_connection(connection: Connection) -> None:
    # The caller may follow the migrations as they are applied (the migrate command's bar).
    applied = config.attributes.get("on_version_apply")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        include_name=include_name,
        on_version_apply=[applied] if applied else (),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with_connection(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    engine = create_database_engine(url)
    try:
        with engine.begin() as connection:
            run_with_connection(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
