"""Settings read from the environment once, validated, and failing fast with one clear message."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from webhook_service.archive.stores import parse_archive_url
from webhook_service.signatures import Scheme, Verifier

DEFAULT_DATABASE_URL = "sqlite:///data/messages.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_BODY_BYTES_CEILING = 16 * 1024 * 1024
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_TOLERANCE_SECONDS = 7 * 24 * 3600
MIN_TOKEN_CHARS = 16
DEFAULT_BODY_READ_TIMEOUT_SECONDS = 10
DEFAULT_QUERY_BUDGET_MS = 2000
# Connections each worker process may hold (PostgreSQL): one per gunicorn thread.
DEFAULT_POOL_SIZE = 16
DEFAULT_FEED_MAX_WAITERS = 4
# RETENTION_DAYS at most: 100 years.
MAX_RETENTION_DAYS = 36_500
SUPPORTED_DATABASES = ("sqlite", "postgresql")
# PostgreSQL is reached through psycopg 3, whichever way the URL names it.
POSTGRES_DRIVERNAME = "postgresql+psycopg"


class ConfigError(ValueError):
    """A setting from the environment is malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the application reads from its environment."""

    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Out of the repr: a PostgreSQL URL holds a password.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    database_pool_size: int = DEFAULT_POOL_SIZE
    log_level: str = "INFO"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_TRUSTED_PROXIES)
    )
    public_keys: tuple[str, ...] = ()
    signature_schemes: frozenset[Scheme] = frozenset(Scheme)
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS
    body_read_timeout_seconds: int = DEFAULT_BODY_READ_TIMEOUT_SECONDS
    query_budget_ms: int = DEFAULT_QUERY_BUDGET_MS
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    feed_max_waiters: int = DEFAULT_FEED_MAX_WAITERS
    # Messages stored (created_at) longer ago than this many days are removed; None keeps all.
    retention_days: int | None = None
    # Where retention archives what it removes, first (a folder or s3://bucket/prefix); None: nowhere.
    archive_url: str | None = None

    def verifier(self) -> Verifier:
        """A Verifier for these secrets, keys and schemes (validated by from_env already)."""
        return Verifier(self.webhook_secrets, self.public_keys, self.signature_schemes, self.tolerance_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings; raises ConfigError naming the bad variable."""
        env = os.environ if environ is None else environ
        try:
            database_url = database_url_from_setting(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None
        settings = cls(
            webhook_secrets=_secrets_setting(env, "WEBHOOK_SECRET", "WEBHOOK_SECRET_FILE"),
            database_url=database_url,
            database_pool_size=parse_int(
                "DATABASE_POOL_SIZE", env.get("DATABASE_POOL_SIZE"), DEFAULT_POOL_SIZE, 1, 1000
            ),
            log_level=parse_log_level(env.get("LOG_LEVEL", "INFO")),
            max_body_bytes=parse_int(
                "MAX_BODY_BYTES", env.get("MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES, 1, MAX_BODY_BYTES_CEILING
            ),
            trusted_proxies=_parse_trusted_proxies(env.get("FORWARDED_ALLOW_IPS", DEFAULT_TRUSTED_PROXIES)),
            public_keys=split_list(env.get("WEBHOOK_PUBLIC_KEYS", "")),
            signature_schemes=_parse_schemes(env.get("SIGNATURE_SCHEMES")),
            tolerance_seconds=parse_int(
                "WEBHOOK_TOLERANCE_SECONDS",
                env.get("WEBHOOK_TOLERANCE_SECONDS"),
                DEFAULT_TOLERANCE_SECONDS,
                1,
                MAX_TOLERANCE_SECONDS,
            ),
            body_read_timeout_seconds=parse_int(
                "BODY_READ_TIMEOUT_SECONDS",
                env.get("BODY_READ_TIMEOUT_SECONDS"),
                DEFAULT_BODY_READ_TIMEOUT_SECONDS,
                1,
                300,
            ),
            query_budget_ms=parse_int(
                "QUERY_BUDGET_MS", env.get("QUERY_BUDGET_MS"), DEFAULT_QUERY_BUDGET_MS, 10, 60_000
            ),
            api_tokens=_tokens("API_TOKENS", _secrets_setting(env, "API_TOKENS", "API_TOKENS_FILE")),
            metrics_token=next(iter(_tokens("METRICS_TOKEN", split_list(env.get("METRICS_TOKEN", ""), None))), None),
            feed_max_waiters=parse_int(
                "FEED_MAX_WAITERS", env.get("FEED_MAX_WAITERS"), DEFAULT_FEED_MAX_WAITERS, 0, 1000
            ),
            retention_days=_optional_int(env, "RETENTION_DAYS", 1, MAX_RETENTION_DAYS),
            archive_url=_archive_url(env.get("ARCHIVE_URL")),
        )
        _check_keys(settings)
        return settings


@dataclass(frozen=True)
class ServerSettings:
    """The gunicorn-facing settings: listen address and port, and worker count."""

    port: int = 8000
    workers: int | None = None
    host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read HOST, PORT and WEB_CONCURRENCY; raises ConfigError naming the bad variable."""
        env = os.environ if environ is None else environ
        workers_value = env.get("WEB_CONCURRENCY")
        host = (env.get("HOST") or "0.0.0.0").strip()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"HOST: expected an IP address to listen on, got {host!r}") from None
        return cls(
            port=parse_int("PORT", env.get("PORT"), 8000, 1, 65535),
            workers=None if not workers_value else parse_int("WEB_CONCURRENCY", workers_value, 1, 1, 256),
            host=host,
        )


def database_url_from_setting(value: str) -> str:
    """Turn DATABASE_URL (a SQLAlchemy URL or a bare file path) into a URL; raises ValueError."""
    text = value.strip()
    if "://" not in text:
        if text in ("", ":memory:"):
            raise ValueError("an in-memory or empty SQLite path would lose every message at restart")
        return f"sqlite:///{text}"
    try:
        url = make_url(text)
    except ArgumentError:
        # Not echoed: it may hold a password.
        raise ValueError(
            "not a database URL; expected sqlite:////path/to/file.db, a file path, or "
            "postgresql://user:password@host:5432/db"
        ) from None
    if url.get_backend_name() not in SUPPORTED_DATABASES:
        raise ValueError(f"unsupported database {url.get_backend_name()!r}; supported: sqlite, postgresql")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database would lose every message at restart; name a file")
    if url.get_backend_name() == "postgresql":
        if url.drivername not in ("postgresql", POSTGRES_DRIVERNAME):
            raise ValueError(
                f"unsupported PostgreSQL driver {url.get_driver_name()!r}: use postgresql:// or postgresql+psycopg://"
            )
        if not url.database:
            raise ValueError("a PostgreSQL URL must name the database: postgresql://user:password@host:5432/db")
        return url.set(drivername=POSTGRES_DRIVERNAME).render_as_string(hide_password=False)
    return text


def shown_database_url(url: str) -> str:
    """A database URL as it may be printed or logged: its password masked."""
    return make_url(url).render_as_string(hide_password=True)


def parse_int(name: str, value: str | None, default: int, minimum: int, maximum: int) -> int:
    """Parse a whole number within bounds; raises ConfigError naming the variable."""
    if value is None or value.strip() == "":
        return default
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise ConfigError(f"{name}: expected a whole number, got {value!r}")
    number = int(text)
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name}: expected {minimum}..{maximum}, got {number}")
    return number


def _archive_url(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    try:
        parse_archive_url(value.strip())
    except ValueError as exc:
        raise ConfigError(f"ARCHIVE_URL: {exc}") from None
    return value.strip()


def _optional_int(env: Mapping[str, str], name: str, minimum: int, maximum: int) -> int | None:
    """A whole number within bounds, or None when the variable is unset or empty."""
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return parse_int(name, value, minimum, minimum, maximum)


def parse_log_level(value: str) -> str:
    """Accept a standard level name in any case; raises ConfigError otherwise."""
    level = value.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
    return level


def parse_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse a comma-separated list of addresses or networks; raises ValueError."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in value.split(",") if item.strip())


def _parse_trusted_proxies(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if value.strip() == "*":
        raise ConfigError("FORWARDED_ALLOW_IPS: '*' would let any client forge its address; list the proxies")
    try:
        return parse_networks(value)
    except ValueError as exc:
        raise ConfigError(f"FORWARDED_ALLOW_IPS: {exc}") from None


def split_list(value: str, separator: str | None = ",") -> tuple[str, ...]:
    """The non-empty, stripped items of a list setting (one item when `separator` is None)."""
    items = [value] if separator is None else value.split(separator)
    return tuple(item.strip() for item in items if item.strip())


def _secrets_setting(env: Mapping[str, str], name: str, file_name: str) -> tuple[str, ...]:
    # NAME holds comma-separated values; NAME_FILE a file with one a line (Docker secrets).
    inline, path = env.get(name, ""), env.get(file_name, "")
    if inline.strip() and path.strip():
        raise ConfigError(f"{name} and {file_name} are both set; set one of them")
    if not path.strip():
        return split_list(inline)
    try:
        with open(path.strip(), encoding="utf-8") as file:
            return split_list(file.read(), separator="\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file_name}: cannot read {path.strip()!r}: {type(exc).__name__}") from None


def _tokens(name: str, tokens: tuple[str, ...]) -> tuple[str, ...]:
    for token in tokens:
        # Never echo a token: the message names the variable and the rule only.
        if len(token) < MIN_TOKEN_CHARS or any(ch.isspace() or not ch.isprintable() for ch in token):
            raise ConfigError(f"{name}: every token needs at least {MIN_TOKEN_CHARS} printable characters, no spaces")
    return tokens


def _parse_schemes(value: str | None) -> frozenset[Scheme]:
    if value is None or not value.strip():
        return frozenset(Scheme)
    names = split_list(value)
    try:
        return frozenset(Scheme(name.lower()) for name in names)
    except ValueError:
        raise ConfigError(f"SIGNATURE_SCHEMES: expected standard, legacy or both, got {value!r}") from None


def _check_keys(settings: Settings) -> None:
    try:
        settings.verifier()
    except ValueError as exc:
        # The message says what is wrong with the key's form, never the key itself.
        raise ConfigError(f"WEBHOOK_SECRET / WEBHOOK_PUBLIC_KEYS: {exc}") from None


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """The `NAME=value` lines of a dotenv file (`make run` writes `.env`).

    Blank lines and `#` comments are skipped, an `export ` prefix is allowed, and a value
    wrapped in matching single or double quotes loses them (no escapes, no expansion).
    A missing file is empty; a line that is not an assignment raises ConfigError naming it.
    """
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {os.fspath(path)}: {getattr(error, 'strerror', None) or error}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier():
            raise ConfigError(f"{os.fspath(path)} line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def apply_env_file(path: str | os.PathLike, environ: dict[str, str] | None = None) -> list[str]:
    """Set the variables of a dotenv file that the environment does not set (the
    environment wins); returns the names it set."""
    env = os.environ if environ is None else environ
    added = []
    for name, value in read_env_file(path).items():
        if name not in env:
            env[name] = value
            added.append(name)
    return added


# Every variable the server, the forwarder or the command line reads.
SETTING_NAMES = frozenset(
    {
        "API_TOKENS",
        "API_TOKENS_FILE",
        "ARCHIVE_URL",
        "BODY_READ_TIMEOUT_SECONDS",
        "DATABASE_POOL_SIZE",
        "DATABASE_URL",
        "FEED_MAX_WAITERS",
        "FORWARDED_ALLOW_IPS",
        "FORWARD_CONFIG",
        "HOST",
        "LOG_LEVEL",
        "MAX_BODY_BYTES",
        "METRICS_TOKEN",
        "PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "QUERY_BUDGET_MS",
        "RETENTION_DAYS",
        "SIGNATURE_SCHEMES",
        "WEBHOOK_PUBLIC_KEYS",
        "WEBHOOK_SECRET",
        "WEBHOOK_SECRET_FILE",
        "WEBHOOK_SERVICE_ENV_FILE",
        "WEBHOOK_TOLERANCE_SECONDS",
        "WEB_CONCURRENCY",
    }
)
# A variable starting with one of these is meant for this service.
_SETTING_PREFIXES = ("WEBHOOK_", "SIGNATURE_", "RETENTION_", "ARCHIVE_", "FEED_", "QUERY_BUDGET", "API_TOKEN")


def resembled_settings(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(variable, the setting it resembles or None) for each variable of `environ` that is not
    a setting but looks meant as one: a setting's name in another case, within one edit of a
    setting (two for names of 8 characters or more), or starting with a setting's prefix.
    Sorted by variable."""
    found = []
    for name in sorted(environ):
        if name in SETTING_NAMES:
            continue
        nearest = min(SETTING_NAMES, key=lambda setting: (_edits(name.upper(), setting), setting))
        allowed = 2 if min(len(name), len(nearest)) >= 8 else 1
        if _edits(name.upper(), nearest) <= allowed:
            found.append((name, nearest))
        elif name.upper().startswith(_SETTING_PREFIXES):
            found.append((name, None))
    return found


def _edits(first: str, second: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions from one to the other."""
    if abs(len(first) - len(second)) > 2:
        return 3  # more than any allowed difference: not worth counting
    previous = list(range(len(second) + 1))
    for row, left in enumerate(first, start=1):
        current = [row]
        for column, right in enumerate(second, start=1):
            current.append(min(previous[column] + 1, current[column - 1] + 1, previous[column - 1] + (left != right)))
        previous = current
    return previous[-1]


def resemblance_warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per variable that looks meant as a setting but is not one (it is ignored)."""
    lines = []
    for name, setting in resembled_settings(environ):
        guess = f"did you mean {setting}?" if setting else "no setting has this name"
        lines.append(f"{name} is not a setting and is ignored: {guess}")
    return lines
