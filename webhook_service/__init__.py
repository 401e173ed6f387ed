"""Webhook ingestion and query service: a Flask application assembled by create_app().

Importing the package imports nothing else: the server's configuration
(webhook_service.gunicorn_conf) must set up the metrics folder before the application and
its metrics library are imported.
"""

from webhook_service.version import __version__

__all__ = ["__version__", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from webhook_service.app import create_app

        return create_app
    raise AttributeError(f"module 'webhook_service' has no attribute {name!r}")
