#!/usr/bin/env python3
"""What limits cost on the request path (SPEC §5.1), side by side in one run, one binary:
instructions per request (callgrind, all threads, (I(2500) - I(500)) / 2000 sequential
non-streaming completions behind the nginx stub, broadcast to the Sentry stub on) for a key
with no limits, for a key whose key *and* tenant have every limit set (requests and tokens
per minute, concurrency, USD per day and month — high enough never to refuse), so each
request is admitted, settled and released against two scopes and carries six
x-ratelimit-* headers, and for a key with only a requests-per-minute limit (three headers);
the reconciliation with the store runs once a second beside it (callgrind's slowdown
attributes it to requests at many times its real share).

    python3 bench/limits_bench.py [--bin target/release/beacon]

Needs nginx and valgrind (what gateway_bench.py installs).
"""
import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g  # noqa: E402

LIMITS = """requests_per_minute = 1000000000
tokens_per_minute = 1000000000000
concurrent_requests = 100000
usd_per_day = 1000000.0
usd_per_month = 1000000.0
"""


def start_beacon(tmp, name, up, binary, limited):
    port = g.free_port()
    key_id = "key_" + hashlib.sha256(g.KEY.encode()).hexdigest()[:12]
    if limited == "rpm":
        limits = f"""
[tenants.key_limits."{key_id}"]
requests_per_minute = 1000000000
"""
    elif limited:
        limits = f"""
[tenants.limits]
{LIMITS}
[tenants.key_limits."{key_id}"]
{LIMITS}"""
    else:
        limits = ""
    conf = tmp / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{tmp}/{name}.db"
[broadcast]
allow_private_destinations = true
[[providers]]
name = "stub"
base_url = "http://127.0.0.1:{up}/v1"
api_key = "sk-stub"
[[tenants]]
id = "bench"
api_keys = ["{g.KEY}"]
{limits}
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "stub"
otlp_endpoint = "http://127.0.0.1:{up}/api/1/integration/otlp/v1/traces"
dsn = "http://benchkey@127.0.0.1:{up}/1"
""")
    proc = subprocess.Popen([binary, "serve", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / f"{name}.log", "w"), env={**os.environ, "BEACON_LOG": "warn"})
    g.wait_port(port)
    return proc, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(g.ROOT / "target/release/beacon"))
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="limits-bench-")); tmp.chmod(0o755)
    up = g.free_port()
    procs = [g.start_nginx(tmp, "stub", g.stub_block(tmp, up))]
    g.wait_port(up)
    try:
        res = {}
        for label, limited in (("no limits", False), ("key and tenant limits", True), ("key rpm only", "rpm")):
            start = lambda name, b, limited=limited: start_beacon(tmp, name, up, b, limited)  # noqa: E731
            tag = label.replace(" ", "_")
            i1 = g.callgrind_instructions(start, a.bin, tmp, "/v1/chat/completions", g.body("stub/gpt-4o"), 500, tag + "1")
            i2 = g.callgrind_instructions(start, a.bin, tmp, "/v1/chat/completions", g.body("stub/gpt-4o"), 2500, tag + "2")
            res[label] = round((i2 - i1) / 2000)
            print(f"{label}: {res[label]} instructions/request", flush=True)
        for label in ("key and tenant limits", "key rpm only"):
            print(f"{label} over none: {(res[label] / res['no limits'] - 1) * 100:+.2f} %")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
