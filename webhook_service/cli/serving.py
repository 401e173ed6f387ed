"""`webhook-service serve`: the server, from an installed package in any folder."""

from __future__ import annotations

import os
import sys

import click

from webhook_service.cli.common import EnvFile, main
from webhook_service.config import ConfigError, ServerSettings, Settings

# The configuration inside the package: the same settings and hooks as the checkout's
# gunicorn.conf.py (migrations once, shared memory, metrics, JSON logs, head-first worker).
GUNICORN_CONFIG = "python:webhook_service.gunicorn_conf"
WSGI_APP = "webhook_service.wsgi:app"


@main.command()
@click.option("--bind", metavar="ADDRESS:PORT", help="where to listen  [default: HOST:PORT, 0.0.0.0:8000]")
@click.option("--workers", type=click.IntRange(1, 256), help="worker processes  [default: WEB_CONCURRENCY, cores + 1]")
@click.pass_context
def serve(context: click.Context, bind: str | None, workers: int | None) -> None:
    """Serve the API with gunicorn until SIGTERM (migrating the database first)."""
    try:
        # Checked here, where a bad value is one line: gunicorn itself reads WEB_CONCURRENCY
        # when imported, and a value that is not a number stops it with a traceback.
        ServerSettings.from_env()
        Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None
    env_file: EnvFile = context.find_root().obj
    # The server reads the same file itself, and its start line names what it took from it.
    for name in env_file.set or ():
        del os.environ[name]
    os.environ["WEBHOOK_SERVICE_ENV_FILE"] = env_file.path
    command = [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG]
    if bind is not None:
        command += ["--bind", bind]
    if workers is not None:
        command += ["--workers", str(workers)]
    sys.stdout.flush()
    sys.stderr.flush()
    # This process becomes gunicorn's master (same pid: a supervisor's SIGTERM reaches it),
    # a new interpreter that imports the metrics library only once its folder is set.
    os.execv(sys.executable, [*command, WSGI_APP])
