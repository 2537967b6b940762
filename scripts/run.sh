#!/usr/bin/env bash
# Builds Beacon (release) and runs it on its embedded default: 127.0.0.1:8080, SQLite store in
# ./beacon.db, providers from OPENAI_API_KEY / ANTHROPIC_API_KEY / OPENROUTER_API_KEY / ...,
# tenant keys from BEACON_API_KEYS (with none set, the first start creates tenant `default` and
# one key, stores its hash and prints the key once).
# With no provider key in the environment (and no arguments) it runs `beacon demo` instead: an
# echo upstream and an OTLP receiver inside the process, no account and no network needed.
# Extra arguments go to `beacon`, e.g. `scripts/run.sh serve --config beacon.toml`, or
# `scripts/run.sh demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust from https://rustup.rs first" >&2
    exit 1
fi
echo "building Beacon (release; the first build takes about 10 minutes on 2 cores)…" >&2
cargo build --release --locked --bin beacon
if [ $# -eq 0 ]; then
    for var in OPENAI_API_KEY ANTHROPIC_API_KEY OPENROUTER_API_KEY GROQ_API_KEY TOGETHER_API_KEY \
        MISTRAL_API_KEY DEEPSEEK_API_KEY OLLAMA_BASE_URL; do
        if [ -n "${!var:-}" ]; then
            exec ./target/release/beacon serve
        fi
    done
    echo "no provider key in the environment: running \`beacon demo\` (set OPENAI_API_KEY or another provider key to serve real models)" >&2
    exec ./target/release/beacon demo
fi
case "$1" in
    serve | demo | check | tenant | key | destination | help | --help | -h | --version | -V) exec ./target/release/beacon "$@" ;;
    *) exec ./target/release/beacon serve "$@" ;;
esac
