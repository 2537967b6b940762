#!/usr/bin/env python3
"""What limits cost on the request path (SPEC §5.1), side by side in one run, one binary:
instructions per request (callgrind, all threads, (I(2500) - I(500)) / 2000 sequential
non-streaming completions behind the nginx stub, broadcast to the Sentry stub on) for a key
with no limits, for a key whose key *and* tenant have every limit set (requests and tokens
per minute, concurrency, USD per day and month — high enough never to refuse), so each
request is admitted, settled and released against two scopes and carries six
x-ratelimit-* headers, and for a key with only a requests-per-minute limit (three headers).
The plain stub sends no rate headers of its own, so there every x-ratelimit-* header is an
added one; a second pair of runs uses the stub's `/openai/` upstream, which answers with
the headers OpenAI's API sends (its six x-ratelimit-*, relayed for an unlimited key and
replaced by the key's own for a limited one).

The reconciliation with the store runs once a second whatever the traffic, so its cost per
request is its cost per second divided by the request rate: nothing at load. Under
callgrind a request takes ~50× its native time, so the runs attribute ~50× the sync's real
share to each request. So every limited case syncs the same number of scopes (two): the
baseline ("no limits on this key") has an idle second tenant whose tenant and key are
limited, the rpm-only case that idle tenant's limits beside its key's, and the difference
is what a limited key adds per request. "No limits anywhere" (no sync at all) is printed
beside it, and the sync's own cost per second is reported from the two.

    python3 bench/limits_bench.py [--bin target/release/beacon] [--rounds 3]
    python3 bench/limits_bench.py --wall 5     # wall clock: CPU per request and req/s

Each figure is the median of `--rounds` runs, per thread (gateway_bench.
callgrind_instructions): the limiter runs on the serving proxy worker, so what a limited key
adds is that thread's difference, as a share of the whole request's cost (serving worker +
export thread). The export thread's count varies by a few per cent with how its batches
fall, and is printed beside it.

Needs nginx and valgrind (what gateway_bench.py installs).
"""
import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import statistics
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g  # noqa: E402

IDLE_KEY = "sk-beacon-bench-idle-key-00000000000"

LIMITS = """requests_per_minute = 1000000000
tokens_per_minute = 1000000000000
concurrent_requests = 100000
usd_per_day = 1000000.0
usd_per_month = 1000000.0
"""


def start_beacon(tmp, name, up, binary, limited, upstream=""):
    key_id = "key_" + hashlib.sha256(g.KEY.encode()).hexdigest()[:12]
    idle_id = "key_" + hashlib.sha256(IDLE_KEY.encode()).hexdigest()[:12]
    # The idle tenant: limited as much as the case needs for two synced scopes in all.
    idle = {"other": f"[tenants.limits]\n{LIMITS}\n[tenants.key_limits.\"{idle_id}\"]\n{LIMITS}",
            "rpm": f"[tenants.limits]\n{LIMITS}"}.get(limited, "")
    if limited == "other":
        limits = ""
    elif limited == "rpm":
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
    return g.serve(tmp, name, f"""[[providers]]
name = "stub"
base_url = "http://127.0.0.1:{up}{upstream}/v1"
api_key = "sk-stub"
[[tenants]]
id = "bench"
api_keys = ["{g.KEY}"]
{limits}
{g.sentry_destination(up)}
[[tenants]]
id = "idle"
api_keys = ["{IDLE_KEY}"]
{idle}
""", binary)


def ledger(a, tmp, up, procs):
    """The store writes off the request path, per second, at two request rates: 100 keys, each
    rpm-limited, × 5 models, one tenant. The ledger writes one transaction every 2 s with a
    row per (minute, key, model) seen; the limits one every second with 4 rows per scope —
    neither depends on the request rate, which this shows by measuring at two."""
    keys = [f"sk-beacon-ledger-{i:04d}-0000000000000000" for i in range(100)]
    models = [f"stub/model-{m}" for m in range(5)]
    port = g.free_port()
    key_limits = "".join(f'[tenants.key_limits."key_{hashlib.sha256(k.encode()).hexdigest()[:12]}"]\n'
                         f"requests_per_minute = 1000000000\n" for k in keys)
    conf = tmp / "ledger.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{tmp}/ledger.db"
[broadcast]
allow_private_destinations = true
[[providers]]
name = "stub"
base_url = "http://127.0.0.1:{up}/v1"
api_key = "sk-stub"
[[tenants]]
id = "bench"
api_keys = [{", ".join(f'"{k}"' for k in keys)}]
{key_limits}
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "stub"
otlp_endpoint = "http://127.0.0.1:{up}/api/1/integration/otlp/v1/traces"
dsn = "http://benchkey@127.0.0.1:{up}/1"
""")
    proc = subprocess.Popen([a.bin, "serve", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "ledger.log", "w"), env={**os.environ, "BEACON_LOG": "warn"})
    procs.append(proc)
    g.wait_port(port)
    script = tmp / "ledger.lua"
    slow = tmp / "ledger-slow.lua"
    lua = (
        "local keys = {" + ", ".join(f'"{k}"' for k in keys) + "}\n"
        "local models = {" + ", ".join(f'"{m}"' for m in models) + "}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  local k = keys[(i % #keys) + 1]\n"
        "  local m = models[(math.floor(i / #keys) % #models) + 1]\n"
        '  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json", '
        '["Authorization"] = "Bearer " .. k}, \'{"model":"\' .. m .. \'","messages":[{"role":"user","content":"Say hello"}]}\')\n'
        "end\n")
    script.write_text(lua)
    slow.write_text(lua + "delay = function() return 1 end\n")  # ms between a connection's requests

    def counters():
        text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True,
                              text=True).stdout
        out = {}
        for line in text.splitlines():
            if line.startswith(("beacon_store_writes_total", "beacon_store_rows_written_total")):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    g.wrk(port, "/v1/chat/completions", 2, 16, script)  # warm-up
    for connections, lua_script in ((64, script), (2, slow)):
        time.sleep(2.5)
        before, t0 = counters(), time.monotonic()
        w = g.wrk(port, "/v1/chat/completions", 10, connections, lua_script, proc.pid)
        time.sleep(2.5)  # the last batch written
        after, secs = counters(), time.monotonic() - t0
        if w["non_2xx"] or w["socket_errors"]:
            raise SystemExit(f"wrk: {w}")
        d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        lw = d.get('beacon_store_writes_total{what="usage_ledger",result="ok"}', 0)
        lr = d.get('beacon_store_rows_written_total{what="usage_ledger"}', 0)
        cw = d.get('beacon_store_writes_total{what="limit_counters",result="ok"}', 0)
        cr = d.get('beacon_store_rows_written_total{what="limit_counters"}', 0)
        errors = sum(v for k, v in d.items() if 'result="error"' in k)
        paced = " (1 ms pause per request)" if lua_script == slow else ""
        print(f"wrk {connections} connections{paced}: {w['rps']:,.0f} req/s for 10 s; over {secs:.1f} s: usage ledger "
              f"{lw / secs:.2f} writes/s ({lr / max(lw, 1):.0f} rows each, {lr / secs:.0f} rows/s), limit counters "
              f"{cw / secs:.2f} writes/s ({cr / max(cw, 1):.0f} rows each); failed writes {errors:.0f}", flush=True)


def wall(a, tmp, up, procs):
    """Wall-clock A/B: the same binary, a key without limits (the idle tenant limited, so the
    sync runs alike) and a key with every limit on key and tenant; wrk rounds interleaved."""
    targets = {}
    # The unlimited key twice (first and last in each round): their difference is the
    # measurement's own noise, order effects included.
    for label, limited in (("no limits on this key", "other"), ("key and tenant limits", True),
                           ("no limits on this key (again)", "other")):
        proc, port = start_beacon(tmp, label.replace(" ", "_"), up, a.bin, limited)
        procs.append(proc)
        targets[label] = (proc, port)
    script = g.wrk_script(tmp, "limits", "stub/gpt-4o")
    for proc, port in targets.values():  # warm-up
        g.wrk(port, "/v1/chat/completions", 2, 64, script)
    res = {n: {"rps": [], "cpu_us": [], "user_share": []} for n in targets}
    for r in range(a.wall):
        for n, (proc, port) in targets.items():
            w = g.wrk(port, "/v1/chat/completions", 5, 64, script, proc.pid)
            if w["non_2xx"] or w["socket_errors"]:
                raise SystemExit(f"{n}: {w}")
            res[n]["rps"].append(w["rps"])
            res[n]["cpu_us"].append(w["cpu_us_per_request"])
            res[n]["user_share"].append(w["cpu_user_us_per_request"] / w["cpu_us_per_request"])
            print(f"round {r + 1} {n}: {w['rps']:.0f} req/s, {w['cpu_us_per_request']:.2f} µs CPU/request", flush=True)
    for n, d in res.items():
        print(f"{n}: median {statistics.median(d['rps']):,.0f} req/s, {statistics.median(d['cpu_us']):.2f} µs CPU "
              f"per request, of it user space {statistics.median(d['user_share']) * 100:.0f} % "
              f"(rounds {[round(x * 100) for x in d['user_share']]})")
    for label in ("key and tenant limits", "no limits on this key (again)"):
        base, other = res["no limits on this key"], res[label]
        cpu = [b / a - 1 for a, b in zip(base["cpu_us"], other["cpu_us"])]
        rps = [b / a for a, b in zip(base["rps"], other["rps"])]
        print(f"{label} over no limits on this key: CPU per request {statistics.median(cpu) * 100:+.2f} % "
              f"(rounds {[round(x * 100, 2) for x in cpu]}), req/s ×{statistics.median(rps):.3f} "
              f"(rounds {[round(x, 3) for x in rps]})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(g.ROOT / "target/release/beacon"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="run only the cases whose label contains this")
    ap.add_argument("--ledger", action="store_true",
                    help="instead: the store writes (usage ledger, limit counters) per second under wrk load "
                         "from 100 limited keys × 5 models, at two request rates")
    ap.add_argument("--wall", type=int, metavar="ROUNDS",
                    help="instead: wall clock, ROUNDS interleaved wrk runs (64 connections, 5 s) of a "
                         "key without and with key and tenant limits, CPU µs per request and req/s")
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="limits-bench-")); tmp.chmod(0o755)
    up = g.free_port()
    procs = [g.start_nginx(tmp, "stub", g.stub_block(tmp, up))]
    g.wait_port(up)
    try:
        if a.wall:
            return wall(a, tmp, up, procs)
        if a.ledger:
            return ledger(a, tmp, up, procs)
        res = {}
        cases = (("no limits on this key", "other", ""), ("key and tenant limits", True, ""),
                 ("key rpm only", "rpm", ""), ("no limits anywhere", False, ""),
                 ("OpenAI headers: no limits on this key", "other", "/openai"),
                 ("OpenAI headers: key and tenant limits", True, "/openai"))
        for label, limited, upstream in cases:
            if a.only and a.only not in label:
                continue
            start = lambda name, b, limited=limited, upstream=upstream: start_beacon(  # noqa: E731
                tmp, name, up, b, limited, upstream)
            tag = label.replace(" ", "_").replace(":", "")
            runs = []
            for r in range(a.rounds):
                t = [time.monotonic()]
                c = []
                for n in (500, 2500):
                    c.append(g.callgrind_instructions(start, a.bin, tmp, "/v1/chat/completions",
                                                      g.body("stub/gpt-4o"), n, f"{tag}-{r}-{n}", per_thread=True))
                    t.append(time.monotonic())
                (p1, x1, *_), (p2, x2, *_) = c
                assert p2 - p1 > 2 * (x2 - x1) > 0, c  # the serving worker, then the export thread
                runs.append({"proxy": (p2 - p1) / 2000, "export": (x2 - x1) / 2000,
                             "all": (sum(c[1]) - sum(c[0])) / 2000, "secs": (t[2] - t[1]) - (t[1] - t[0])})
            res[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            m = res[label]
            print(f"{label}: serving worker {m['proxy']:,.0f} instructions/request "
                  f"(rounds: {', '.join(format(r['proxy'], ',.0f') for r in runs)}), export thread {m['export']:,.0f}, "
                  f"all threads {m['all']:,.0f}", flush=True)

        if a.only:
            return

        def over(label, base):
            # What the limited key adds on the serving worker, against the whole request's
            # cost without it (serving worker + export thread).
            b, l = res[base], res[label]
            return (l["proxy"] - b["proxy"]) / (b["proxy"] + b["export"]) * 100

        for label in ("key and tenant limits", "key rpm only"):
            print(f"{label} over no limits on this key: {over(label, 'no limits on this key'):+.2f} % of a request "
                  f"(serving worker {res[label]['proxy'] - res['no limits on this key']['proxy']:+,.0f} instructions)")
        print(f"with OpenAI's response headers (relayed, or replaced by the key's): key and tenant limits over no "
              f"limits on this key: {over('OpenAI headers: key and tenant limits', 'OpenAI headers: no limits on this key'):+.2f} %")
        # The sync: what the other threads spend per second in the two-scope case beyond the
        # case with no limits at all.
        def rest(label):
            m = res[label]
            return (m["all"] - m["proxy"] - m["export"]) * 2000 / m["secs"]
        sync = rest("no limits on this key") - rest("no limits anywhere")
        print(f"the once-a-second sync of two scopes: about {sync:,.0f} instructions per second "
              f"(at 10,000 req/s, {sync / 10000:.1f} per request)")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
