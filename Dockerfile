# syntax=docker/dockerfile:1
# Build: docker build -t webhook-service .
# Run:   docker run -e WEBHOOK_SECRET=... -p 8000:8000 -v webhook-data:/data webhook-service

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-compile -r /tmp/requirements.txt


FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////data/messages.db \
    PROMETHEUS_MULTIPROC_DIR=/tmp/webhook-metrics \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir -p /data /app \
    && chown app:app /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY wsgi.py gunicorn.conf.py alembic.ini ./
COPY migrations ./migrations
COPY webhook_service ./webhook_service
USER app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=2); sys.exit(0)"]
# gunicorn with the service's settings and hooks: it migrates once in the master, then forks
# the workers; SIGTERM drains them.
CMD ["python", "-m", "webhook_service", "serve"]
