"""WSGI entry point of a checkout: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from webhook_service.wsgi import app

__all__ = ["app"]
