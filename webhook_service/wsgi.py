"""WSGI entry point: `webhook-service serve`, or `gunicorn -c python:webhook_service.gunicorn_conf
webhook_service.wsgi:app`."""

from webhook_service.app import create_app

app = create_app()
