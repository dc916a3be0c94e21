#!/usr/bin/env bash
# Runs fanout locally, without Kubernetes: a private redis-server, two example
# destinations that print what they receive, fanout-ingest and fanout-worker
# on examples/routes.yaml. Prints the curl commands to try, then runs until
# Ctrl-C, which stops everything this script started.
#
# Installs what is missing: redis-server (Debian package). Needs cargo and
# python3. Environment overrides:
#   FANOUT_LOCAL_LISTEN    ingest address          (default 127.0.0.1:8080)
#   FANOUT_LOCAL_METRICS   worker metrics address  (default 127.0.0.1:9090)
#   FANOUT_LOCAL_PROFILE   cargo profile: release or dev (default release)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUTES=examples/routes.yaml
LISTEN="${FANOUT_LOCAL_LISTEN:-127.0.0.1:8080}"
METRICS="${FANOUT_LOCAL_METRICS:-127.0.0.1:9090}"
PROFILE="${FANOUT_LOCAL_PROFILE:-release}"
SINKS=("9901 analytics" "9902 billing") # the destinations in $ROUTES

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'run-local: %s\n' "$*" >&2; exit 1; }

# --- what is needed -------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
    say "installing redis-server (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the example destinations"
command -v cargo >/dev/null 2>&1 || die "cargo is needed to build fanout"

# True when something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_of() { echo "${1##*:}"; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

for spec in "${SINKS[@]}"; do
    port="${spec%% *}"
    listening "$port" && die "port $port is taken: $ROUTES sends deliveries there; stop what listens on it"
done
listening "$(port_of "$LISTEN")" && die "$LISTEN is taken; set FANOUT_LOCAL_LISTEN to another address"
listening "$(port_of "$METRICS")" && die "$METRICS is taken; set FANOUT_LOCAL_METRICS to another address"

# --- build ----------------------------------------------------------------
say "building fanout-ingest and fanout-worker ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release -p fanout-ingest -p fanout-worker
    BIN="${CARGO_TARGET_DIR:-target}/release"
else
    cargo build -p fanout-ingest -p fanout-worker
    BIN="${CARGO_TARGET_DIR:-target}/debug"
fi

# --- start, and stop everything on exit -----------------------------------
WORK="$(mktemp -d -t fanout-local.XXXXXX)"
PIDS=()
cleanup() {
    trap - EXIT INT TERM
    # Stop everything even if the terminal (or a pipe) is gone.
    set +e
    trap '' PIPE
    if [ "${#PIDS[@]}" -gt 0 ]; then
        say "stopping"
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        # Give the worker and ingest their graceful shutdown, then insist.
        for _ in $(seq 1 100); do
            alive=0
            for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

REDIS_PORT=6379
if listening "$REDIS_PORT"; then
    REDIS_PORT="$(free_port)"
    say "127.0.0.1:6379 is taken; using a private redis-server on port $REDIS_PORT"
fi
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
mkdir -p "$WORK/redis"
say "starting redis-server on $REDIS_URL (data in $WORK/redis, AOF everysec)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
    --appendonly yes --appendfsync everysec --save "" --daemonize no \
    --logfile "$WORK/redis.log" &
PIDS+=($!)

wait_for_port() { # port what
    for _ in $(seq 1 200); do
        listening "$1" && return 0
        sleep 0.05
    done
    die "$2 did not start listening on port $1"
}
wait_for_port "$REDIS_PORT" redis-server

for spec in "${SINKS[@]}"; do
    read -r port name <<<"$spec"
    python3 -u scripts/example-sink.py "$port" "$name" &
    PIDS+=($!)
    wait_for_port "$port" "example destination $name"
done

say "starting fanout-ingest on http://$LISTEN"
"$BIN/fanout-ingest" --routes "$ROUTES" --redis-url "$REDIS_URL" --listen "$LISTEN" &
PIDS+=($!)
say "starting fanout-worker (metrics on http://$METRICS)"
"$BIN/fanout-worker" --routes "$ROUTES" --redis-url "$REDIS_URL" \
    --metrics-listen "$METRICS" --consumer local &
PIDS+=($!)

ready=0
for _ in $(seq 1 200); do
    if curl -fsS "http://$LISTEN/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.05
done
[ "$ready" = 1 ] || die "fanout-ingest did not become ready on http://$LISTEN/readyz"

cat >&2 <<EOF

fanout is running. Try, from another terminal:

  # one event
  curl -i http://$LISTEN/orders/v1/event -H 'content-type: application/json' \\
       -d '{"order": 1, "amount": 42.5}'

  # a batch, stored all or nothing
  curl -i http://$LISTEN/orders/v1/batch -H 'content-type: application/json' \\
       -d '[{"order": 2}, {"order": 3}]'

  # a retried POST with the same Idempotency-Key gets the first answer
  curl -i http://$LISTEN/orders/v1/event -H 'content-type: application/json' \\
       -H 'Idempotency-Key: order-4' -d '{"order": 4}'

  # metrics
  curl -s http://$LISTEN/metrics
  curl -s http://$METRICS/metrics

  # the route's stream in Redis (empty again once both destinations have it)
  redis-cli -p $REDIS_PORT XLEN 'fanout:{default/orders}:events'

Each delivery is printed below by the destination that received it.
Ctrl-C stops everything.

EOF

# Run until Ctrl-C, or until one of the processes ends by itself.
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
die "a process ended unexpectedly (exit $status); stopping the others"
