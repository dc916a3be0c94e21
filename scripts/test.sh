#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script).
# Installs what it needs that is missing: redis-server and redis-cli
# (Debian's redis-server package, which brings redis-tools) for the
# integration tests, redis-cli to join the test Redis Clusters; the chart check installs helm and kubernetes-validate
# into ./.tools itself.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "== installing redis-server (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== chart and manifests"
scripts/validate-chart.sh

echo "== cargo test"
cargo test --workspace --locked
