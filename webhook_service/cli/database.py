"""Commands on the database itself: migrate, backup, stats and tail."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click

from webhook_service.api.outputs import stats_document
from webhook_service.cli.common import (
    check_new_file,
    load_settings,
    main,
    open_database,
    progress_bar,
)
from webhook_service.storage.dialects import BackupFailed, BackupUnsupported
from webhook_service.storage.engine import Database
from webhook_service.storage.feed import (
    BEGINNING,
    LATEST,
    MalformedPosition,
    decode_position,
    encode_position,
    latest_position,
    read_feed,
)
from webhook_service.storage.messages import (
    message_document,
    message_stats,
)
from webhook_service.storage.migrations import MigrationFailed
from webhook_service.storage.migrations import migrate as run_migrations

TAIL_PAGE = 500
# tail reads the database directly, from outside the server: it looks for new messages this often.
TAIL_POLL_SECONDS = 0.25


@main.command()
def migrate() -> None:
    """Bring the database to the newest migration."""
    bar = None

    def progress(to_apply: int, applied: str | None) -> None:
        # A bar of revisions (some take minutes on millions of messages), naming the last one.
        nonlocal bar
        if applied is None:
            bar = progress_bar(to_apply, "migrate", show=lambda item: item or "") if to_apply else None
        elif bar is not None:
            bar.update(1, f"applied {applied}")

    try:
        revision = run_migrations(load_settings().database_url, progress)
    except MigrationFailed as error:
        raise click.ClickException(str(error)) from None
    finally:
        if bar is not None:
            bar.render_finish()
    click.echo(f"database at schema revision {revision}")


@main.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
def backup(destination: Path) -> None:
    """Copy the database, consistently, to DESTINATION while the service writes on."""
    check_new_file(destination, "choose a new file")
    database = Database(load_settings().database_url)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(total, "backup")
        if bar is not None:
            bar.update(done - bar.pos)

    try:
        database.dialect.backup(destination, progress)
    except BackupUnsupported as error:
        raise click.ClickException(str(error)) from None
    except BackupFailed as error:
        raise click.ClickException(f"backup failed: {error}") from None
    finally:
        database.dispose()
    if bar is not None:
        bar.render_finish()
    click.echo(f"backed up {database.dialect.url.database} to {destination} ({destination.stat().st_size} bytes)")


@main.command()
def stats() -> None:
    """Print the /stats document."""
    with open_database(load_settings()) as database, database.read_transaction() as conn:
        result = message_stats(conn)
    click.echo(json.dumps(stats_document(result)))


def _feed_start(after: str | None, beginning: bool) -> int | str:
    if after is not None and beginning:
        raise click.UsageError("give --after or --beginning, not both")
    if beginning:
        return BEGINNING
    if after is None or after == LATEST:
        return LATEST
    try:
        return decode_position(after)
    except MalformedPosition:
        raise click.BadParameter(
            "expected a position printed by tail or a next of GET /feed", param_hint="--after"
        ) from None


@main.command()
@click.option("--after", help="a position to start after (printed by tail when stopped, or a /feed next)")
@click.option("--beginning", is_flag=True, help="start at the first message stored")
@click.option("--limit", type=click.IntRange(1), help="stop after this many messages")
def tail(after: str | None, beginning: bool, limit: int | None) -> None:
    """Print the feed as JSON lines, one per message, as messages are stored.

    Starts at the feed's end unless told otherwise (saying where on stderr). When stopped
    (Ctrl-C, SIGTERM or --limit), prints the position to resume from on stderr.
    """
    position = _feed_start(after, beginning)
    printed = 0
    # Ctrl-C and SIGTERM end the loop between reads, never inside one.
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    with open_database(load_settings()) as database:
        try:
            while not stopping.is_set() and (limit is None or printed < limit):
                with database.read_transaction() as conn:
                    if position == LATEST:
                        position = latest_position(conn)
                        click.echo(f"following the feed after position {encode_position(position)}", err=True)
                    page = read_feed(conn, position, TAIL_PAGE if limit is None else min(TAIL_PAGE, limit - printed))
                for message in page.items:
                    click.echo(json.dumps(message_document(message), ensure_ascii=False))
                printed += len(page.items)
                position = page.next_position
                if not page.items:
                    stopping.wait(TAIL_POLL_SECONDS)
        finally:
            if position != LATEST:
                click.echo(f"resume with: webhook-service tail --after {encode_position(position)}", err=True)
