#!/usr/bin/env python3
"""Interleaved A/B of two or more `beacon` binaries on the same stub, for a change's before
and after (build each, copy the binaries aside, then compare them side by side).

Each round runs, for every binary in turn: wrk at 64 connections (req/s, p99, CPU µs per
request, peak RSS), a fixed-rate run at 2,000 req/s (p50, p99) and 2,000 streams 16 at a
time (time to first chunk). Medians of the rounds are printed with every round's value.
With --with-off, each binary also runs with broadcast off (wrk only, in the same rounds), and
the broadcast on/off throughput ratio and CPU difference per request are printed.

Usage:
  python3 bench/ab.py [--rounds 4] BINARY BINARY [BINARY ...]
e.g. cp target/release/beacon /tmp/beacon-before; (change, rebuild);
     python3 bench/ab.py /tmp/beacon-before target/release/beacon
Needs what bench/gateway_bench.py installs (nginx, wrk, bench/loadgen in release mode).
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--with-off", action="store_true", help="also run each binary with broadcast off")
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    if len(args.binaries) < 2:
        raise SystemExit("give at least two binaries")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="beacon-ab-"))
    tmp.chmod(0o755)
    up = g.free_port()
    procs = [g.start_nginx(tmp, "stub", g.stub_block(tmp, up))]
    g.wait_port(up)
    try:
        targets, offs = {}, {}
        for i, path in enumerate(args.binaries):
            os.environ["BEACON_BIN"] = str(pathlib.Path(path).resolve())
            proc, port = g.start_beacon(tmp, f"b{i}", up, True)
            procs.append(proc)
            targets[f"{i}:{path}"] = (proc, port)
            if args.with_off:
                proc, port = g.start_beacon(tmp, f"b{i}_off", up, False)
                procs.append(proc)
                offs[f"{i}:{path}"] = (proc, port)
        # As in gateway_bench.py: one cancelled stream needs an estimate, which loads the
        # token table, so peak RSS includes it.
        for proc, port in targets.values():
            g.subprocess.run(["curl", "-s", "-m", "0.5", f"http://127.0.0.1:{port}/v1/chat/completions",
                              "-H", f"authorization: Bearer {g.KEY}", "-H", "content-type: application/json",
                              "-d", g.body("slow/gpt-4o", True)], capture_output=True)
        script = g.wrk_script(tmp, "ab", "stub/gpt-4o")
        for proc, port in [*targets.values(), *offs.values()]:  # warm-up
            g.wrk(port, "/v1/chat/completions", 2, 64, script)
        res = {n: {k: [] for k in ("rps", "p99_ms", "cpu_us", "rss_kib", "rate_p50_us", "rate_p99_us", "ttfc16_p99_us")}
               for n in targets}
        off = {n: {"rps": [], "cpu_us": []} for n in offs}
        for r in range(args.rounds):
            for n, (proc, port) in targets.items():
                w = g.wrk(port, "/v1/chat/completions", 5, 64, script, proc.pid, rss_pid=proc.pid)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                auth = f"authorization: Bearer {g.KEY}"
                rate = g.loadgen("rate", "--url", url, "--body", g.body("stub/gpt-4o"), "-H", auth,
                                 "--rate", "2000", "--duration", "4", "--connections", "64")
                s16 = g.loadgen("stream", "--url", url, "--body", g.body("sse/gpt-4o", True), "-H", auth,
                                "--concurrency", "16", "--requests", "2000")
                for k, v in (("rps", w["rps"]), ("p99_ms", w["p99_ms"]), ("cpu_us", w["cpu_us_per_request"]),
                             ("rss_kib", w["rss_peak_kib_under_load"]), ("rate_p50_us", rate["latency"]["p50_us"]),
                             ("rate_p99_us", rate["latency"]["p99_us"]),
                             ("ttfc16_p99_us", s16["time_to_first_chunk"]["p99_us"])):
                    res[n][k].append(v)
                print(f"round {r + 1} {n}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in res[n].items()), file=sys.stderr)
                if n in offs:
                    proc, port = offs[n]
                    w = g.wrk(port, "/v1/chat/completions", 5, 64, script, proc.pid)
                    off[n]["rps"].append(w["rps"])
                    off[n]["cpu_us"].append(w["cpu_us_per_request"])
                    print(f"round {r + 1} {n} broadcast off: rps {w['rps']:.1f}, cpu_us {w['cpu_us_per_request']:.1f}", file=sys.stderr)
        for n, d in res.items():
            print(n)
            for k, v in d.items():
                print(f"  {k:<14} median {statistics.median(v):>10.1f}   rounds {[round(x, 1) for x in v]}")
            if n in off:
                ratios = [a / b for a, b in zip(d["rps"], off[n]["rps"])]
                extra = [a - b for a, b in zip(d["cpu_us"], off[n]["cpu_us"])]
                print(f"  {'on/off rps':<14} median {statistics.median(ratios):>10.3f}   rounds {[round(x, 3) for x in ratios]}")
                print(f"  {'on-off cpu_us':<14} median {statistics.median(extra):>10.2f}   rounds {[round(x, 2) for x in extra]}")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
