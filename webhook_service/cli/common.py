"""What every command shares: the command group, its settings and database, and the small
checks and progress bar of the commands that read or write files."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from webhook_service.config import ConfigError, Settings, apply_env_file, resemblance_warnings, shown_database_url
from webhook_service.storage.engine import DATABASE_ERRORS, Database, describe_database_error
from webhook_service.storage.read_model import fold_all
from webhook_service.timestamps import instant_key
from webhook_service.version import __version__


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    try:
        yield database
    except BrokenPipeError:
        # The reader of the output went away (`export | head -1`): not a database error.
        # click ends the command quietly.
        raise
    except DATABASE_ERRORS as error:
        raise click.ClickException(
            f"database unavailable: {describe_database_error(error)} ({described_database(settings.database_url)})"
        ) from None
    finally:
        database.dispose()


def read_body(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise click.ClickException(f"cannot read {source}: {error.strerror or error}") from None


def checked_timestamp(value: str) -> str:
    try:
        instant_key(value)
    except ValueError:
        raise click.BadParameter("expected YYYY-MM-DDTHH:MM:SS[.fraction]Z") from None
    return value


def fold_now(database: Database) -> None:
    # Where counts are deferred (PostgreSQL), what a command changed is folded in before it
    # ends, also when no server is running to do it.
    fold_all(database.engine)


def on_terminal() -> bool:
    """Whether progress is shown: on a terminal only (scripts and pipes stay quiet)."""
    return sys.stderr.isatty()


def progress_bar(total: int, label: str, show=None):
    """A bar on a terminal only: rows done of the total, the rate and the time left (or, with
    `show`, what show(item) says of the item last passed to update)."""
    if not on_terminal():
        return None
    started = time.monotonic()
    bar = click.progressbar(length=total, label=label, file=sys.stderr, show_percent=True, show_pos=True, show_eta=True)

    def rate(_item) -> str:
        elapsed = time.monotonic() - started
        return f"{bar.pos / elapsed:,.0f}/s" if elapsed > 0 and bar.pos else ""

    bar.item_show_func = rate if show is None else show
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
@click.pass_context
def main(context: click.Context, env_file: str) -> None:
    """Operate the webhook service: serve it, and its database, test deliveries and exports.

    Settings come from the environment (DATABASE_URL, WEBHOOK_SECRET, ...); those it does not
    set are read from .env in the current folder (written by `make run`), as by the server.
    """
    # What a command writes (backups, exports) is readable by its user only, as the database.
    previous = os.umask(0o077)
    context.call_on_close(lambda: os.umask(previous))
    try:
        read = apply_env_file(env_file) if os.path.isfile(env_file) else None
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    context.obj = EnvFile(os.path.abspath(env_file), read)
    # The server and the forwarder say it in their JSON logs.
    if context.invoked_subcommand not in ("serve", "forward"):
        for line in resemblance_warnings(os.environ):
            click.echo(f"warning: {line}", err=True)


@dataclass(frozen=True)
class EnvFile:
    """The dotenv file the command line read (`set` is None when there was none): the names
    it set, for messages that say where a setting came from."""

    path: str
    set: list[str] | None

    def origin(self, name: str) -> str:
        """Where the setting `name` came from, in a few words."""
        if self.set is not None and name in self.set:
            return f"{name} from {self.path}"
        if name in os.environ:
            return f"{name} from the environment"
        if self.set is None:
            return f"the default: {name} is not in the environment, and there is no {self.path}"
        return f"the default: {name} is neither in the environment nor in {self.path}"


def setting_origin(name: str) -> str:
    """Where the setting `name` of the running command came from, in a few words."""
    context = click.get_current_context(silent=True)
    env_file = None if context is None else context.find_root().obj
    if not isinstance(env_file, EnvFile):
        return f"{name} from the environment" if name in os.environ else "the default"
    return env_file.origin(name)


def described_database(url: str) -> str:
    """The database a command tried, as an error names it: the URL (password masked), the file
    a relative SQLite path means, and where DATABASE_URL came from."""
    shown = shown_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not os.path.isabs(parsed.database):
        shown += f" = {os.path.abspath(parsed.database)}"
    return f"{shown}; {setting_origin('DATABASE_URL')}"


def check_new_file(path: Path, if_it_exists: str | None) -> None:
    """A file a command is about to write: its folder must exist, and the file too unless
    `if_it_exists` is None (then it is replaced); else one line saying what to do."""
    if if_it_exists is not None and path.exists():
        raise click.ClickException(f"{path} exists; {if_it_exists}")
    if not path.absolute().parent.is_dir():
        raise click.ClickException(f"no folder {path.absolute().parent}: create it first")
