#!/usr/bin/env python3
"""The reliability soak: steady load for DURATION seconds while the Sentry receiver flaps.

- Beacon (the binary given) proxies to a canned upstream in this process; one tenant
  broadcasts every completion to one Sentry destination, a receiver in this process that
  changes every FLAP seconds: up (200), 503, hanging (never answers), down (connection
  refused), up, ...
- CLIENTS threads send chat completions back to back; BIG_SHARE of them carry BIG_MB of
  `trace` metadata (one string value).
- RSS is sampled every second. At the end the receiver stays up until the export path has
  settled, then the accounting identity is checked from /metrics: for the destination,
  exported + dropped (every reason) == completions recorded.

Prints a JSON summary (RSS by minute, statuses, the identity); exits 1 if a client saw an
error or the identity does not hold.

    python3 bench/soak_faults.py --bin target/release/beacon --duration 600
"""
import argparse
import http.client
import http.server
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request

from fault_stubs import free_port, start_beacon, start_upstream, status

KEY = "bk-soak-key"


class Receiver:
    """A Sentry OTLP endpoint whose behaviour is set from outside."""

    MODES = ["up", "503", "hang", "down"]

    def __init__(self):
        self.mode = "up"
        self.port = free_port()
        self.server = None
        self.accepted = 0
        self.lock = threading.Lock()
        self._start()

    def _start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                mode = receiver.mode
                if mode == "hang":
                    time.sleep(3600)
                    return
                status = 200 if mode == "up" else 503
                if status == 200:
                    with receiver.lock:
                        receiver.accepted += 1
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                if status == 503:
                    self.send_header("retry-after", "1")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, mode):
        if mode == "down" and self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        elif mode != "down" and self.server is None:
            self._start()
        self.mode = mode


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out


def total(m, prefix, *needles):
    return sum(v for k, v in m.items() if k.startswith(prefix) and all(n in k for n in needles))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--duration", type=int, default=600)
    ap.add_argument("--flap", type=int, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--big-share", type=float, default=0.05)
    ap.add_argument("--big-mb", type=float, default=1.0)
    args = ap.parse_args()

    up_port = start_upstream()
    receiver = Receiver()
    tmp = tempfile.mkdtemp(prefix="beacon-soak-")
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
drain_delay_secs = 0
[store]
url = "sqlite://{tmp}/beacon.db"
[broadcast]
allow_private_destinations = true
export_timeout_secs = 2
[[providers]]
name = "up"
base_url = "http://127.0.0.1:{up_port}/v1"
default = true
[[tenants]]
id = "acme"
api_keys = ["{KEY}"]
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "flapping"
otlp_endpoint = "http://127.0.0.1:{receiver.port}/api/1/integration/otlp/v1/traces"
dsn = "http://soakkey@127.0.0.1:{receiver.port}/1"
"""
    proc, port = start_beacon(args.bin, config, tmp, log=open(os.path.join(tmp, "beacon.log"), "w"))

    small = json.dumps({"model": "up/echo", "messages": [{"role": "user", "content": "hi"}]}).encode()
    big = json.dumps({"model": "up/echo", "messages": [{"role": "user", "content": "hi"}],
                      "trace": {"trace_name": "soak", "blob": "x" * int(args.big_mb * 1024 * 1024)}}).encode()
    stop = threading.Event()
    statuses = {}
    lock = threading.Lock()

    def client(seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            body = big if rng.random() < args.big_share else small
            try:
                conn.request("POST", "/v1/chat/completions", body=body,
                             headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                code = str(resp.status)
            except Exception as e:
                code = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                statuses[code] = statuses.get(code, 0) + 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    start = time.time()
    rss = []
    modes = Receiver.MODES
    while time.time() - start < args.duration:
        elapsed = time.time() - start
        receiver.set(modes[int(elapsed // args.flap) % len(modes)])
        rss.append((round(elapsed), status(proc.pid, "VmRSS")))
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=70)
    receiver.set("up")
    # Settle: every record is exported or dropped with a reason (retries end within ~40 s).
    identity = None
    for _ in range(120):
        m = metrics(port)
        completions = total(m, "beacon_completions_total")
        exported = total(m, "beacon_broadcast_exported_total", 'destination="flapping"')
        dropped = {}
        for k, v in m.items():
            if k.startswith("beacon_broadcast_dropped_total") and 'destination="flapping"' in k and v:
                dropped[k.split('reason="')[1].split('"')[0]] = v
        queue_drops = total(m, "beacon_broadcast_dropped_total", 'destination=""')
        identity = {"completions": completions, "exported": exported, "dropped": dropped,
                    "dropped_before_fan_out": queue_drops,
                    "held_bytes": total(m, "beacon_broadcast_held_bytes")}
        if exported + sum(dropped.values()) + queue_drops == completions:
            break
        time.sleep(1)
    proc.terminate()
    proc.wait(timeout=60)
    per_minute = {}
    for t, r in rss:
        per_minute.setdefault(t // 60, []).append(r)
    summary = {
        "duration_s": args.duration,
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "rss_mib_by_minute": {m: {"min": round(min(v), 1), "max": round(max(v), 1)} for m, v in sorted(per_minute.items())},
        "peak_rss_mib": round(max(r for _, r in rss), 1),
        "identity": identity,
        "receiver_accepted_batches": receiver.accepted,
    }
    print(json.dumps(summary, indent=1))
    ok = set(statuses) == {"200"} and identity and (
        identity["exported"] + sum(identity["dropped"].values()) + identity["dropped_before_fan_out"]
        == identity["completions"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
