#!/usr/bin/env python3
"""Broadcast on vs off, side by side in one run (issue: broadcast benchmark).

Starts, on 127.0.0.1: nginx as the upstream stub (a canned chat completion) and as a Sentry
OTLP stub (answers 200), Beacon (release) with broadcast off and with broadcast on to the
stub, then runs wrk against the direct path, Beacon-off and Beacon-on, interleaved
(A B C A B C ...), several rounds, and reports medians and ratios.

Usage: python3 bench/broadcast_bench.py [--rounds 5] [--duration 8] [--connections 64]
Writes docs/bench/broadcast.json and prints a Markdown table.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
})
BODY = json.dumps({"model": "stub/gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]})
KEY = "bk-bench-key-0001"


def ensure_tools():
    missing = [p for p, b in (("nginx", "nginx"), ("wrk", "wrk")) if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    start = time.time()
    while time.time() - start < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def start_nginx(tmp, up_port):
    conf = tmp / "nginx.conf"
    body = COMPLETION.replace("'", "\\'")
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{up_port} reuseport;
        location /v1/chat/completions {{ default_type application/json; return 200 '{body}'; }}
        location /api/1/integration/otlp/v1/traces {{ default_type application/x-protobuf; return 200 ''; }}
    }}
}}
""")
    return subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_beacon(tmp, name, up_port, broadcast, sentry_port=None):
    port = free_port()
    sentry_port = sentry_port or up_port
    dest = f"""
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "stub"
otlp_endpoint = "http://127.0.0.1:{sentry_port}/api/1/integration/otlp/v1/traces"
dsn = "http://benchkey@127.0.0.1:{sentry_port}/1"
""" if broadcast else ""
    conf = tmp / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[broadcast]
allow_private_destinations = true
[[providers]]
name = "stub"
base_url = "http://127.0.0.1:{up_port}/v1"
api_key = "sk-stub"
[[tenants]]
id = "bench"
api_keys = ["{KEY}"]
{dest}
""")
    proc = subprocess.Popen([str(ROOT / "target/release/beacon"), "serve", "--config", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "w"),
                            env={**os.environ, "BEACON_LOG": "warn"})
    wait_port(port)
    return proc, port


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, path, duration, connections, script, pid=None):
    before = cpu_seconds(pid) if pid else None
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    res = {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99), "non_2xx": int(errors.group(1)) if errors else 0}
    if pid:
        res["cpu_us_per_request"] = (cpu_seconds(pid) - before) * 1e6 / max(total, 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--fixed-delay-ms", type=float, default=4.0,
                    help="per-connection pause between requests in the fixed-rate scenario")
    args = ap.parse_args()
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "beacon"], cwd=ROOT, check=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="beacon-bench-"))
    script = tmp / "post.lua"
    lua = ('wrk.method = "POST"\n'
           f"wrk.body = {json.dumps(BODY)}\n"
           'wrk.headers["Content-Type"] = "application/json"\n'
           f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
    script.write_text(lua)
    paced = tmp / "paced.lua"
    paced.write_text(lua + f"function delay() return {args.fixed_delay_ms} end\n")
    up_port = free_port()
    procs = [start_nginx(tmp, up_port)]
    wait_port(up_port)
    try:
        off, off_port = start_beacon(tmp, "off", up_port, False)
        on, on_port = start_beacon(tmp, "on", up_port, True)
        # Sentry down: the destination is a closed port (connection refused, retried, dropped).
        down, down_port = start_beacon(tmp, "down", up_port, True, sentry_port=free_port())
        procs += [off, on, down]
        targets = [("direct", up_port, "/v1/chat/completions", None), ("beacon_off", off_port, "/v1/chat/completions", off.pid),
                   ("beacon_on", on_port, "/v1/chat/completions", on.pid),
                   ("beacon_on_sentry_down", down_port, "/v1/chat/completions", down.pid)]
        for _, port, path, _ in targets:  # warm-up
            wrk(port, path, 2, args.connections, script)
        results = {name: [] for name, _, _, _ in targets}
        paced_results = {name: [] for name, _, _, _ in targets}
        for r in range(args.rounds):
            for name, port, path, pid in targets:
                res = wrk(port, path, args.duration, args.connections, script, pid)
                results[name].append(res)
                print(f"round {r + 1} saturated {name}: {res}", file=sys.stderr)
            for name, port, path, pid in targets:
                res = wrk(port, path, args.duration, args.connections, paced, pid)
                paced_results[name].append(res)
                print(f"round {r + 1} fixed-rate {name}: {res}", file=sys.stderr)
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{on_port}/metrics"], capture_output=True, text=True).stdout
        exported = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith("beacon_broadcast_exported_total"))
        dropped = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith("beacon_broadcast_dropped_total"))
        down_metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{down_port}/metrics"], capture_output=True, text=True).stdout
        down_dropped = {l.split("reason=\"")[1].split("\"")[0]: float(l.rsplit(" ", 1)[1])
                        for l in down_metrics.splitlines() if l.startswith("beacon_broadcast_dropped_total")}
        down_rss_kib = int(next(l.split()[1] for l in open(f"/proc/{down.pid}/status") if l.startswith("VmRSS:")))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def medians(res):
        return {n: {k: statistics.median(x[k] for x in runs) for k in runs[0] if k != "non_2xx"} for n, runs in res.items()}

    med = medians(results)
    paced_med = medians(paced_results)
    summary = {
        "command": "python3 bench/broadcast_bench.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "connections": args.connections, "rounds": args.rounds, "duration_s": args.duration,
        "medians": med,
        "fixed_rate_medians": paced_med,
        "fixed_delay_ms": args.fixed_delay_ms,
        "ratio_on_vs_off_rps": med["beacon_on"]["rps"] / med["beacon_off"]["rps"],
        "per_round_ratio_on_vs_off_rps": [a["rps"] / b["rps"] for a, b in zip(results["beacon_on"], results["beacon_off"])],
        "fixed_rate_ratio_on_vs_off_rps": paced_med["beacon_on"]["rps"] / paced_med["beacon_off"]["rps"],
        "ratio_sentry_down_vs_up_rps": med["beacon_on_sentry_down"]["rps"] / med["beacon_on"]["rps"],
        "fixed_rate_p99_sentry_down_vs_up": paced_med["beacon_on_sentry_down"]["p99_ms"] / paced_med["beacon_on"]["p99_ms"],
        "ratio_off_vs_direct_rps": med["beacon_off"]["rps"] / med["direct"]["rps"],
        "broadcast_exported": exported, "broadcast_dropped": dropped,
        "sentry_down_dropped_by_reason": down_dropped, "sentry_down_rss_kib_at_end": down_rss_kib,
        "runs": results,
        "fixed_rate_runs": paced_results,
    }
    out = ROOT / "docs/bench/broadcast.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| scenario | target | req/s (median) | p50 ms | p99 ms | gateway CPU µs/request |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, m in (("saturated", med), ("fixed rate", paced_med)):
        for n in ("direct", "beacon_off", "beacon_on", "beacon_on_sentry_down"):
            cpu = f"{m[n]['cpu_us_per_request']:.1f}" if "cpu_us_per_request" in m[n] else "–"
            print(f"| {label} | {n} | {m[n]['rps']:.0f} | {m[n]['p50_ms']:.2f} | {m[n]['p99_ms']:.2f} | {cpu} |")
    print(f"\nbroadcast on / off throughput, saturated: {summary['ratio_on_vs_off_rps']:.3f}"
          f" (per round: {', '.join(f'{r:.2f}' for r in summary['per_round_ratio_on_vs_off_rps'])})")
    print(f"broadcast on / off throughput, fixed rate: {summary['fixed_rate_ratio_on_vs_off_rps']:.3f}")
    print(f"broadcast on, Sentry down / up throughput, saturated: {summary['ratio_sentry_down_vs_up_rps']:.3f};"
          f" fixed-rate p99 down / up: {summary['fixed_rate_p99_sentry_down_vs_up']:.3f}")
    print(f"spans exported during the run: {exported:.0f}, dropped: {dropped:.0f}")
    print(f"Sentry down: dropped by reason {down_dropped}, RSS at the end {down_rss_kib} KiB")


if __name__ == "__main__":
    main()
