"""Commands of the forwarder: forward, and the deliveries and replays of a destination."""

from __future__ import annotations

import functools
import json
import os
import time

import click

from webhook_service.cli.common import (
    checked_timestamp,
    load_settings,
    main,
    open_database,
)
from webhook_service.forwarding.config import ForwardConfigError, load_config
from webhook_service.forwarding.policy import Policy
from webhook_service.forwarding.process import run_forwarder
from webhook_service.storage.forwarding import ReplaySelection, UnknownDestination, destination_policy, list_deliveries
from webhook_service.storage.forwarding import replay as replay_messages
from webhook_service.storage.migrations import MigrationFailed


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
    settings = load_settings()
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
    with open_database(load_settings()) as database, database.read_transaction() as conn:
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
    "--since", callback=lambda _c, _p, value: value and checked_timestamp(value), help="messages with ts at or after"
)
@click.option(
    "--before", callback=lambda _c, _p, value: value and checked_timestamp(value), help="... and ts before this"
)
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
    with open_database(load_settings()) as database, database.write_transaction() as conn:
        # Chosen by the match and ordered by the key the forwarder serves the destination with.
        policy = Policy.from_document(destination_policy(conn, destination))
        count = replay_messages(conn, destination, selection, time.time(), dry_run, policy)
    click.echo(f"{'would queue' if dry_run else 'queued'} {count} messages for {destination}")
