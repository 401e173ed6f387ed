"""Settings read from the environment once, validated, and failing fast with one clear message."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from webhook_service.storage.engine import database_url_from_setting

DEFAULT_DATABASE_URL = "sqlite:///data/messages.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_BODY_BYTES_CEILING = 16 * 1024 * 1024
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"


class ConfigError(ValueError):
    """A setting from the environment is malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the application reads from its environment."""

    webhook_secret: str | None
    database_url: str = DEFAULT_DATABASE_URL
    log_level: str = "INFO"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_TRUSTED_PROXIES)
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings; raises ConfigError naming the bad variable."""
        env = os.environ if environ is None else environ
        secret = env.get("WEBHOOK_SECRET") or None
        try:
            database_url = database_url_from_setting(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None
        return cls(
            webhook_secret=secret,
            database_url=database_url,
            log_level=parse_log_level(env.get("LOG_LEVEL", "INFO")),
            max_body_bytes=parse_int(
                "MAX_BODY_BYTES", env.get("MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES, 1, MAX_BODY_BYTES_CEILING
            ),
            trusted_proxies=_parse_trusted_proxies(env.get("FORWARDED_ALLOW_IPS", DEFAULT_TRUSTED_PROXIES)),
        )


@dataclass(frozen=True)
class ServerSettings:
    """The gunicorn-facing settings: listen port and worker count."""

    port: int = 8000
    workers: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read PORT and WEB_CONCURRENCY; raises ConfigError naming the bad variable."""
        env = os.environ if environ is None else environ
        workers_value = env.get("WEB_CONCURRENCY")
        return cls(
            port=parse_int("PORT", env.get("PORT"), 8000, 1, 65535),
            workers=None if not workers_value else parse_int("WEB_CONCURRENCY", workers_value, 1, 1, 256),
        )


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
