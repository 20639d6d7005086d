#!/usr/bin/env bash
# `make run`: the whole product on one machine — web, worker and (if needed) a private Redis —
# on SQLite with the console email backend, until Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PWD/.venv/bin:$PATH"
# honcho loads .env over the shell's variables: take the ones this script decides with from it too
# (read by honcho's own parser), so the Redis it checks (or starts) and the links' address are the
# ones the processes will use.
if [[ -f .env ]]; then
  while IFS= read -r -d '' assignment; do export "$assignment"; done < <(python - <<'PY'
import sys
from honcho.environ import parse

values = parse(open(".env").read())
for name in ("REDIS_URL", "WEB_ADDRESS", "SITE_URL"):
    if values.get(name):
        sys.stdout.write(f"{name}={values[name]}\0")
PY
  )
fi
export DJANGO_DEBUG="${DJANGO_DEBUG:-true}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PYTHONUNBUFFERED=1
# runserver's address ("8080" alone means 127.0.0.1:8080); the emailed links follow it unless
# SITE_URL says otherwise, and a wildcard bind mails links to this machine's loopback.
WEB_ADDRESS="${WEB_ADDRESS:-127.0.0.1:8000}"
[[ "$WEB_ADDRESS" == *:* ]] || WEB_ADDRESS="127.0.0.1:$WEB_ADDRESS"
export WEB_ADDRESS
link_host="${WEB_ADDRESS%:*}"
case "$link_host" in 0.0.0.0 | "[::]" | "") link_host=127.0.0.1 ;; esac
export SITE_URL="${SITE_URL:-http://$link_host:${WEB_ADDRESS##*:}}"
# The worker's Prometheus exporter binds a fixed port (9191): off here, so a second checkout or
# another worker on this machine does not collide with it. DRAMATIQ_PROMETHEUS=true turns it on.
export DRAMATIQ_PROMETHEUS="${DRAMATIQ_PROMETHEUS:-false}"

redis_answers() {
  python - "$REDIS_URL" <<'PY'
import sys

import redis

try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
except redis.exceptions.RedisError:
    sys.exit(1)
PY
}

redis_pid=""
cleanup() {
  if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    echo "run: stopped the private redis-server"
  fi
}
trap cleanup EXIT

if ! redis_answers; then
  read -r host port < <(python -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or 6379)' "$REDIS_URL")
  if [[ "$host" != "127.0.0.1" && "$host" != "localhost" ]]; then
    echo "run: nothing answers at REDIS_URL=$REDIS_URL; start that Redis or point REDIS_URL at one." >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null; then
    cat >&2 <<MSG
run: nothing answers at REDIS_URL=$REDIS_URL and no redis-server is installed.
     Install Redis (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis),
     or start one (docker run -p 6379:6379 redis:7), or set REDIS_URL to a Redis you have.
MSG
    exit 1
  fi
  mkdir -p .run/redis
  echo "run: no Redis at $REDIS_URL; starting a private redis-server on port $port (data in .run/redis)"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.run/redis" --appendonly yes \
    --appendfsync everysec --save "" --logfile "$PWD/.run/redis/redis.log" &
  redis_pid=$!
  for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
  redis_answers || { echo "run: the private redis-server did not start; see .run/redis/redis.log" >&2; exit 1; }
fi

honcho run python manage.py migrate --noinput  # with .env loaded, as the processes get it
echo "run: web on http://$WEB_ADDRESS/signup/, links to $SITE_URL — verification emails print below (console backend)"
honcho start -f Procfile
