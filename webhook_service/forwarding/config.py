"""The forwarder's TOML file: its destinations, each checked field by field.

A bad file raises ForwardConfigError with one line naming the destination and the field.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from webhook_service.forwarding.policy import ORDER_NONE, ORDERS, Match, Policy
from webhook_service.signatures import SIGNING_KEY_PREFIX, secret_key_bytes
from webhook_service.storage.forwarding import START_BEGINNING, START_LATEST
from webhook_service.storage.messages import fold_text

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
KNOWN_FIELDS = {
    "url",
    "secret",
    "secret_file",
    "ca_file",
    "match",
    "headers",
    "header_files",
    "bearer_token_file",
    "client_cert_file",
    "client_key_file",
    "rate_per_second",
    "order",
    "subject",
    "exchange",
    "routing_key",
    "user",
    "password_file",
    "token_file",
    "creds_file",
    *DEFAULTS,
}
HTTP_SCHEMES = ("http", "https")
NATS_SCHEMES = ("nats", "tls")
AMQP_SCHEMES = ("amqp", "amqps")
# Fields that only one kind of destination takes.
HTTP_ONLY = ("headers", "header_files", "bearer_token_file", "client_cert_file", "client_key_file")
BROKER_ONLY = {
    "nats": ("subject", "user", "password_file", "token_file", "creds_file"),
    "amqp": ("exchange", "routing_key", "user", "password_file"),
}
KIND_FIELDS = set(HTTP_ONLY).union(*BROKER_ONLY.values())
NATS_SUBJECT = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*")
MATCH_FIELDS = ("from", "to", "text_contains")
MAX_MATCH_ENTRIES = 1000
MAX_RATE_PER_SECOND = 100_000
# Headers the forwarder writes itself, and hop-by-hop ones (RFC 9110 7.6.1): never replaced.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
NUMBER_PATTERN = re.compile(r"\+[0-9]{1,15}|\+[0-9]{0,15}\*")
MAX_HEADER_VALUE = 8192


class ForwardConfigError(ValueError):
    """The file is not a forwarder configuration; the message says where, in one line."""


@dataclass(frozen=True)
class Destination:
    """One consumer the forwarder delivers every stored message to."""

    name: str
    url: str
    secret: str | None = field(repr=False)  # None: a broker destination without signatures
    start: str = START_LATEST
    timeout_seconds: float = 10
    concurrency: int = 4
    max_attempts: int = 15
    max_age_seconds: float = 259_200
    backoff_initial_seconds: float = 5
    backoff_max_seconds: float = 3600
    ca_file: str | None = None
    # Sent with every attempt, after the file holding a value was read at start (never logged).
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    client_cert_file: str | None = None
    client_key_file: str | None = None
    rate_per_second: float | None = None
    policy: Policy = field(default_factory=Policy)
    broker: Broker | None = None  # a NATS JetStream or AMQP destination, None for HTTP

    @property
    def kind(self) -> str:
        """http, nats or amqp."""
        return "http" if self.broker is None else self.broker.kind


@dataclass(frozen=True)
class Broker:
    """Where a broker destination publishes, and as whom (secrets read from their files)."""

    kind: str  # nats or amqp
    subject: str | None = None  # NATS
    exchange: str | None = None  # AMQP ("" is the default exchange)
    routing_key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: str | None = None


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
    url = _url(where, values.get("url"))
    kind = _kind(url)
    own = set(HTTP_ONLY) if kind == "http" else set(BROKER_ONLY[kind])
    for field_name in sorted(KIND_FIELDS - own):
        if field_name in table:
            raise ForwardConfigError(f"{where}: {field_name}: not a field of {kind} destinations")
    client_certificate = _client_certificate(where, values)
    return Destination(
        name=name,
        url=url,
        secret=_secret(where, values) if kind == "http" or "secret" in values or "secret_file" in values else None,
        broker=None if kind == "http" else _broker(where, kind, values),
        start=_choice(where, "start", values["start"], (START_LATEST, START_BEGINNING)),
        timeout_seconds=_number(where, "timeout_seconds", values["timeout_seconds"], 0.1, MAX_TIMEOUT_SECONDS),
        concurrency=_whole(where, "concurrency", values["concurrency"], 1, MAX_CONCURRENCY),
        max_attempts=_whole(where, "max_attempts", values["max_attempts"], 1, 10_000),
        max_age_seconds=_number(where, "max_age_seconds", values["max_age_seconds"], 1, 10 * 365 * 86_400),
        backoff_initial_seconds=_number(
            where, "backoff_initial_seconds", values["backoff_initial_seconds"], 0.01, 86_400
        ),
        backoff_max_seconds=_backoff_max(where, values),
        ca_file=_file(where, "ca_file", values.get("ca_file")),
        headers=_headers(where, values),
        client_cert_file=client_certificate[0],
        client_key_file=client_certificate[1],
        rate_per_second=None if values.get("rate_per_second") is None else _rate(where, values["rate_per_second"]),
        policy=Policy(
            match=_match(where, values.get("match")),
            order=_choice(where, "order", values.get("order", ORDER_NONE), ORDERS),
        ),
    )


def _kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    return "nats" if scheme in NATS_SCHEMES else "amqp" if scheme in AMQP_SCHEMES else "http"


def _broker(where: str, kind: str, values: dict) -> Broker:
    user, password_file = values.get("user"), values.get("password_file")
    if (user is None) != (password_file is None):
        raise ForwardConfigError(f"{where}: user: give user and password_file together")
    if user is not None and (not isinstance(user, str) or not user or len(user) > 256):
        raise ForwardConfigError(f"{where}: user: expected a name of 1 to 256 characters")
    password = None if password_file is None else _one_line(where, "password_file", password_file)
    if kind == "nats":
        subject = values.get("subject")
        if not isinstance(subject, str) or len(subject) > 256 or not NATS_SUBJECT.fullmatch(subject):
            raise ForwardConfigError(
                f"{where}: subject: expected a NATS subject such as messages.inbound (no wildcards)"
            )
        credentials = [name for name in ("password_file", "token_file", "creds_file") if values.get(name) is not None]
        if len(credentials) > 1:
            raise ForwardConfigError(
                f"{where}: {credentials[1]}: give one of user + password_file, token_file, creds_file"
            )
        token = None if values.get("token_file") is None else _one_line(where, "token_file", values["token_file"])
        creds = _creds(where, values.get("creds_file"))
        return Broker("nats", subject=subject, user=user, password=password, token=token, creds_file=creds)
    exchange, routing_key = values.get("exchange"), values.get("routing_key")
    if not isinstance(exchange, str) or len(exchange) > 255:
        raise ForwardConfigError(f'{where}: exchange: expected an exchange name ("" for the default exchange)')
    if not isinstance(routing_key, str) or len(routing_key) > 255:
        raise ForwardConfigError(f"{where}: routing_key: expected a routing key of at most 255 characters")
    return Broker("amqp", exchange=exchange, routing_key=routing_key, user=user, password=password)


def _url(where: str, value: Any) -> str:
    if value is None:
        raise ForwardConfigError(f"{where}: url: required")
    expected = (
        f"{where}: url: expected an http:// or https:// URL with a host "
        "(or nats://, tls://, amqp://, amqps:// for a broker)"
    )
    if not isinstance(value, str):
        raise ForwardConfigError(expected)
    if any(character.isspace() or ord(character) < 32 or ord(character) == 127 for character in value):
        raise ForwardConfigError(f"{where}: url: holds whitespace or a control character")
    parts = urlsplit(value)
    if parts.scheme not in HTTP_SCHEMES + NATS_SCHEMES + AMQP_SCHEMES or not parts.hostname:
        raise ForwardConfigError(expected)
    if parts.username is not None or parts.password is not None:
        raise ForwardConfigError(f"{where}: url: holds a user or password; use headers or bearer_token_file")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise ForwardConfigError(f"{where}: url: the port must be a number from 1 to 65535")
    return value


def _secret(where: str, values: dict) -> str:
    inline, path = values.get("secret"), values.get("secret_file")
    if (inline is None) == (path is None):
        raise ForwardConfigError(f"{where}: secret: give secret or secret_file, one of them")
    if path is not None:
        if not isinstance(path, str):
            raise ForwardConfigError(f"{where}: secret_file: expected a path")
        inline = _line_of(where, "secret_file", path, "secret")
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


def _file(where: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not Path(value).is_file():
        raise ForwardConfigError(f"{where}: {name}: no such file")
    return value


# A .creds file (what nsc writes): the user's JWT and the nkey seed that signs the server's nonce.
CREDS_MARKERS = ("BEGIN NATS USER JWT", "BEGIN USER NKEY SEED")
MAX_CREDS_BYTES = 64 * 1024


def _creds(where: str, path: Any) -> str | None:
    """The path of a readable NATS .creds file; errors never show what it holds."""
    if _file(where, "creds_file", path) is None:
        return None
    text = _text_of(where, "creds_file", path, MAX_CREDS_BYTES + 1)
    if len(text) > MAX_CREDS_BYTES or not all(marker in text for marker in CREDS_MARKERS):
        raise ForwardConfigError(
            f"{where}: creds_file: {path} is not a NATS .creds file (a user JWT and its nkey seed, as nsc writes)"
        )
    return path


def _text_of(where: str, name: str, path: str, limit: int = -1) -> str:
    """The file's text (UTF-8; its first `limit` bytes when given); errors name the field, never the text."""
    try:
        with open(path, "rb") as file:
            return file.read(limit).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ForwardConfigError(f"{where}: {name}: cannot read {path}: {type(error).__name__}") from None


def _one_line(where: str, name: str, path: Any) -> str:
    """The value held by an existing file (one line; surrounding whitespace dropped), never echoed."""
    return _line_of(where, name, _file(where, name, path))


def _line_of(where: str, name: str, path: str, what: str = "value") -> str:
    """The one non-blank line of the file at `path`, stripped; errors name the field, never the value."""
    lines = [line.strip() for line in _text_of(where, name, path).splitlines() if line.strip()]
    if len(lines) != 1:
        raise ForwardConfigError(f"{where}: {name}: expected one {what} on one line in {path}")
    return lines[0]


def _headers(where: str, values: dict) -> dict[str, str]:
    headers: dict[str, str] = {}
    for field_name in ("headers", "header_files"):
        table = values.get(field_name, {})
        if not isinstance(table, dict):
            raise ForwardConfigError(f"{where}: {field_name}: expected a table of header = value")
        for name, value in table.items():
            here = f"{field_name}.{name}"
            if not HEADER_NAME.fullmatch(name):
                raise ForwardConfigError(f"{where}: {here}: not a header name")
            if name.lower() in RESERVED_HEADERS:
                raise ForwardConfigError(f"{where}: {here}: the forwarder sets this header itself; it is not replaced")
            if name.lower() in {existing.lower() for existing in headers}:
                raise ForwardConfigError(f"{where}: {here}: given twice")
            if field_name == "header_files":
                value = _one_line(where, here, value)
            headers[name] = _header_value(where, here, value)
    token_file = values.get("bearer_token_file")
    if token_file is not None:
        if "authorization" in {existing.lower() for existing in headers}:
            raise ForwardConfigError(f"{where}: bearer_token_file: an Authorization header is given as well")
        headers["Authorization"] = "Bearer " + _header_value(
            where, "bearer_token_file", _one_line(where, "bearer_token_file", token_file)
        )
    return headers


def _header_value(where: str, name: str, value: Any) -> str:
    # Never the value in a message: only what is wrong with its form.
    if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
        raise ForwardConfigError(f"{where}: {name}: expected a string of at most {MAX_HEADER_VALUE} characters")
    if any(ord(character) < 32 and character != "\t" or ord(character) == 127 for character in value):
        raise ForwardConfigError(f"{where}: {name}: the value holds a control character")
    if not value.isascii():
        raise ForwardConfigError(f"{where}: {name}: the value must be ASCII")
    return value


def _client_certificate(where: str, values: dict) -> tuple[str | None, str | None]:
    certificate, key = values.get("client_cert_file"), values.get("client_key_file")
    if (certificate is None) != (key is None):
        raise ForwardConfigError(f"{where}: client_cert_file: give client_cert_file and client_key_file together")
    certificate, key = _file(where, "client_cert_file", certificate), _file(where, "client_key_file", key)
    if certificate is not None:
        try:
            ssl.create_default_context().load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as error:
            raise ForwardConfigError(
                f"{where}: client_cert_file: not a certificate with its key ({type(error).__name__})"
            ) from None
    return certificate, key


def _rate(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_RATE_PER_SECOND:
        raise ForwardConfigError(
            f"{where}: rate_per_second: expected a number above 0 and at most {MAX_RATE_PER_SECOND}"
        )
    return float(value)


def _match(where: str, table: Any) -> Match | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ForwardConfigError(f"{where}: match: expected a table with from, to or text_contains")
    unknown = set(table) - set(MATCH_FIELDS)
    if unknown:
        raise ForwardConfigError(f"{where}: match.{min(unknown)}: unknown field; expected from, to or text_contains")
    lists = {}
    for name in MATCH_FIELDS:
        entries = table.get(name, [])
        if not isinstance(entries, list) or len(entries) > MAX_MATCH_ENTRIES or (name in table and not entries):
            raise ForwardConfigError(f"{where}: match.{name}: expected a list of 1 to {MAX_MATCH_ENTRIES} strings")
        for entry in entries:
            if name == "text_contains":
                if not isinstance(entry, str) or not entry or len(entry) > 1000:
                    raise ForwardConfigError(f"{where}: match.text_contains: expected texts of 1 to 1000 characters")
            elif not isinstance(entry, str) or not NUMBER_PATTERN.fullmatch(entry):
                raise ForwardConfigError(
                    f"{where}: match.{name}: expected E.164 numbers ('+' then 1 to 15 digits) or prefixes ending in *"
                )
        lists[name] = tuple(fold_text(entry) for entry in entries) if name == "text_contains" else tuple(entries)
    if not any(lists.values()):
        raise ForwardConfigError(f"{where}: match: give at least one of from, to or text_contains")
    return Match(lists["from"], lists["to"], lists["text_contains"])
