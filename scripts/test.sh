#!/usr/bin/env bash
# Runs Beacon's whole test suite on a fresh machine: installs what the tests need (a Python
# venv with the official openai and anthropic SDKs, opentelemetry-proto, Helm and hadolint,
# Debian's PostgreSQL, Debian's nginx, Debian's Chromium with Node.js and playwright-core for
# the console), checks formatting and lints,
# builds the binary and runs every unit, end-to-end and browser test.
set -euo pipefail
cd "$(dirname "$0")/.."

retry() {
    "$@" && return 0
    echo "command failed, retrying once in 5 s: $*" >&2
    sleep 5
    "$@"
}

# --- Python client for the end-to-end tests (the official openai SDK) -----------------------
if ! python3 -m venv --help >/dev/null 2>&1; then
    retry apt-get update -qq && retry apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata as m, pathlib, sys
want = [l.split("==") for l in pathlib.Path("tests/py/requirements.txt").read_text().splitlines() if "==" in l and not l.startswith("#")]
sys.exit(0 if all(m.version(n) == v for n, v in want) else 1)
PY
then
    retry .venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi

# --- Browser tests of the console: Debian's Chromium driven by playwright-core ---------------
# --- and the multi-node test: Debian's nginx as the load balancer -------------------------------
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/sbin/nginx ] || need+=(nginx)
{ command -v node && command -v npm; } >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
    retry apt-get update -qq
    DEBIAN_FRONTEND=noninteractive retry apt-get install -y -qq "${need[@]}"
fi
if ! (cd tests/console && npm ls --silent >/dev/null 2>&1); then
    (cd tests/console && retry npm ci --no-audit --no-fund --loglevel=error)
fi

# --- PostgreSQL for the store tests, on a free loopback port ---------------------------------
pg_dir=$(mktemp -d /tmp/beacon-pg.XXXXXX)
trap 'scripts/pg-test-server.sh stop "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$pg_dir"' EXIT
BEACON_TEST_POSTGRES_URL=$(scripts/pg-test-server.sh start "$pg_dir")
export BEACON_TEST_POSTGRES_URL

# --- Rust ------------------------------------------------------------------------------------
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
