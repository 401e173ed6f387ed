"""One logging setup: structlog, Flask, gunicorn and library records all become JSON lines.

`logging_config()` is used both by the application and by gunicorn's `logconfig_dict`, so
the master's and the workers' lines share one shape. structlog's own events are rendered
once, by structlog, into the finished line, and handed to stdlib logging as such (every
request writes one, so that path is kept short); records from other libraries are
rendered by the same processors in the handler's formatter.
"""

from __future__ import annotations

import logging
import logging.config
import re

import structlog


def _uppercase_level(_logger, _method, event_dict: dict) -> dict:
    if "level" in event_dict:
        event_dict["level"] = event_dict["level"].upper()
    return event_dict


def _drop_stdlib_noise(_logger, _method, event_dict: dict) -> dict:
    event_dict.pop("color_message", None)
    return event_dict


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape_control(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


def _escape_control_characters(_logger, _method, event_dict: dict) -> dict:
    # Paths, ids and headers come from clients: an escape sequence in them must not reach a
    # terminal that shows the log (`jq -r` would print it raw). Tracebacks keep their lines.
    for key, value in event_dict.items():
        if key != "exception" and isinstance(value, str) and _CONTROL_CHARACTERS.search(value):
            event_dict[key] = _CONTROL_CHARACTERS.sub(_escape_control, value)
    return event_dict


def _leading_keys_first(_logger, _method, event_dict: dict) -> dict:
    ordered = {key: event_dict.pop(key) for key in ("ts", "level", "event") if key in event_dict}
    ordered.update(event_dict)
    return ordered


SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    _uppercase_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
]


# The end of every line: plain tracebacks (frame locals would dump the WSGI environ and
# request data), client-supplied control characters escaped, ts/level/event first, JSON.
RENDERING_PROCESSORS = [
    structlog.processors.format_exc_info,
    _escape_control_characters,
    _leading_keys_first,
    structlog.processors.JSONRenderer(default=str),
]
# Marks a stdlib record whose message is a line structlog has rendered already.
_RENDERED = "webhook_service_rendered"


def _hand_rendered_line_to_stdlib(_logger, _method, line: str) -> tuple[tuple, dict]:
    return (line,), {"extra": {_RENDERED: True}}


class JsonLineFormatter(structlog.stdlib.ProcessorFormatter):
    """Writes structlog's finished lines as they are and renders any other record the same way."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return record.msg
        return super().format(record)


def json_formatter() -> logging.Formatter:
    """A stdlib formatter rendering every record, structlog's or not, as one JSON object."""
    return JsonLineFormatter(
        foreign_pre_chain=[*SHARED_PROCESSORS, structlog.stdlib.PositionalArgumentsFormatter()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_stdlib_noise,
            *RENDERING_PROCESSORS,
        ],
    )


def logging_config(level: str) -> dict:
    """A complete dictConfig: gunicorn merges it shallowly, so every section is given."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": [], "propagate": True, "level": level},
            # The application writes its own line per request, with more fields.
            "gunicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            # One line per plugin alembic loads, at every start: only its warnings.
            "alembic.runtime.plugins": {"handlers": [], "propagate": True, "level": "WARNING"},
        },
    }


def configure_logging(level: str) -> None:
    """Route structlog through stdlib logging and render all of it as JSON on stdout.

    When the JSON handler is in place already (gunicorn set it up from the same config, or
    an earlier app did), only the levels change; other handlers are left alone.
    """
    # Python warnings become log records too, not plain text on stderr (in the gunicorn master
    # as well: gunicorn.conf.py calls this before migrating).
    logging.captureWarnings(True)
    root = logging.getLogger()
    if any(isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter) for handler in root.handlers):
        root.setLevel(level)
        logging.getLogger("gunicorn.error").setLevel(level)
    else:
        logging.config.dictConfig(logging_config(level))
    # Records need not say which source line logged them (no line does): finding it walks
    # the stack on every call (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *RENDERING_PROCESSORS,
            _hand_rendered_line_to_stdlib,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
