#!/usr/bin/env python3
"""Broadcast beyond Sentry (issue 17): throughput with broadcast on — a Sentry destination
with error events on and a second destination of another type (Langfuse, with its dialect) —
against broadcast off, side by side in one run.

nginx plays the upstream (a canned chat completion; a `fail` provider answering 500, so one
request in 20 fails and becomes a Sentry error event, most of them deduplicated) and every
destination's ingestion (Sentry's OTLP and envelope endpoints, Langfuse's OTel route). Two
`beacon serve` (release build) run at once: broadcast off, and broadcast on with both
destinations. Each round runs wrk (2 threads, 64 connections, the same request mix) against
each in turn, then a fixed rate of 2,000 req/s (latency below saturation); the medians of the
rounds are printed, with every round's value, the on/off
throughput ratio of each round, and what the export path counted (exported per destination,
error events by outcome, drops by reason).

With --paired N, N blocks of four short saturated runs instead, in the order off, on, on, off
(each pair of runs seeing the same machine; the order cancels a drift within the block); a
block's ratio is (on + on) / (off + off) and the median over the blocks is printed with
every block's value. For noisy machines, where a 5 s round's ratio moves by ±0.2. Each
`--with NAME=BINARY[:VAR=VALUE]` adds another broadcast-on build to every block (off, on,
the others, then backwards) and prints its ratio to off too; with a build of
bench/patches/export_floor.patch and BEACON_EXPORT_FLOOR=batch (or gzip, or none) it measures the
export path's floor: no conversion, no span encoding, only the fan-out, the queues, compression
(of the first batch's real records with =batch; of one record's bytes repeated with =gzip, which
deflate compresses almost free; none with =none) and the POST.

With --export-cpu B1,B2,..., several builds with broadcast on, side by side: each round runs
wrk saturated (--duration s) against each build in turn, and reads each build's export
thread CPU time (user + system, /proc) per completion — what the export path costs in time
at saturation, under the cache and scheduling effects an instruction count leaves out.

With --instructions, callgrind counts instead (deterministic, one thread at a time): the
serving worker's and the export thread's instructions per request for broadcast off, one
Sentry destination, and Sentry + Langfuse — what each destination costs the export thread.

Usage:
  python3 bench/destinations_bench.py [--rounds 5] [--duration 5] [--bin target/release/beacon]
  python3 bench/destinations_bench.py --paired 20 --duration 2
  python3 bench/destinations_bench.py --paired 16 --duration 2 --bin B --with gzip_only=FLOOR:BEACON_EXPORT_FLOOR=gzip \
      --with nothing=FLOOR:BEACON_EXPORT_FLOOR=none     (FLOOR: a build with bench/patches/export_floor.patch)
  python3 bench/destinations_bench.py --instructions --rounds 3
  python3 bench/destinations_bench.py --export-cpu /tmp/beacon-before,target/release/beacon --rounds 5 --duration 4
Needs what bench/gateway_bench.py installs (nginx, wrk).
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g  # noqa: E402

FAIL_BODY = json.dumps({"error": {"message": "The server had an error processing your request.",
                                  "type": "server_error", "code": None}})


def sinks_block(port):
    """The upstream's failing route and every destination's ingestion, on one nginx server."""
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /fail/v1/chat/completions {{ default_type application/json; return 500 '{g.nginx_quote(FAIL_BODY)}'; }}
        location = /api/1/integration/otlp/v1/traces {{ default_type application/x-protobuf; return 200 ''; }}
        location = /api/1/envelope/ {{ default_type application/json; return 200 '{{"id":"0"}}'; }}
        location = /api/public/otel/v1/traces {{ default_type application/json; return 200 '{{}}'; }}
    }}"""


def start(tmp, name, up, sinks, broadcast, binary):
    """`broadcast`: False (off), "sentry" (a Sentry destination only), or True (Sentry and
    Langfuse)."""
    sentry = f"""
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "sentry"
otlp_endpoint = "http://127.0.0.1:{sinks}/api/1/integration/otlp/v1/traces"
dsn = "http://benchkey@127.0.0.1:{sinks}/1"
error_events = true
"""
    langfuse = f"""
[[tenants.broadcast.destinations]]
type = "langfuse"
name = "langfuse"
host = "http://127.0.0.1:{sinks}"
public_key = "pk-lf-bench"
secret_key = "sk-lf-bench"
"""
    destinations = "" if not broadcast else sentry if broadcast == "sentry" else sentry + langfuse
    return g.serve(tmp, name, f"""[[providers]]
name = "stub"
base_url = "http://127.0.0.1:{up}/v1"
api_key = "sk-stub"
[[providers]]
name = "fail"
base_url = "http://127.0.0.1:{sinks}/fail/v1"
api_key = "sk-stub"
[routing]
max_attempts = 1
[[tenants]]
id = "bench"
api_keys = ["{g.KEY}"]
{destinations}
""", binary)


def mixed_script(tmp):
    """One request in 20 to the failing provider, the rest to the stub."""
    path = tmp / "mixed.lua"
    ok, fail = g.body("stub/gpt-4o"), g.body("fail/gpt-4o")
    path.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {g.KEY}"
local n = 0
request = function()
  n = n + 1
  if n % 20 == 0 then
    return wrk.format(nil, nil, nil, {json.dumps(fail)})
  end
  return wrk.format(nil, nil, nil, {json.dumps(ok)})
end
""")
    return path


def metrics(port):
    text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        for family in ("beacon_broadcast_exported_total", "beacon_broadcast_dropped_total",
                       "beacon_broadcast_error_events_total"):
            if line.startswith(family):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                key = f"{family}{{{','.join(f'{k}={v}' for k, v in sorted(labels.items()) if k != 'tenant')}}}"
                out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return out


def instructions(args, tmp, up, sinks, binary):
    """Serving worker and export thread instructions per request (callgrind, 2,000 requests:
    2,500 minus 500, sequential on one connection), medians of `--rounds`."""
    res = {}
    for label, mode in (("broadcast off", False), ("Sentry", "sentry"), ("Sentry + Langfuse", True)):
        runs = []
        for r in range(args.rounds):
            start_one = lambda name, b, mode=mode: start(tmp, name, up, sinks, mode, b)  # noqa: E731
            c = [g.callgrind_instructions(start_one, binary, tmp, "/v1/chat/completions", g.body("stub/gpt-4o"),
                                          n, f"{label.replace(' ', '_').replace('+', 'and')}-{r}-{n}", per_thread=True)
                 for n in (500, 2500)]
            (p1, x1, *_), (p2, x2, *_) = c
            runs.append({"worker": (p2 - p1) / 2000, "export": (x2 - x1) / 2000})
        res[label] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        res[label]["rounds"] = runs
        print(f"{label}: serving worker {res[label]['worker']:,.0f}, export thread {res[label]['export']:,.0f} "
              f"instructions/request", file=sys.stderr, flush=True)
    print(json.dumps(res, indent=2))


def paired(args, targets, script, start_all=None):
    """--paired: blocks of saturated runs off, on, on, off (with --with: off, on, the other
    builds, then the same backwards); each block's on/off ratio per broadcast-on build. With
    `start_all` (--fresh), every block runs on newly started processes, stopped after it."""
    exported = {}
    if start_all:
        targets = start_all("-1")
    names = list(targets)
    order = names + names[::-1]
    blocks, export_us, cpu_us = [], {n: [] for n in names}, {n: [] for n in names}
    for b in range(args.paired):
        if start_all and b > 0:
            for key, value in metrics(targets["on"][1]).items():
                exported[key] = exported.get(key, 0) + value
            for proc, _ in targets.values():
                proc.terminate()
                proc.wait(timeout=30)
            targets = start_all(f"-{b + 1}")
        rps = {n: [] for n in names}
        for name in order:
            proc, port = targets[name]
            w = g.wrk(port, "/v1/chat/completions", args.duration, 64, script, proc.pid)
            rps[name].append(w["rps"])
            export_us[name].append(w["threads"].get("beacon-export", 0.0) * 1e6 / max(w["rps"], 1))
            cpu_us[name].append(w["cpu_us_per_request"])
        block = {"off": rps["off"], "on": rps["on"], "ratio": sum(rps["on"]) / sum(rps["off"])}
        for n in names[2:]:
            block[n] = {"rps": rps[n], "ratio": sum(rps[n]) / sum(rps["off"])}
        blocks.append(block)
        others = "".join(f", {n} {block[n]['ratio']:.3f}" for n in names[2:])
        print(f"block {b + 1}: off {rps['off'][0]:.0f} / {rps['off'][1]:.0f}, on {rps['on'][0]:.0f} / "
              f"{rps['on'][1]:.0f} req/s, on/off {block['ratio']:.3f}{others}", file=sys.stderr, flush=True)

    def spread(values):
        values = sorted(values)
        q = len(values) // 4
        return statistics.median(values), [values[q], values[-1 - q]]

    median, iqr = spread(x["ratio"] for x in blocks)
    out = {
        "duration_s": args.duration,
        "blocks": blocks,
        "on_off_rps_ratio_median": median,
        "on_off_rps_ratio_interquartile": iqr,
        "export_thread_us_per_request": {n: statistics.median(v) for n, v in export_us.items()},
        "beacon_cpu_us_per_request": {n: statistics.median(v) for n, v in cpu_us.items()},
        "on_export": {k: v + exported.get(k, 0) for k, v in metrics(targets["on"][1]).items()},
        "fresh_processes_per_block": bool(start_all),
    }
    for n in names[2:]:
        m, q = spread(x[n]["ratio"] for x in blocks)
        out[f"{n}_off_rps_ratio_median"], out[f"{n}_off_rps_ratio_interquartile"] = m, q
    print(json.dumps(out, indent=2))


def export_cpu(args, tmp, up, sinks, procs):
    """--export-cpu: each build's export thread CPU µs per completion at saturation, broadcast
    on, the builds side by side in every round."""
    binaries = [str(pathlib.Path(b).resolve()) for b in args.export_cpu.split(",")]
    targets = {}
    for i, b in enumerate(binaries):
        proc, port = start(tmp, f"build{i}", up, sinks, True, b)
        procs.append(proc)
        targets[b] = (proc, port)
    script = mixed_script(tmp)
    for proc, port in targets.values():  # warm-up
        g.wrk(port, "/v1/chat/completions", 2, 64, script)
    res = {b: {"rps": [], "export_us": [], "cpu_us": []} for b in binaries}
    for r in range(args.rounds):
        for b, (proc, port) in targets.items():
            w = g.wrk(port, "/v1/chat/completions", args.duration, 64, script, proc.pid)
            completions = w["rps"] * args.duration
            res[b]["rps"].append(w["rps"])
            res[b]["cpu_us"].append(w["cpu_us_per_request"])
            res[b]["export_us"].append(w["threads"].get("beacon-export", 0.0) * args.duration * 1e6 / completions)
            print(f"round {r + 1} {b}: {w['rps']:.0f} req/s, export thread {res[b]['export_us'][-1]:.1f} µs "
                  f"per completion", file=sys.stderr, flush=True)
    print(json.dumps({
        "duration_s": args.duration,
        "median": {b: {k: statistics.median(v) for k, v in m.items()} for b, m in res.items()},
        "rounds_values": res,
        "export": {b: metrics(port) for b, (_, port) in targets.items()},
    }, indent=2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--bin", default=str(g.ROOT / "target/release/beacon"))
    ap.add_argument("--instructions", action="store_true",
                    help="instead: callgrind instructions per request, per thread, for broadcast off, "
                         "a Sentry destination, and Sentry + Langfuse (deterministic; no failing requests)")
    ap.add_argument("--paired", type=int, metavar="N",
                    help="instead: N blocks of saturated runs off, on, on, off (--duration s each), "
                         "the median of the blocks' on/off throughput ratios")
    ap.add_argument("--fresh", action="store_true",
                    help="with --paired: start every target anew for each block (a process's own speed "
                         "moves by several percent from one start to the next on a shared machine; new "
                         "processes per block average that out instead of carrying it into every block)")
    ap.add_argument("--with", dest="with_build", action="append", default=[], metavar="NAME=BINARY[:VAR=VALUE]",
                    help="with --paired: another broadcast-on build in the same blocks (started with the "
                         "environment variable VAR=VALUE, e.g. a build of bench/patches/export_floor.patch with "
                         "BEACON_EXPORT_FLOOR=gzip), its throughput against broadcast off")
    ap.add_argument("--export-cpu", metavar="B1,B2",
                    help="instead: these builds with broadcast on, side by side: the export thread's "
                         "CPU µs per completion at saturation")
    args = ap.parse_args()
    binary = str(pathlib.Path(args.bin).resolve())
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="beacon-dest-"))
    tmp.chmod(0o755)
    up, sinks = g.free_port(), g.free_port()
    procs = [g.start_nginx(tmp, "stub", g.stub_block(tmp, up) + sinks_block(sinks))]
    g.wait_port(up)
    g.wait_port(sinks)
    try:
        if args.instructions:
            return instructions(args, tmp, up, sinks, binary)
        if args.export_cpu:
            return export_cpu(args, tmp, up, sinks, procs)
        script = mixed_script(tmp)

        def start_all(tag=""):
            """Every target (off, on, the --with builds), warmed up; `tag` names a fresh set."""
            targets = {}
            for name, on in (("off", False), ("on", True)):
                targets[name] = start(tmp, name + tag, up, sinks, on, binary)
            for spec in args.with_build:  # NAME=BINARY[:VAR=VALUE], broadcast on
                name, rest = spec.split("=", 1)
                other, _, env = rest.partition(":")
                var, _, value = env.partition("=")
                saved = os.environ.get(var) if var else None
                if var:
                    os.environ[var] = value
                try:
                    targets[name] = start(tmp, name + tag, up, sinks, True, str(pathlib.Path(other).resolve()))
                finally:
                    if var and saved is None:
                        os.environ.pop(var, None)
                    elif var:
                        os.environ[var] = saved
            procs.extend(proc for proc, _ in targets.values())
            for proc, port in targets.values():  # warm-up
                g.wrk(port, "/v1/chat/completions", 1 if tag else 2, 64, script)
            return targets

        if args.paired and args.fresh:
            return paired(args, None, script, start_all)
        targets = start_all()
        if args.paired:
            return paired(args, targets, script)
        res = {n: {"rps": [], "cpu_us": [], "p99_ms": [], "non_2xx": [], "rate_p50_us": [], "rate_p99_us": []}
               for n in targets}
        for r in range(args.rounds):
            for n, (proc, port) in targets.items():
                w = g.wrk(port, "/v1/chat/completions", args.duration, 64, script, proc.pid)
                res[n]["rps"].append(w["rps"])
                res[n]["cpu_us"].append(w["cpu_us_per_request"])
                res[n]["p99_ms"].append(w["p99_ms"])
                res[n]["non_2xx"].append(w["non_2xx"])
                # Below saturation: 2,000 req/s over 64 connections, latency percentiles.
                rate = g.loadgen("rate", "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
                                 "--body", g.body("stub/gpt-4o"), "-H", f"authorization: Bearer {g.KEY}",
                                 "--rate", "2000", "--duration", "3", "--connections", "64")
                res[n]["rate_p50_us"].append(rate["latency"]["p50_us"])
                res[n]["rate_p99_us"].append(rate["latency"]["p99_us"])
                print(f"round {r + 1} broadcast {n}: rps {w['rps']:.0f}, cpu_us {w['cpu_us_per_request']:.1f}, "
                      f"p99 {w['p99_ms']:.2f} ms, non-2xx {w['non_2xx']}; at 2,000 req/s p50 "
                      f"{rate['latency']['p50_us']} µs, p99 {rate['latency']['p99_us']} µs", file=sys.stderr)
        ratios = [on / off for on, off in zip(res["on"]["rps"], res["off"]["rps"])]
        summary = {
            "binary": binary,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "median": {n: {k: statistics.median(v) for k, v in m.items()} for n, m in res.items()},
            "rounds_values": res,
            "on_off_rps_ratio_per_round": ratios,
            "on_off_rps_ratio_median": statistics.median(ratios),
            "on_off_rps_ratio_of_medians": statistics.median(res["on"]["rps"]) / statistics.median(res["off"]["rps"]),
            "on_export": metrics(targets["on"][1]),
        }
        print(json.dumps(summary, indent=2))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
