#!/usr/bin/env bash
# make test: the suite needs PostgreSQL, Redis and RabbitMQ on this machine. What is installed but
# not running is started for the run (privately where it can be) and stopped after; what is not
# installed is named in one line — its tests then fail under CI and are skipped otherwise
# (SIMPLEBANK_MISSING_SERVICES tells conftest.py which). Arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN="$PWD/.run/test"
mkdir -p "$RUN"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/simplebank}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
missing=()
stops=()

host_port() {  # host and port of a URL, with a default port
  "$BIN/python" -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or sys.argv[2])' "$1" "$2"
}
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_until() {  # wait_until <seconds> <command...>: poll through start-up until it answers
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do (( SECONDS < deadline )) || return 1; sleep 0.2; done
}
local_host() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" ]]; }
cleanup() {
  local i
  for (( i=${#stops[@]}-1; i>=0; i-- )); do eval "${stops[$i]}" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

# --- PostgreSQL -------------------------------------------------------------------------------------
read -r pg_host pg_port < <(host_port "$DATABASE_URL" 5432)
if ! answers "$pg_host" "$pg_port"; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  cluster_port=$(sed -n 's/^port *= *\([0-9]*\).*/\1/p' "/etc/postgresql/$version/main/postgresql.conf" 2>/dev/null)
  if local_host "$pg_host" && command -v pg_ctlcluster >/dev/null && [[ "$cluster_port" == "$pg_port" ]] \
    && [[ "$(id -u)" == 0 ]]; then
    echo "test: starting the installed PostgreSQL $version cluster (stopped again after the run)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    stops+=("pg_ctlcluster --skip-systemctl-redirect $version main stop")
  elif local_host "$pg_host" && [[ -x "$pg_bin/initdb" || -n "$(command -v initdb)" ]]; then
    initdb=$([[ -x "$pg_bin/initdb" ]] && echo "$pg_bin/initdb" || command -v initdb)
    pg_ctl="$(dirname "$initdb")/pg_ctl"
    data="$RUN/postgresql"
    as=()
    [[ "$(id -u)" == 0 ]] && { data="/tmp/simplebank-test-pg-$$"; as=(runuser -u postgres --); }
    echo "test: no PostgreSQL at $pg_host:$pg_port; starting a private cluster (data in $data, removed after)"
    rm -rf "$data" && mkdir -p "$data" && [[ "$(id -u)" == 0 ]] && chown postgres "$data"
    "${as[@]}" "$initdb" -D "$data" -U postgres --auth=trust >"$RUN/initdb.log" 2>&1
    "${as[@]}" "$pg_ctl" -D "$data" -o "-p $pg_port -c listen_addresses=127.0.0.1 -k /tmp" -l "$data/log" start >/dev/null
    stops+=("${as[*]} $pg_ctl -D $data stop -m fast; rm -rf $data")
    # The fault test that restarts PostgreSQL under a worker restarts this one.
    export TEST_POSTGRESQL_RESTART="${as[*]} $pg_ctl -D $data -o '-p $pg_port -c listen_addresses=127.0.0.1 -k /tmp' -l $data/log restart"
  else
    missing+=(postgresql)
    echo "test: PostgreSQL is not running at $pg_host:$pg_port and none is installed: install it (apt-get install postgresql) or set DATABASE_URL"
  fi
  [[ " ${missing[*]} " == *" postgresql "* ]] || wait_until 60 answers "$pg_host" "$pg_port" \
    || { echo "test: PostgreSQL did not start (see $RUN)" >&2; exit 1; }
fi

# --- Redis ---------------------------------------------------------------------------------------------
read -r redis_host redis_port < <(host_port "$REDIS_URL" 6379)
if ! answers "$redis_host" "$redis_port"; then
  if local_host "$redis_host" && command -v redis-server >/dev/null; then
    echo "test: no Redis at $redis_host:$redis_port; starting a private redis-server (stopped after the run)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN" \
      --logfile "$RUN/redis.log" &
    stops+=("kill $!")
    wait_until 30 answers "$redis_host" "$redis_port" || { echo "test: redis-server did not start" >&2; exit 1; }
  else
    missing+=(redis)
    echo "test: Redis is not running at $redis_host:$redis_port and redis-server is not installed: install it (apt-get install redis-server) or set REDIS_URL"
  fi
fi

# --- RabbitMQ (the broker tests) -------------------------------------------------------------------
read -r amqp_host amqp_port < <(host_port "${TEST_RABBITMQ_URL:-amqp://127.0.0.1:5672/}" 5672)
if ! answers "$amqp_host" "$amqp_port"; then
  if local_host "$amqp_host" && command -v rabbitmq-server >/dev/null; then
    echo "test: no RabbitMQ at $amqp_host:$amqp_port; starting a private node (stopped after the run)"
    node="simplebank-test-$$@localhost"
    mkdir -p "$RUN/rabbitmq"
    # Its own listener: the machine's /etc/rabbitmq config names the default port.
    printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$amqp_port" >"$RUN/rabbitmq/rabbitmq.conf"
    # Debian's rabbitmq-server runs as the rabbitmq user when started by root.
    [[ "$(id -u)" == 0 ]] && id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq "$RUN/rabbitmq"
    RABBITMQ_NODENAME="$node" RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT=$((amqp_port + 20000)) \
      RABBITMQ_MNESIA_BASE="$RUN/rabbitmq" RABBITMQ_LOG_BASE="$RUN/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE=/dev/null \
      RABBITMQ_CONFIG_FILE="$RUN/rabbitmq/rabbitmq.conf" \
      rabbitmq-server -detached >/dev/null 2>&1
    stops+=("rabbitmqctl -n $node stop")
    wait_until 90 answers "$amqp_host" "$amqp_port" || echo "test: the private RabbitMQ did not start (see $RUN/rabbitmq)"
  else
    missing+=(rabbitmq)
    echo "test: RabbitMQ is not running at $amqp_host:$amqp_port and rabbitmq-server is not installed: install it (apt-get install rabbitmq-server) for the broker tests"
  fi
fi

export SIMPLEBANK_MISSING_SERVICES="${missing[*]:-}"
"$BIN/pytest" "$@"
