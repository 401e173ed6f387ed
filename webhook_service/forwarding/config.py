"""The forwarder's TOML file: its destinations, each checked field by field.

A bad file raises ForwardConfigError with one line naming the destination and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from webhook_service.signatures import SIGNING_KEY_PREFIX, secret_key_bytes
from webhook_service.storage.forwarding import START_BEGINNING, START_LATEST

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TIMEOUT_SECONDS = 300
MAX_CONCURRENCY = 256
DEFAULTS = {
    "start": START_LATEST,
    "timeout_seconds": 10,
    "concurrency": 4,
    "max_attempts": 15,
    "max_age_seconds": 259_200,
    "backoff_initial_seconds": 5,
    "backoff_max_seconds": 3600,
}
KNOWN_FIELDS = {"url", "secret", "secret_file", "ca_file", *DEFAULTS}


class ForwardConfigError(ValueError):
    """The file is not a forwarder configuration; the message says where, in one line."""


@dataclass(frozen=True)
class Destination:
    """One consumer the forwarder delivers every stored message to."""

    name: str
    url: str
    secret: str = field(repr=False)
    start: str = START_LATEST
    timeout_seconds: float = 10
    concurrency: int = 4
    max_attempts: int = 15
    max_age_seconds: float = 259_200
    backoff_initial_seconds: float = 5
    backoff_max_seconds: float = 3600
    ca_file: str | None = None


def load_config(path: str | Path) -> list[Destination]:
    """The destinations of a TOML file; raises ForwardConfigError."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ForwardConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ForwardConfigError(f"{path}: not TOML: {error}") from None
    unknown = set(document) - {"destinations"}
    if unknown:
        raise ForwardConfigError(f"{path}: unknown section {min(unknown)!r}; expected [destinations.NAME]")
    tables = document.get("destinations")
    if not isinstance(tables, dict) or not tables:
        raise ForwardConfigError(f"{path}: no destinations: add a [destinations.NAME] table")
    return [_destination(name, table) for name, table in tables.items()]


def _destination(name: str, table: Any) -> Destination:
    where = f"destination {name!r}"
    if not NAME_PATTERN.fullmatch(name):
        raise ForwardConfigError(f"{where}: the name must be 1 to 64 letters, digits, '_', '.' or '-'")
    if not isinstance(table, dict):
        raise ForwardConfigError(f"{where}: expected a table of fields")
    unknown = set(table) - KNOWN_FIELDS
    if unknown:
        raise ForwardConfigError(f"{where}: {min(unknown)}: unknown field")
    values = {**DEFAULTS, **table}
    return Destination(
        name=name,
        url=_url(where, values.get("url")),
        secret=_secret(where, values),
        start=_choice(where, "start", values["start"], (START_LATEST, START_BEGINNING)),
        timeout_seconds=_number(where, "timeout_seconds", values["timeout_seconds"], 0.1, MAX_TIMEOUT_SECONDS),
        concurrency=_whole(where, "concurrency", values["concurrency"], 1, MAX_CONCURRENCY),
        max_attempts=_whole(where, "max_attempts", values["max_attempts"], 1, 10_000),
        max_age_seconds=_number(where, "max_age_seconds", values["max_age_seconds"], 1, 10 * 365 * 86_400),
        backoff_initial_seconds=_number(
            where, "backoff_initial_seconds", values["backoff_initial_seconds"], 0.01, 86_400
        ),
        backoff_max_seconds=_backoff_max(where, values),
        ca_file=_ca_file(where, values.get("ca_file")),
    )


def _url(where: str, value: Any) -> str:
    if value is None:
        raise ForwardConfigError(f"{where}: url: required")
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForwardConfigError(f"{where}: url: expected an http:// or https:// URL with a host")
    return value


def _secret(where: str, values: dict) -> str:
    inline, path = values.get("secret"), values.get("secret_file")
    if (inline is None) == (path is None):
        raise ForwardConfigError(f"{where}: secret: give secret or secret_file, one of them")
    if path is not None:
        if not isinstance(path, str):
            raise ForwardConfigError(f"{where}: secret_file: expected a path")
        try:
            lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise ForwardConfigError(f"{where}: secret_file: cannot read {path}: {type(error).__name__}") from None
        if len(lines) != 1:
            raise ForwardConfigError(f"{where}: secret_file: expected one secret on one line in {path}")
        inline = lines[0]
    if not isinstance(inline, str) or not inline.strip():
        raise ForwardConfigError(f"{where}: secret: expected a non-empty string")
    if inline.startswith(SIGNING_KEY_PREFIX):
        raise ForwardConfigError(f"{where}: secret: a shared secret (whsec_...) signs v1; a whsk_ key does not")
    try:
        secret_key_bytes(inline)
    except ValueError as error:
        # Never the secret itself: what is wrong with its form only.
        raise ForwardConfigError(f"{where}: secret: {error}") from None
    return inline


def _choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ForwardConfigError(f"{where}: {name}: expected one of {', '.join(choices)}")
    return value


def _number(where: str, name: str, value: Any, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
        raise ForwardConfigError(f"{where}: {name}: expected a number from {minimum:g} to {maximum:g}")
    return float(value)


def _whole(where: str, name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ForwardConfigError(f"{where}: {name}: expected a whole number from {minimum} to {maximum}")
    return value


def _backoff_max(where: str, values: dict) -> float:
    maximum = _number(where, "backoff_max_seconds", values["backoff_max_seconds"], 0.01, 7 * 86_400)
    if maximum < values["backoff_initial_seconds"]:
        raise ForwardConfigError(f"{where}: backoff_max_seconds: must be at least backoff_initial_seconds")
    return maximum


def _ca_file(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not Path(value).is_file():
        raise ForwardConfigError(f"{where}: ca_file: no such file")
    return value
