#!/usr/bin/env python3
"""What routing costs (SPEC §2.2), side by side in one run, one binary:

- CPU per request on the happy path: instructions per request (callgrind, all threads,
  (I(2500) - I(500)) / 2000 sequential non-streaming completions) for a plain
  `stub/gpt-4o` and for an alias `two` with two healthy weighted targets on the same stub;
- the latency failover adds: sequential requests to an alias whose first target refuses
  connections (a closed port) and whose fallback is the stub, against the plain model,
  ROUNDS interleaved rounds of N requests, medians of the round medians. Cooldowns are off
  (`cooldown_secs = 0`) so every request pays the refused attempt.

    python3 bench/routing_bench.py [--bin target/release/beacon] [--rounds 5] [--n 300] [--no-callgrind]

Needs nginx (and valgrind for the instruction counts).
"""
import argparse
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g  # noqa: E402


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_beacon(tmp, name, up, binary):
    return g.serve(tmp, name, f"""[routing]
cooldown_secs = 0
[[providers]]
name = "stub"
base_url = "http://127.0.0.1:{up}/v1"
api_key = "sk-stub"
[[providers]]
name = "stub2"
base_url = "http://127.0.0.1:{up}/v1"
api_key = "sk-stub"
[[providers]]
name = "dead"
base_url = "http://127.0.0.1:{closed_port()}/v1"
api_key = "sk-dead"
[[models]]
name = "two"
targets = [{{ provider = "stub", model = "gpt-4o", weight = 3 }}, {{ provider = "stub2", model = "gpt-4o", weight = 1 }}]
[[models]]
name = "refused"
targets = [{{ provider = "dead", model = "gpt-4o" }}]
fallbacks = ["stub/gpt-4o"]
[[tenants]]
id = "bench"
api_keys = ["{g.KEY}"]
{g.sentry_destination(up)}""", binary)


HEADERS = {"authorization": f"Bearer {g.KEY}", "content-type": "application/json"}


def latency_round(port, model, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = g.body(model)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("POST", "/v1/chat/completions", body=body, headers=HEADERS)
        r = c.getresponse(); r.read()
        times.append(time.perf_counter() - t0)
        assert r.status == 200, r.status
    c.close()
    return statistics.median(times)


def instructions(binary, tmp, up, model, n, tag):
    start = lambda name, b: start_beacon(tmp, name, up, b)  # noqa: E731
    return g.callgrind_instructions(start, binary, tmp, "/v1/chat/completions", g.body(model), n, tag)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(g.ROOT / "target/release/beacon"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--no-callgrind", action="store_true")
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="routing-bench-")); tmp.chmod(0o755)
    up = g.free_port()
    procs = [g.start_nginx(tmp, "stub", g.stub_block(tmp, up))]
    g.wait_port(up)
    try:
        beacon, port = start_beacon(tmp, "beacon", up, a.bin)
        procs.append(beacon)
        for m in ("stub/gpt-4o", "two", "refused"):
            latency_round(port, m, 20)
        rows = {"stub/gpt-4o": [], "two": [], "refused": []}
        for r in range(a.rounds):
            for m in rows:
                rows[m].append(latency_round(port, m, a.n) * 1e6)
            print(f"round {r + 1}: " + ", ".join(f"{m} {v[-1]:.0f} µs" for m, v in rows.items()), flush=True)
        med = {m: statistics.median(v) for m, v in rows.items()}
        result = {"latency_median_us": {m: round(v, 1) for m, v in med.items()},
                  "failover_added_us": round(med["refused"] - med["stub/gpt-4o"], 1)}
        if not a.no_callgrind:
            icount = {}
            for m in ("stub/gpt-4o", "two"):
                i1 = instructions(a.bin, tmp, up, m, 500, f"{m.replace('/', '_')}1")
                i2 = instructions(a.bin, tmp, up, m, 2500, f"{m.replace('/', '_')}2")
                icount[m] = round((i2 - i1) / 2000)
                print(f"{m}: {icount[m]} instructions/request", flush=True)
            icount["alias_over_plain"] = f"{(icount['two'] / icount['stub/gpt-4o'] - 1) * 100:+.2f} %"
            result["instructions_per_request"] = icount
        print(json.dumps(result, indent=2))
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
