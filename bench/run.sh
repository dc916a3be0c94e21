#!/usr/bin/env bash
# The fanout benchmark (see docs/benchmarks.md): builds the release binaries
# once, then runs `fanout-bench run`, which starts redis-server (AOF
# everysec), fanout-ingest, fanout-worker, an in-process sink and the no-Redis
# reference server on 127.0.0.1, and prints the figures and the ratios as
# Markdown. Takes about two minutes after the build. Extra arguments go to
# `fanout-bench run` (try --help).
#
# Installs what is missing: redis-server and redis-benchmark (Debian
# packages). Everything it starts is stopped when it ends or on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "== installing redis-server and redis-tools (Debian packages)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi

echo "== building release binaries" >&2
cargo build --release -p fanout-ingest -p fanout-worker -p fanout-bench

exec "${CARGO_TARGET_DIR:-target}/release/fanout-bench" run "$@"
