"""The operator's command line: `webhook-service` (or `python -m webhook_service`).

Every command reads the same environment as the server, prints one clear line and exits
non-zero on bad input or failure, and works while the server runs.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from webhook_service.api.errors import RequestValidationError
from webhook_service.api.inputs import E164_PATTERN, load_webhook_message
from webhook_service.api.outputs import stats_document
from webhook_service.archive.stores import ArchiveFailed, archive_store
from webhook_service.config import ConfigError, Settings, apply_env_file
from webhook_service.forwarding.config import ForwardConfigError, load_config
from webhook_service.forwarding.policy import Policy
from webhook_service.forwarding.process import run_forwarder
from webhook_service.signatures import LEGACY_HEADER, sign_legacy, standard_headers
from webhook_service.storage.dialects import BackupFailed, BackupUnsupported
from webhook_service.storage.engine import DATABASE_ERRORS, Database, describe_database_error
from webhook_service.storage.erasure import erase_number, positions_of_number
from webhook_service.storage.feed import (
    BEGINNING,
    LATEST,
    MalformedPosition,
    decode_position,
    encode_position,
    latest_position,
    read_feed,
)
from webhook_service.storage.forwarding import ReplaySelection, UnknownDestination, destination_policy, list_deliveries
from webhook_service.storage.forwarding import replay as replay_messages
from webhook_service.storage.messages import (
    MessageFilter,
    StoredMessage,
    count_messages_before,
    delete_messages_before,
    insert_stored_if_new,
    list_messages,
    message_document,
    message_stats,
)
from webhook_service.storage.migrations import MigrationFailed
from webhook_service.storage.migrations import migrate as run_migrations
from webhook_service.storage.read_model import fold_all
from webhook_service.storage.retention import count_stored_before, new_owner, run_retention
from webhook_service.storage.retention import cutoff as retention_cutoff
from webhook_service.timestamps import instant_key
from webhook_service.version import __version__

PURGE_BATCH = 100
# Messages stored per write transaction by import.
IMPORT_BATCH = 500
EXPORT_PAGE = 1000
EXPORT_FIELDS = ("message_id", "from", "to", "ts", "text", "created_at")
TAIL_PAGE = 500
# tail reads the database directly, from outside the server: it looks for new messages this often.
TAIL_POLL_SECONDS = 0.25


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    try:
        yield database
    except DATABASE_ERRORS as error:
        raise click.ClickException(f"database unavailable: {describe_database_error(error)}") from None
    finally:
        database.dispose()


def _read_body(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise click.ClickException(f"cannot read {source}: {error.strerror or error}") from None


def _timestamp(value: str) -> str:
    try:
        instant_key(value)
    except ValueError:
        raise click.BadParameter("expected YYYY-MM-DDTHH:MM:SS[.fraction]Z") from None
    return value


def _fold_now(database: Database) -> None:
    # Where counts are deferred (PostgreSQL), what a command changed is folded in before it
    # ends, also when no server is running to do it.
    fold_all(database.engine)


def _progress(total: int, label: str):
    """A bar on a terminal only (scripts and pipes stay quiet): rows done of the total, the
    rate and the time left."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()
    bar = click.progressbar(length=total, label=label, file=sys.stderr, show_percent=True, show_pos=True, show_eta=True)

    def rate(_item) -> str:
        elapsed = time.monotonic() - started
        return f"{bar.pos / elapsed:,.0f}/s" if elapsed > 0 and bar.pos else ""

    bar.item_show_func = rate
    return bar


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="webhook-service")
@click.option(
    "--env-file",
    default=".env",
    show_default=True,
    envvar="WEBHOOK_SERVICE_ENV_FILE",
    type=click.Path(dir_okay=False),
    help="variables the environment does not set are read from this file, if it exists",
)
def main(env_file: str) -> None:
    """Operate the webhook service: its database, test deliveries and exports.

    Settings come from the environment, as for the server (DATABASE_URL, WEBHOOK_SECRET, ...);
    those it does not set are read from .env in the current folder (written by `make run`).
    """
    try:
        apply_env_file(env_file)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.command()
def migrate() -> None:
    """Bring the database to the newest migration."""
    try:
        revision = run_migrations(_settings().database_url)
    except MigrationFailed as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"database at schema revision {revision}")


def _signed_headers(body: bytes, scheme: str, key: str | None, message_id: str | None, timestamp: int | None) -> dict:
    if key is None:
        configured = _settings().webhook_secrets
        if not configured:
            raise click.ClickException("no key: set WEBHOOK_SECRET (or WEBHOOK_SECRET_FILE) or pass --key")
        key = configured[-1]  # the newest: rotation lists the new secret last
    if scheme == "legacy":
        if key.startswith("whsk_"):
            raise click.ClickException("the legacy scheme signs with a shared secret, not a whsk_ key")
        return {LEGACY_HEADER: sign_legacy(key, body)}
    try:
        return standard_headers(
            key,
            message_id or f"msg_{secrets.token_hex(12)}",
            int(time.time()) if timestamp is None else timestamp,
            body,
        )
    except ValueError as error:
        raise click.ClickException(f"--key: {error}") from None


_SIGN_OPTIONS = [
    click.option("--scheme", type=click.Choice(["standard", "legacy"]), default="standard", show_default=True),
    click.option("--key", help="whsec_ or plain secret, or a whsk_ signing key (default: the last WEBHOOK_SECRET)"),
    click.option("--id", "message_id", help="webhook-id (default: a new random one)"),
    click.option("--timestamp", type=click.IntRange(0, 10**12), help="webhook-timestamp (default: now)"),
]


def _sign_options(command):
    for option in reversed(_SIGN_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@_sign_options
def sign(source: str, scheme: str, key: str | None, message_id: str | None, timestamp: int | None) -> None:
    """Print the headers a sender adds to deliver the body in FILE (or stdin)."""
    for name, value in _signed_headers(_read_body(source), scheme, key, message_id, timestamp).items():
        click.echo(f"{name}: {value}")


@main.command()
@click.argument("url")
@click.argument("source", default="-", metavar="[FILE|-]")
@_sign_options
def send(url: str, source: str, scheme: str, key: str | None, message_id: str | None, timestamp: int | None) -> None:
    """Sign the body in FILE (or stdin), POST it to URL, print the answer; exit 0 only on 2xx."""
    body = _read_body(source)
    headers = {"Content-Type": "application/json", **_signed_headers(body, scheme, key, message_id, timestamp)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    except (urllib.error.URLError, ValueError, OSError) as error:
        raise click.ClickException(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None
    click.echo(f"{status} {answer.decode('utf-8', 'replace').strip()}")
    if not 200 <= status < 300:
        sys.exit(1)


def _check_new_file(path: Path, if_it_exists: str | None) -> None:
    """A file a command is about to write: its folder must exist, and the file too unless
    `if_it_exists` is None (then it is replaced); else one line saying what to do."""
    if if_it_exists is not None and path.exists():
        raise click.ClickException(f"{path} exists; {if_it_exists}")
    if not path.absolute().parent.is_dir():
        raise click.ClickException(f"no folder {path.absolute().parent}: create it first")


@main.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
def backup(destination: Path) -> None:
    """Copy the database, consistently, to DESTINATION while the service writes on."""
    _check_new_file(destination, "choose a new file")
    database = Database(_settings().database_url)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress(total, "backup")
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
@click.option("--before", required=True, callback=lambda _c, _p, value: _timestamp(value), help="a ts: older go")
@click.option("--dry-run", is_flag=True, help="only count what would be deleted")
def purge(before: str, dry_run: bool) -> None:
    """Delete messages whose ts is before --before, in small batches; totals stay exact."""
    settings = _settings()
    with _database(settings) as database:
        with database.read_transaction() as conn:
            count = count_messages_before(conn, before)
        if dry_run:
            click.echo(f"would delete {count} messages with ts before {before}")
            return
        bar = _progress(count, "purge")
        deleted = 0
        while True:
            # One short write transaction per batch: deliveries go on between them.
            with database.write_transaction() as conn:
                batch = delete_messages_before(conn, before, PURGE_BATCH)
            deleted += batch
            if bar is not None:
                bar.update(batch)
            if batch < PURGE_BATCH:
                break
        if bar is not None:
            bar.render_finish()
        _fold_now(database)
    click.echo(f"deleted {deleted} messages with ts before {before}")


@main.command()
@click.option("--dry-run", is_flag=True, help="only count what would be removed")
def retention(dry_run: bool) -> None:
    """Run retention once now: remove messages stored more than RETENTION_DAYS days ago."""
    settings = _settings()
    if settings.retention_days is None:
        raise click.UsageError("RETENTION_DAYS is not set: every message is kept")
    with _database(settings) as database:
        before = retention_cutoff(settings.retention_days, time.time())
        with database.read_transaction() as conn:
            count = count_stored_before(conn, before)
        if dry_run:
            click.echo(f"would remove {count} messages stored before {before}")
            return
        bar = _progress(count, "retention")
        archive = None if settings.archive_url is None else archive_store(settings.archive_url)
        try:
            result = run_retention(
                database,
                settings.retention_days,
                new_owner(),
                progress=None if bar is None else bar.update,
                archive=archive,
            )
        except ArchiveFailed as error:
            raise click.ClickException(f"archiving failed, nothing of that part was removed: {error}") from None
        if bar is not None:
            bar.render_finish()
        _fold_now(database)
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
    settings = _settings()
    archive = None if settings.archive_url is None else archive_store(settings.archive_url)
    with _database(settings) as database:
        with database.read_transaction() as conn:
            count = len(positions_of_number(conn, number))
        bar = None if dry_run else _progress(count, "erase")
        result = erase_number(database, number, dry_run=dry_run, progress=None if bar is None else bar.update)
        if bar is not None:
            bar.render_finish()
        if not dry_run:
            _fold_now(database)
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
    settings = _settings()
    stored = skipped = 0
    with _database(settings) as database:
        batch: list[StoredMessage] = []

        def write() -> None:
            nonlocal stored, skipped
            with database.write_transaction() as conn:
                results = insert_stored_if_new(conn, batch)
            stored, skipped = stored + sum(results), skipped + len(results) - sum(results)
            batch.clear()

        for path in files:
            for where, record in _import_records(path):
                batch.append(_imported_message(where, record))
                if len(batch) == IMPORT_BATCH:
                    write()
        if batch:
            write()
        _fold_now(database)
    click.echo(f"imported {stored} messages ({skipped} stored already) from {len(files)} files")


def _import_records(path: Path):
    """(where, record) of each message in an export (JSON lines) or archive (Parquet) file."""
    with open(path, "rb") as file:
        is_parquet = file.read(4) == b"PAR1"
    if is_parquet:
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
@click.option("--since", callback=lambda _c, _p, value: value and _timestamp(value), help="only ts at or after this")
@click.option("--q", "text", help="only texts containing this (any case)")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="a file (default: stdout)")
@click.option("--force", is_flag=True, help="replace --output if it exists")
def export(
    sender: str | None, since: str | None, text: str | None, output_format: str, output: Path | None, force: bool
) -> None:
    """Write every matching message in /messages order, streamed page by page."""
    settings = _settings()
    message_filter = MessageFilter(sender=sender or None, since=since or None, text_contains=text or None)
    if output is not None:
        _check_new_file(output, None if force else "choose a new file or add --force to replace it")
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
        with _database(settings) as database:
            after, bar = None, None
            while True:
                # Each page in its own short read: keyset paging keeps memory flat. The first
                # counts the matches (for the bar); the others need not count again.
                with database.read_transaction() as conn:
                    page = list_messages(conn, message_filter, EXPORT_PAGE, after=after, with_total=after is None)
                if after is None:
                    bar = _progress(page.total, "export")
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


@main.command()
def stats() -> None:
    """Print the /stats document."""
    with _database(_settings()) as database, database.read_transaction() as conn:
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
    with _database(_settings()) as database:
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


class _ConfigFileError(click.ClickException):
    """A bad forwarder file: one line, exit 2."""

    exit_code = 2


def _destinations(config: str | None):
    path = config or os.environ.get("FORWARD_CONFIG")
    if not path:
        raise _ConfigFileError("no destinations: pass --config FILE or set FORWARD_CONFIG")
    try:
        return load_config(path)
    except ForwardConfigError as error:
        raise _ConfigFileError(str(error)) from None


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="the TOML file of destinations (or FORWARD_CONFIG)")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=9464, show_default=True)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="address the metrics listen on")
def forward(config: str | None, metrics_port: int, metrics_host: str) -> None:
    """Deliver every stored message to each destination of the file, until SIGTERM.

    Signed with Standard Webhooks, retried with backoff, dead-lettered; several forwarders
    of one destination share its work on PostgreSQL.
    """
    destinations = _destinations(config)
    settings = _settings()
    try:
        run_forwarder(settings, destinations, metrics_host, metrics_port)
    except MigrationFailed as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"metrics on {metrics_host}:{metrics_port}: {error.strerror or error}") from None


def _known_destination(function):
    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UnknownDestination as error:
            raise click.ClickException(
                f"no forwarder has served destination {error.args[0]!r} on this database (see forward --config)"
            ) from None

    return run


@main.command()
@click.option("--destination", required=True, help="a destination's name in the forwarder's file")
@click.option("--failed", is_flag=True, help="only dead letters")
@click.option("--format", "output_format", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@_known_destination
def deliveries(destination: str, failed: bool, output_format: str) -> None:
    """List the deliveries still owed to a destination (waiting for a retry, or dead letters)."""
    with _database(_settings()) as database, database.read_transaction() as conn:
        owed = list_deliveries(conn, destination, dead_only=failed)
    if output_format == "table" and owed:
        click.echo("message_id\tstate\tattempts\tlast outcome\tlast attempt at")
    for item in owed:
        if output_format == "jsonl":
            record = {
                "message_id": item.message_id,
                "state": item.state,
                "attempts": item.attempts,
                "last_status": item.last_status,
                "last_error": item.last_error,
                "last_attempt_at": item.last_attempt_at,
            }
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            last = item.last_error if item.last_status is None else f"HTTP {item.last_status}"
            click.echo(
                f"{item.message_id}\t{item.state}\t{item.attempts}\t{last or '-'}\t{item.last_attempt_at or '-'}"
            )
    if output_format == "table":
        click.echo(f"{len(owed)} {'dead letters' if failed else 'deliveries owed'} to {destination}", err=True)


@main.command()
@click.option("--destination", required=True, help="a destination's name in the forwarder's file")
@click.option("--failed", is_flag=True, help="every dead letter")
@click.option("--message-id", help="one message, by its message_id")
@click.option(
    "--since", callback=lambda _c, _p, value: value and _timestamp(value), help="messages with ts at or after"
)
@click.option("--before", callback=lambda _c, _p, value: value and _timestamp(value), help="... and ts before this")
@click.option("--dry-run", is_flag=True, help="only count what would be sent again")
@_known_destination
def replay(
    destination: str, failed: bool, message_id: str | None, since: str | None, before: str | None, dry_run: bool
) -> None:
    """Queue messages for the running forwarder to send to a destination again, dead letters included."""
    chosen = [failed, message_id is not None, since is not None]
    if sum(chosen) != 1 or (before is not None and since is None):
        raise click.UsageError("choose one of --failed, --message-id ID, --since TS [--before TS]")
    selection = ReplaySelection(failed=failed, message_id=message_id, since=since, before=before)
    with _database(_settings()) as database, database.write_transaction() as conn:
        # Chosen by the match and ordered by the key the forwarder serves the destination with.
        policy = Policy.from_document(destination_policy(conn, destination))
        count = replay_messages(conn, destination, selection, time.time(), dry_run, policy)
    click.echo(f"{'would queue' if dry_run else 'queued'} {count} messages for {destination}")
