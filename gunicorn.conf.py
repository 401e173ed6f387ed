"""gunicorn settings and hooks for `gunicorn -c gunicorn.conf.py wsgi:app` in a checkout: the
service's own (webhook_service/gunicorn_conf.py, which `webhook-service serve` uses), so that
both start the same server. Everything can be overridden on the command line (`--bind`, ...).
"""

from webhook_service.gunicorn_conf import *
