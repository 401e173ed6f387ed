#!/usr/bin/env bash
# Build the image and check it for real: non-root, healthy, stores a signed post, keeps it
# across a restart on the same volume, stops cleanly on SIGTERM; compose.yaml validates.
# Takes minutes (not part of CI). Needs a running Docker engine; DOCKER_SANDBOX may name a
# script that starts one (it is run first, and DOCKER_HOST then defaults to its socket).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=webhook-service:check
NAME=webhook-check-$$
VOLUME=webhook-check-data-$$
SECRET=docker-check-secret
SANDBOX=${DOCKER_SANDBOX:-}

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; docker logs "$NAME" 2>&1 | tail -20 >&2 || true; exit 1; }

if [ -n "$SANDBOX" ]; then
  [ -f "$SANDBOX" ] || { echo "DOCKER_SANDBOX=$SANDBOX: no such file" >&2; exit 1; }
  step "docker engine: $SANDBOX"
  bash "$SANDBOX" | tail -1
  export DOCKER_HOST=${DOCKER_HOST:-unix:///tmp/docker-sandbox/docker.sock}
fi
docker info >/dev/null 2>&1 || { echo "no Docker engine reachable (start one, or set DOCKER_SANDBOX)" >&2; exit 1; }

cleanup() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  docker volume rm "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "build"
docker build --network host -t "$IMAGE" . >/tmp/webhook-docker-build.log 2>&1 || { tail -30 /tmp/webhook-docker-build.log; exit 1; }
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $((size / 1024 / 1024)) MiB"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
docker volume create "$VOLUME" >/dev/null

start_container() {
  docker start "$NAME" >/dev/null
  for _ in $(seq 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
    [ "$status" = healthy ] && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "container exited"
    sleep 1
  done
  fail "not healthy after 60 s (status: $status)"
}

step "run (network host, port $PORT, volume $VOLUME on /data)"
docker create --name "$NAME" --network host -e WEBHOOK_SECRET="$SECRET" -e PORT="$PORT" \
  -v "$VOLUME":/data "$IMAGE" >/dev/null
start_container
echo "healthy"

step "runs as the non-root user"
uid=$(docker exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "runs as root"
users=$(docker top "$NAME" -o pid,user | awk 'NR > 1 {print $2}' | sort -u | tr '\n' ' ')
echo "uid $uid; process users: $users"
case " $users" in *" root "*) fail "a process runs as root";; esac

step "stores a signed post"
body='{"message_id":"docker-check-1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"hello"}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.* //')
answer=$(curl -s -w ' %{http_code}' -X POST "$BASE/webhook" -H "X-Signature: $sig" --data-binary "$body" | tr -d '\n')
echo "POST /webhook -> $answer"
[ "$answer" = '{"status":"ok"} 200' ] || fail "post not accepted"
curl -s "$BASE/messages" | grep -q '"docker-check-1"' || fail "message not listed"
docker exec "$NAME" ls -l /data

step "stops cleanly on SIGTERM"
started=$(date +%s%N)
docker stop -t 30 "$NAME" >/dev/null
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
echo "stopped in ${elapsed_ms} ms with exit code $code (gunicorn's graceful timeout: 20 s)"
[ "$elapsed_ms" -lt 20000 ] || fail "took longer than the graceful timeout"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
docker logs "$NAME" 2>&1 | grep -q '"Shutting down: Master"' || fail "no clean shutdown line"

step "keeps the message across a restart on the same volume"
start_container
curl -s "$BASE/messages" | grep -q '"docker-check-1"' || fail "message lost across restart"
echo "message still there"
nonjson=$(docker logs "$NAME" 2>&1 | python3 -c 'import json, sys
bad = 0
for line in sys.stdin:
    try:
        json.loads(line)
    except ValueError:
        bad += 1
print(bad)')
echo "log lines that are not JSON: $nonjson"
[ "$nonjson" = 0 ] || fail "non-JSON log lines"

step "compose.yaml"
if command -v docker-compose >/dev/null 2>&1; then
  WEBHOOK_SECRET=x docker-compose -f compose.yaml config -q || fail "docker-compose config rejected compose.yaml"
  echo "docker-compose config -q: ok"
  empty_env=$(mktemp)
  if out=$(env -u WEBHOOK_SECRET docker-compose -f compose.yaml --env-file "$empty_env" config -q 2>&1); then
    rm -f "$empty_env"
    fail "compose accepted a missing WEBHOOK_SECRET"
  fi
  rm -f "$empty_env"
  echo "without WEBHOOK_SECRET: $out"
else
  echo "docker-compose not installed: skipped"
fi

step "all checks passed"
