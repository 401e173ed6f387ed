"""gunicorn's logger with its access log switched off: the application writes a richer
JSON line per request, and gunicorn would otherwise format one per request for nothing."""

from gunicorn.glogging import Logger


class ApplicationLogsRequests(Logger):
    """gunicorn.glogging.Logger without access lines."""

    def access(self, resp, req, environ, request_time) -> None:
        return None
