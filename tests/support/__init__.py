"""What both suites share: test data and signing, databases, metrics parsing, and the real
servers the end-to-end tests start (gunicorn, nginx, Prometheus, PostgreSQL)."""
