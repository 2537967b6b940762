#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: a deterministic A/B of `beacon` builds.

Wall-clock A/B runs on this shared 2-core machine move by 20 % between rounds; instruction
counts do not (the same binary and inputs give the same count). For each binary, Beacon runs
under `valgrind --tool=callgrind` (all threads: proxy, export, main) behind the nginx stub of
gateway_bench.py, serves 500 and then, in a second run, 2,500 sequential requests on one
keep-alive connection; (I(2500) - I(500)) / 2000 is the cost of one request, start-up and
shut-down cancelled out. STREAM=1 sends the 12-chunk stream instead of the non-streaming
completion.

    python3 bench/instructions_per_request.py before=/tmp/beacon-before after=target/release/beacon
    STREAM=1 python3 bench/instructions_per_request.py before=... after=...

Needs valgrind and what gateway_bench.py installs (nginx).
"""
import glob
import http.client
import os
import pathlib
import sys
import tempfile
import time
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g
tmp = pathlib.Path(tempfile.mkdtemp(prefix="icount-")); tmp.chmod(0o755)
up = g.free_port()
procs = [g.start_nginx(tmp, "stub", g.stub_block(tmp, up))]
g.wait_port(up)
STREAM = os.environ.get("STREAM") == "1"
def run(binary, n, tag):
    out = tmp / f"cg-{tag}"
    wrapper = tmp / f"wrap-{tag}.sh"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out}.%p {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    os.environ["BEACON_BIN"] = str(wrapper)
    proc, port = g.start_beacon(tmp, f"b{tag}", up, True)
    time.sleep(2)
    body = g.body("sse/gpt-4o", True) if STREAM else g.body("stub/gpt-4o")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body=body, headers={"authorization": f"Bearer {g.KEY}", "content-type": "application/json"})
        r = c.getresponse(); r.read(); assert r.status == 200, r.status
    time.sleep(2)
    proc.terminate(); proc.wait(timeout=120)
    total = 0
    for f in glob.glob(f"{out}.*"):
        for line in open(f):
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    return total
try:
    res = {}
    for name, binary in [(b.split("=")[0], b.split("=")[1]) for b in sys.argv[1:]]:
        i1 = run(binary, 500, name + "1")
        i2 = run(binary, 2500, name + "2")
        res[name] = (i2 - i1) / 2000
        print(name, i1, i2, "instructions/request:", round(res[name]), flush=True)
finally:
    for p in procs:
        p.terminate()
