"""Commands that sign a body as a sender does, and send it."""

from __future__ import annotations

import secrets
import sys
import time
import urllib.error
import urllib.request

import click

from webhook_service.cli.common import (
    load_settings,
    main,
    read_body,
)
from webhook_service.signatures import LEGACY_HEADER, sign_legacy, standard_headers


def _signed_headers(body: bytes, scheme: str, key: str | None, message_id: str | None, timestamp: int | None) -> dict:
    if key is None:
        configured = load_settings().webhook_secrets
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
    for name, value in _signed_headers(read_body(source), scheme, key, message_id, timestamp).items():
        click.echo(f"{name}: {value}")


@main.command()
@click.argument("url")
@click.argument("source", default="-", metavar="[FILE|-]")
@_sign_options
def send(url: str, source: str, scheme: str, key: str | None, message_id: str | None, timestamp: int | None) -> None:
    """Sign the body in FILE (or stdin), POST it to URL, print the answer; exit 0 only on 2xx."""
    body = read_body(source)
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
