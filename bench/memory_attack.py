#!/usr/bin/env python3
"""The memory attack of the reliability issue, side by side for Beacon builds.

One tenant key sends REQUESTS chat completions, each with METADATA_MB of `trace` metadata
(one string value), while the tenant's only broadcast destination accepts connections and
never answers. Before records were bounded by bytes, every record kept its whole `trace`
(and copied it into every span), so the export queue grew with the attack; now a record
keeps at most broadcast.max_metadata_bytes of metadata and the export path holds at most
broadcast.queue_max_bytes.

Reports, per binary: RSS before the attack, peak RSS (VmHWM) and RSS after, all in MiB.
Everything runs on 127.0.0.1 (a canned upstream and the hanging destination are in this
process); the config uses only keys every build understands.

    python3 bench/memory_attack.py --bin OLD=/path/to/old/beacon --bin NEW=target/release/beacon
"""
import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from fault_stubs import free_port, start_beacon, start_upstream, status

KEY = "bk-memory-attack-key"


def hanging_destination():
    """Accepts connections and never answers (the sockets are kept open)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    held = []

    def run():
        while True:
            conn, _ = srv.accept()
            held.append(conn)

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def run(binary, up_port, dest_port, requests, metadata_mb, concurrency):
    tmp = tempfile.mkdtemp(prefix="beacon-memory-")
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
max_body_bytes = {int((metadata_mb + 2) * 1024 * 1024)}
[store]
url = "sqlite://{tmp}/beacon.db"
[broadcast]
allow_private_destinations = true
export_timeout_secs = 600
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
type = "otlp"
name = "hanging"
endpoint = "http://127.0.0.1:{dest_port}/v1/traces"
"""
    proc, port = start_beacon(binary, config, tmp)
    try:
        time.sleep(0.5)
        before = status(proc.pid, "VmRSS")
        body = json.dumps({
            "model": "up/echo",
            "messages": [{"role": "user", "content": "hi"}],
            "trace": {"trace_name": "attack", "blob": "x" * int(metadata_mb * 1024 * 1024)},
        }).encode()
        codes = []

        def send(n):
            for _ in range(n):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                    headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
                try:
                    codes.append(urllib.request.urlopen(req, timeout=120).status)
                except Exception as e:  # an error status is recorded too
                    codes.append(getattr(e, "code", str(e)))

        per = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
        threads = [threading.Thread(target=send, args=(n,)) for n in per]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(3)  # the export path has routed everything to the hanging destination
        return {
            "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(status(proc.pid, "VmHWM"), 1),
            "rss_after_mib": round(status(proc.pid, "VmRSS"), 1),
            "statuses": sorted(set(map(str, codes))),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH of a beacon binary (repeat)")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--metadata-mb", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=5)
    args = ap.parse_args()
    up_port = start_upstream()
    dest = hanging_destination()
    results = {}
    for spec in args.bin:
        name, _, binary = spec.partition("=")
        results[name] = run(binary, up_port, dest, args.requests,
                            args.metadata_mb, args.concurrency)
        print(name, json.dumps(results[name]), flush=True)
    json.dump(results, sys.stdout)
    print()


if __name__ == "__main__":
    main()
