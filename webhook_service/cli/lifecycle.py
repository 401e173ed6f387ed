"""Commands of the data's life cycle: purge, retention, erasure, import and export."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

import click

from webhook_service.api.errors import RequestValidationError
from webhook_service.api.inputs import load_webhook_message
from webhook_service.api.validation import E164_PATTERN
from webhook_service.archive.stores import ArchiveFailed, archive_store
from webhook_service.cli.common import (
    check_new_file,
    checked_timestamp,
    fold_now,
    load_settings,
    main,
    on_terminal,
    open_database,
    progress_bar,
)
from webhook_service.storage.erasure import erase_number, positions_of_number
from webhook_service.storage.messages import (
    MessageFilter,
    StoredMessage,
    count_messages_before,
    delete_messages_before,
    insert_stored_if_new,
    list_messages,
    message_document,
)
from webhook_service.storage.retention import COMMAND_BATCH, Pace, count_stored_before, new_owner, run_retention
from webhook_service.storage.retention import cutoff as retention_cutoff

# Messages removed per write transaction by purge and retention (each holds SQLite's write
# lock, which deliveries wait for): larger goes faster, smaller keeps deliveries' waits short.
batch_option = click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=COMMAND_BATCH,
    show_default=True,
    help="messages removed per write transaction (deliveries wait for up to one)",
)
# Messages stored per write transaction by import.
IMPORT_BATCH = 500
EXPORT_PAGE = 1000
EXPORT_FIELDS = ("message_id", "from", "to", "ts", "text", "created_at")


@main.command()
@click.option("--before", required=True, callback=lambda _c, _p, value: checked_timestamp(value), help="a ts: older go")
@click.option("--dry-run", is_flag=True, help="only count what would be deleted")
@batch_option
def purge(before: str, dry_run: bool, batch: int) -> None:
    """Delete messages whose ts is before --before, in batches; totals stay exact."""
    settings = load_settings()
    with open_database(settings) as database:
        with database.read_transaction() as conn:
            count = count_messages_before(conn, before)
        if dry_run:
            click.echo(f"would delete {count} messages with ts before {before}")
            return
        bar = progress_bar(count, "purge")
        deleted = 0
        while True:
            # One write transaction per batch: deliveries go on between them.
            with database.write_transaction(large=True) as conn:
                removed = delete_messages_before(conn, before, batch)
            deleted += removed
            if bar is not None:
                bar.update(removed)
            if removed < batch:
                break
        if bar is not None:
            bar.render_finish()
        fold_now(database)
    click.echo(f"deleted {deleted} messages with ts before {before}")


@main.command()
@click.option("--dry-run", is_flag=True, help="only count what would be removed")
@batch_option
def retention(dry_run: bool, batch: int) -> None:
    """Run retention once now, at full speed: remove messages stored more than RETENTION_DAYS
    days ago."""
    settings = load_settings()
    if settings.retention_days is None:
        raise click.UsageError("RETENTION_DAYS is not set: every message is kept")
    with open_database(settings) as database:
        before = retention_cutoff(settings.retention_days, time.time())
        with database.read_transaction() as conn:
            count = count_stored_before(conn, before)
        if dry_run:
            click.echo(f"would remove {count} messages stored before {before}")
            return
        bar = progress_bar(count, "retention")
        archive = None if settings.archive_url is None else archive_store(settings.archive_url)
        try:
            result = run_retention(
                database,
                settings.retention_days,
                new_owner(),
                progress=None if bar is None else bar.update,
                archive=archive,
                pace=Pace(batch=batch, pause_per_batch=0.0),
            )
        except ArchiveFailed as error:
            raise click.ClickException(f"archiving failed, nothing of that part was removed: {error}") from None
        if bar is not None:
            bar.render_finish()
        fold_now(database)
    if result is None:
        raise click.ClickException("another process is running retention on this database now; try again later")
    archived = "" if archive is None else f"archived {result.archived} to {archive.describe()}, "
    click.echo(
        f"{archived}removed {result.removed} messages stored before {result.cutoff}"
        f" ({result.deliveries_ended} deliveries still owed for them ended)"
    )


@main.command()
@click.option("--number", required=True, help="an E.164 number: every message from or to it goes")
@click.option("--dry-run", is_flag=True, help="only count what would be erased")
def erase(number: str, dry_run: bool) -> None:
    """Erase a person's messages: every one from or to --number, from the database, from the
    deliveries still owed, and from every archive file (written again without them)."""
    if E164_PATTERN.fullmatch(number) is None:
        raise click.BadParameter("expected E.164: '+' then 1 to 15 digits", param_hint="--number")
    settings = load_settings()
    archive = None if settings.archive_url is None else archive_store(settings.archive_url)
    with open_database(settings) as database:
        with database.read_transaction() as conn:
            count = len(positions_of_number(conn, number))
        bar = None if dry_run else progress_bar(count, "erase")
        result = erase_number(database, number, dry_run=dry_run, progress=None if bar is None else bar.update)
        if bar is not None:
            bar.render_finish()
        if not dry_run:
            fold_now(database)
    archived = files = 0
    if archive is not None:
        from webhook_service.archive.parquet import erase_number as erase_archived  # pyarrow

        try:
            archived, files = erase_archived(archive, number, dry_run=dry_run)
        except ArchiveFailed as error:
            raise click.ClickException(f"erasing from the archives failed (the database is done): {error}") from None
    # The record of the erasure says how many, never whose.
    record = {"event": "erasure", "dry_run": dry_run, "messages": result.messages, "archived_messages": archived}
    click.echo(json.dumps({**record, "archive_files": files, "deliveries_ended": result.deliveries_ended}), err=True)
    verb = "would erase" if dry_run else "erased"
    where = "" if archive is None else f", and {archived} from {files} archive files"
    click.echo(f"{verb} {result.messages} messages from or to the number from the database{where}")


@main.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_messages(files: tuple[Path, ...]) -> None:
    """Store the messages of export files (JSON lines) and archive files (Parquet) whose
    message_id is not stored yet, keeping their created_at; run it again at will."""
    settings = load_settings()
    stored = skipped = 0
    with open_database(settings) as database:
        batch: list[StoredMessage] = []
        # On a terminal the records are counted first (a quick read) so that the bar shows
        # how far along it is.
        bar = progress_bar(sum(map(_records_in, files)), "import") if on_terminal() else None

        def write() -> None:
            nonlocal stored, skipped
            with database.write_transaction() as conn:
                results = insert_stored_if_new(conn, batch)
            stored, skipped = stored + sum(results), skipped + len(results) - sum(results)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

        for path in files:
            for where, record in _import_records(path):
                batch.append(_imported_message(where, record))
                if len(batch) == IMPORT_BATCH:
                    write()
        if batch:
            write()
        if bar is not None:
            bar.render_finish()
        fold_now(database)
    click.echo(f"imported {stored} messages ({skipped} stored already) from {len(files)} files")


def _records_in(path: Path) -> int:
    """How many records a file holds (an archive says; an export has one per non-empty line)."""
    if _is_parquet(path):
        import pyarrow.parquet as pq  # loaded only for archive files

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as file:
        return sum(1 for line in file if line.strip())


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(4) == b"PAR1"


def _import_records(path: Path):
    """(where, record) of each message in an export (JSON lines) or archive (Parquet) file."""
    if _is_parquet(path):
        import pyarrow.parquet as pq  # loaded only for archive files

        number = 0
        for rows in pq.ParquetFile(path).iter_batches(batch_size=IMPORT_BATCH):
            for record in rows.to_pylist():
                number += 1
                yield f"{path} row {number}", record
        return
    with open(path, encoding="utf-8", errors="strict") as lines:
        try:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise click.ClickException(f"{path}:{number}: not JSON ({error.msg}); {_RUN_AGAIN}") from None
                yield f"{path}:{number}", record
        except UnicodeDecodeError:
            raise click.ClickException(f"{path}: not UTF-8 text, nor a Parquet file") from None


_RUN_AGAIN = "the messages before it are stored: mend it and run import again (it skips what is stored)"
_CREATED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", re.ASCII)


def _imported_message(where: str, record) -> StoredMessage:
    if not isinstance(record, dict):
        raise click.ClickException(f"{where}: not a JSON object; {_RUN_AGAIN}")
    try:
        message = load_webhook_message(record)
    except RequestValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, item['loc'][1:])) or 'body'}: {item['msg']}" for item in error.detail)
        raise click.ClickException(f"{where}: {reasons}; {_RUN_AGAIN}") from None
    created_at = record.get("created_at")
    if not isinstance(created_at, str) or _CREATED_AT.fullmatch(created_at) is None:
        raise click.ClickException(f"{where}: created_at: expected YYYY-MM-DDTHH:MM:SS.ffffffZ; {_RUN_AGAIN}")
    return StoredMessage(message.message_id, message.sender, message.recipient, message.ts, message.text, created_at)


@main.command()
@click.option("--from", "sender", help="only this sender")
@click.option(
    "--since", callback=lambda _c, _p, value: value and checked_timestamp(value), help="only ts at or after this"
)
@click.option("--q", "text", help="only texts containing this (any case)")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="a file (default: stdout)")
@click.option("--force", is_flag=True, help="replace --output if it exists")
def export(
    sender: str | None, since: str | None, text: str | None, output_format: str, output: Path | None, force: bool
) -> None:
    """Write every matching message in /messages order, streamed page by page."""
    settings = load_settings()
    message_filter = MessageFilter(sender=sender or None, since=since or None, text_contains=text or None)
    if output is not None:
        check_new_file(output, None if force else "choose a new file or add --force to replace it")
    # Written beside the file and renamed at the end: a failed export leaves no half file.
    partial = output.with_name(f".{output.name}.partial") if output else None
    try:
        stream = open(partial, "w", newline="", encoding="utf-8") if partial else sys.stdout  # noqa: SIM115
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror or error}") from None
    written = 0
    finished = False
    try:
        writer = csv.DictWriter(stream, EXPORT_FIELDS) if output_format == "csv" else None
        if writer is not None:
            writer.writeheader()
        with open_database(settings) as database:
            after, bar = None, None
            while True:
                # Each page in its own short read: keyset paging keeps memory flat. The first
                # counts the matches (for the bar); the others need not count again.
                with database.read_transaction() as conn:
                    page = list_messages(conn, message_filter, EXPORT_PAGE, after=after, with_total=after is None)
                if after is None:
                    bar = progress_bar(page.total, "export")
                for message in page.items:
                    record = message_document(message)
                    if writer is not None:
                        writer.writerow(record)
                    else:
                        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += len(page.items)
                if bar is not None:
                    bar.update(len(page.items))
                if page.next_position is None:
                    break
                after = page.next_position
            if bar is not None:
                bar.render_finish()
        finished = True
    except BrokenPipeError:
        if output is not None:
            raise click.ClickException(f"cannot write {output}: broken pipe") from None
        raise  # the reader of stdout went away (`export | head -1`): click ends quietly
    except OSError as error:
        raise click.ClickException(f"cannot write {output or 'stdout'}: {error.strerror or error}") from None
    finally:
        if partial is not None:
            stream.close()
            if finished:
                partial.replace(output)
            else:
                partial.unlink(missing_ok=True)
    if output:
        click.echo(f"exported {written} messages to {output}")
