#!/usr/bin/env bash
# Builds TensorZero's gateway from source, and the TCP_NODELAY shim it is benchmarked with,
# for `python3 bench/gateway_bench.py --tensorzero PATH` (docs/benchmarks.md).
#
# Optional: TensorZero is a peer target of the suite, not part of it. Its gateway is a large
# Rust workspace (V8 for its TypeScript evaluators included); a release build takes about
# 30 minutes on this project's 2 cores, so the suite never builds it by itself. Run this
# once, then pass the binary it prints to gateway_bench.py.
#
# The shim (nodelay.c, compiled to nodelay.so beside the binary): stock TensorZero leaves
# Nagle's algorithm on for its sockets, and on a keep-alive connection a response written in
# two pieces waits for the peer's delayed ACK of the first: about 44 ms per request. The
# shim, loaded with LD_PRELOAD, sets TCP_NODELAY on every TCP socket the gateway accepts or
# connects, so the benchmark measures the gateway and not that stall.
#
# Environment:
#   TENSORZERO_SRC        git URL or local path (default https://github.com/tensorzero/tensorzero.git)
#   TENSORZERO_REF        tag (or branch, or commit) to build (default 2026.4.1)
#   TENSORZERO_DIR        checkout and build folder (default <repo>/target/tensorzero): the
#                         checkout is src/ (a cache: local edits are discarded), cargo's
#                         target folder is target/, and built-ref records what was built
#   TENSORZERO_PROFILE    cargo profile (default release, i.e. `cargo build --release`;
#                         TensorZero's Docker image uses its `performance` profile, fat LTO)
#   TENSORZERO_TOOLCHAIN  Rust toolchain for the build (default: the one the source pins in
#                         crates/rust-toolchain.toml, 1.93.0 at 2026.4.1, which rustup
#                         installs if missing; e.g. `stable` to use an installed one)
#   TENSORZERO_SKIP_BUILD set to 1 to check out the ref and compile the shim without running
#                         cargo (the binary path is printed all the same)
#   CC                    C compiler for the shim (default cc)
#
# Besides crates.io, the build downloads a prebuilt V8 library (rusty_v8, from GitHub) and
# typescript.js (from unpkg.com) in build scripts.
#
# Output: progress on stderr; the last two lines of stdout are the gateway binary's path
# and the shim's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="${TENSORZERO_SRC:-https://github.com/tensorzero/tensorzero.git}"
ref="${TENSORZERO_REF:-2026.4.1}"
dir="${TENSORZERO_DIR:-$root/target/tensorzero}"
profile="${TENSORZERO_PROFILE:-release}"

# A local source path must not depend on the current folder (git runs in the checkout).
if [ -d "$src" ]; then
    src="$(cd "$src" && pwd)"
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
checkout="$dir/src"
out="$dir/target/$profile" # cargo's folder for the profile (`--release`: target/release)
bin="$out/gateway"
shim="$out/nodelay.so"
stamp="$dir/built-ref"

# The commit `$1` names in the checkout (a tag, a branch of origin, a commit), or nothing.
resolve() {
    local name
    for name in "refs/tags/$1" "refs/remotes/origin/$1" "$1"; do
        if git -C "$checkout" rev-parse --verify --quiet "$name^{commit}"; then
            return 0
        fi
    done
    return 1
}

# --- the source at the ref: a new clone, or the existing checkout with the ref fetched again
if [ ! -d "$checkout/.git" ]; then
    echo "tensorzero: cloning $src into $checkout" >&2
    if [ -d "$src" ]; then
        # A local repository: git hard-links its objects, all refs included.
        git clone --quiet --no-checkout "$src" "$checkout"
    else
        # Only the ref's commit; a commit id (which --branch does not take): the whole history.
        git clone --quiet --no-checkout --depth 1 --branch "$ref" "$src" "$checkout" 2>/dev/null \
            || git clone --quiet --no-checkout "$src" "$checkout"
    fi
    commit="$(resolve "$ref")" || { echo "tensorzero: $ref not found in $src" >&2; exit 1; }
else
    echo "tensorzero: fetching $ref from $src into $checkout" >&2
    git -C "$checkout" remote set-url origin "$src"
    depth=()
    if [ "$(git -C "$checkout" rev-parse --is-shallow-repository)" = true ]; then
        depth=(--depth 1)
    fi
    if git -C "$checkout" fetch --quiet "${depth[@]}" origin "$ref"; then
        commit="$(git -C "$checkout" rev-parse --verify "FETCH_HEAD^{commit}")"
    elif commit="$(resolve "$ref")"; then
        echo "tensorzero: fetch failed; using $ref as the checkout already has it" >&2
    else
        echo "tensorzero: cannot fetch $ref from $src" >&2
        exit 1
    fi
fi
if ! git -C "$checkout" -c advice.detachedHead=false checkout --quiet --force --detach "$commit"; then
    # A partial mirror may lack some large files (example data sets): git names them above.
    # The build needs only crates/ (TensorZero's own Dockerfile copies nothing else).
    if [ "$(git -C "$checkout" rev-parse HEAD)" = "$commit" ] && git -C "$checkout" diff --quiet HEAD -- crates; then
        echo "tensorzero: files outside crates/ are missing from $src; crates/ is complete, going on" >&2
    else
        echo "tensorzero: cannot check out $ref ($commit)" >&2
        exit 1
    fi
fi
built="$ref $commit $profile"
echo "tensorzero: $ref is $commit" >&2

# --- the gateway, unless this ref was built already
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$built" ]; then
    echo "tensorzero: $bin is already built from $ref ($commit, $profile)" >&2
elif [ "${TENSORZERO_SKIP_BUILD:-}" = 1 ]; then
    echo "tensorzero: TENSORZERO_SKIP_BUILD=1, not building $bin" >&2
else
    if [ "$profile" = release ]; then
        flags=(--release)
    else
        flags=(--profile "$profile")
    fi
    if [ -n "${TENSORZERO_TOOLCHAIN:-}" ]; then
        export RUSTUP_TOOLCHAIN="$TENSORZERO_TOOLCHAIN"
    fi
    rm -f "$stamp"
    echo "tensorzero: cargo build ${flags[*]} -p gateway (about 30 minutes on 2 cores)" >&2
    # The workspace is crates/ (its Cargo.toml, Cargo.lock and rust-toolchain.toml).
    (cd "$checkout/crates" && CARGO_TARGET_DIR="$dir/target" cargo build --locked "${flags[@]}" -p gateway) >&2
    echo "$built" >"$stamp"
fi

# --- the TCP_NODELAY shim, beside the binary (gateway_bench.py looks for it there)
mkdir -p "$out"
"${CC:-cc}" -shared -fPIC -O2 -o "$shim" "$here/nodelay.c" -ldl

echo "$bin"
echo "$shim"
