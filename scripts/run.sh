#!/usr/bin/env bash
# Builds Beacon (release) and runs it on its embedded default: 127.0.0.1:8080, SQLite store in
# ./beacon.db, providers from OPENAI_API_KEY / OPENROUTER_API_KEY / ..., tenant keys from
# BEACON_API_KEYS (with none set, the first start creates tenant `default` and one key, stores
# its hash and prints the key once).
# Extra arguments go to `beacon serve`, e.g. `scripts/run.sh --config beacon.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust from https://rustup.rs first" >&2
    exit 1
fi
cargo build --release --locked --bin beacon
exec ./target/release/beacon serve "$@"
