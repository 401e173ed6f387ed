# The two commands: `make run` serves on http://127.0.0.1:8000, `make test` runs the tests.
# Each sets up .venv from the pinned requirements first (Python 3.11+ and pip only).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run env test test-fast migrate backup lint format bench profile bench-queries bench-feed bench-forward bench-followers bench-budget bench-wal bench-memory bench-scale-out bench-retention install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# The package itself, editable (the checkout is what runs): the command line is then
# .venv/bin/webhook-service.
$(VENV)/.package-installed: setup.cfg pyproject.toml $(VENV)/.runtime-installed
	$(BIN)/python -m pip install -qq --no-deps --editable .
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt $(VENV)/.runtime-installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.package-installed
install-dev: $(VENV)/.dev-installed $(VENV)/.package-installed

# A local secret for `make run`, made once (readable by you only). The server reads .env for
# what the environment does not set: an exported WEBHOOK_SECRET (or any setting) wins.
.env:
	@umask 077 && $(PYTHON) -c "import secrets; print('WEBHOOK_SECRET=' + secrets.token_hex(32))" > .env
	@echo "wrote .env with a random WEBHOOK_SECRET: sign requests with it (see README)"

env: .env

# The server of an installed package, as the image and the systemd unit start it; its first
# log lines name the database and the settings it read from .env.
run: install .env
	@echo "serving on http://127.0.0.1:$(PORT)"
	@exec $(BIN)/webhook-service serve --bind 127.0.0.1:$(PORT)

migrate: install
	$(BIN)/python -m webhook_service migrate

# A consistent copy of the SQLite database, also while the service runs (BACKUP=path to choose).
BACKUP ?= backups/messages-$(shell date -u +%Y%m%dT%H%M%SZ).db
backup: install
	@mkdir -p "$(dir $(BACKUP))"
	$(BIN)/python -m webhook_service backup "$(BACKUP)"

# The end-to-end tests mostly wait on servers: three workers keep two cores busy, and an idle
# worker takes tests from a busy one's queue (worksteal: plain load scheduling handed each
# worker a long run of end-to-end tests up front, 693 s against 458 s). The 25 slowest tests
# are listed at the end, where the suite's time goes.
PYTEST_WORKERS ?= 3
test: install-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=25

# The unit tests alone (no servers but PostgreSQL's throwaway cluster, where installed).
test-fast: install-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal tests --ignore=tests/e2e

lint: install-dev
	$(BIN)/ruff check --line-length 120 --target-version py311 .
	$(BIN)/ruff format --check --line-length 120 .

format: install-dev
	$(BIN)/ruff format --line-length 120 .

# POSTGRES_URL=postgresql://user:pw@host:5432/empty_db measures PostgreSQL too, in the same run.
bench: install
	$(BIN)/python bench/ingest.py $(if $(POSTGRES_URL),--postgres-url '$(POSTGRES_URL)')

# Where a delivery's CPU goes: py-spy samples the workers under the same load as make bench.
profile: install-dev
	$(BIN)/python bench/profile.py

# Every read at scale: ROWS messages built through the storage layer, then timed through gunicorn
# (CORPUS=sms: a small vocabulary, every trigram common; POSTGRES_URL=...: on that empty database).
ROWS ?= 1000000
CORPUS ?= otp
bench-queries: install
	$(BIN)/python bench/queries.py --rows $(ROWS) --corpus $(CORPUS) $(if $(POSTGRES_URL),--postgres-url '$(POSTGRES_URL)')

# Feed pages at the start, middle and end of ROWS messages, long-poll wake-up latency, idle waiters' cost.
bench-feed: install
	$(BIN)/python bench/feed.py --rows $(ROWS)

# Forwarded against ingested per second, and the delay from store to arrival (POSTGRES_URL: also there).
bench-forward: install
	$(BIN)/python bench/forward.py $(if $(POSTGRES_URL),--postgres-url '$(POSTGRES_URL)')

# 300 readers following the feed: deliveries' and readiness's p99 beside none, and that each got every message.
bench-followers: install
	$(BIN)/python bench/followers.py

# Worker memory under 50 concurrent expensive searches on 200,000 messages, and after them.
bench-memory: install
	$(BIN)/python bench/search_memory.py

# WAL size under ingestion while a long read holds an old snapshot, and after it ends.
bench-wal: install
	$(BIN)/python bench/wal.py

# PostgreSQL writers in parallel (1, 4, 16 processes) through the service's write path, against
# plain inserts of the same rows, in the same run: POSTGRES_URL=postgresql://user:pw@host/db.
bench-scale-out: install
	@test -n "$(POSTGRES_URL)" || { echo "set POSTGRES_URL=postgresql://user:pw@host:5432/db"; exit 2; }
	$(BIN)/python bench/scale_out.py --postgres-url '$(POSTGRES_URL)'

# Retention runs at the service's pace and at the command's, removing old messages while 4
# senders post: removed/s and the senders' p99 with and without them (POSTGRES_URL=...
# measures on that empty database instead).
RETENTION_ROWS ?= 200000
bench-retention: install
	$(BIN)/python bench/retention.py --rows $(RETENTION_ROWS) $(if $(POSTGRES_URL),--postgres-url '$(POSTGRES_URL)')

# How far past QUERY_BUDGET_MS reads answer under 16 concurrent expensive reads on 200,000 messages.
bench-budget: install
	$(BIN)/python bench/budget.py --concurrency 16

clean:
	rm -rf $(VENV) .pytest_cache

# Deployment with Docker Compose (nginx on http://localhost:8000 in front of the api).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: up up-postgres down down-and-delete-data logs docker-check compose-engine

# One clear line instead of a client traceback when no Docker engine answers.
compose-engine:
	@docker info >/dev/null 2>&1 || { echo "no Docker engine answers (is dockerd running? DOCKER_HOST=$${DOCKER_HOST:-unset})" >&2; exit 1; }

up: compose-engine
	$(COMPOSE) up -d --build

# The same on PostgreSQL (compose.postgres.yaml; POSTGRES_PASSWORD from the environment or .env).
up-postgres: compose-engine
	$(COMPOSE) -f compose.yaml -f compose.postgres.yaml up -d --build

# Stops and removes the containers; the data volume (every stored message) stays.
down: compose-engine
	$(COMPOSE) down --remove-orphans

# Also deletes the data volume: every stored message is gone.
down-and-delete-data: compose-engine
	$(COMPOSE) down -v

logs:
	$(COMPOSE) logs -f api

# Builds and checks the image for real with a local Docker engine (takes minutes; not in CI).
docker-check:
	bash deploy/docker-check.sh
