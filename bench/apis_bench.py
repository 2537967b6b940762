#!/usr/bin/env python3
"""Streaming cost of each API through Beacon, side by side in one run: chat completions,
OpenAI Responses and Anthropic Messages (SPEC §2.1), each a 12-delta stream with usage
from an nginx stub, broadcast on (a Sentry destination on the stub).

Two figures per API:
- TTFC added: time to the first body byte through Beacon minus the same straight from the
  stub, sequential requests on one keep-alive connection, ROUNDS interleaved rounds of N
  requests per target; medians of the per-round medians.
- instructions per request, counted by callgrind (all of Beacon's threads): (I(1300) -
  I(300)) / 1000 sequential streams, start-up and shut-down cancelled out. Deterministic,
  unlike wall-clock CPU on this shared machine.

    python3 bench/apis_bench.py [--bin target/release/beacon] [--rounds 5] [--n 300] [--no-callgrind]

Needs nginx (and valgrind for the instruction counts).
"""
import argparse
import http.client
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gateway_bench as g  # noqa: E402

WORDS = g.WORDS


def responses_sse():
    seq = iter(range(1000))
    def ev(kind, data):
        data = {"type": kind, "sequence_number": next(seq), **data}
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
    resp = {"id": "resp_bench", "object": "response", "status": "in_progress", "model": "gpt-4o-2025-04-14", "output": []}
    out = ev("response.created", {"response": resp}) + ev("response.in_progress", {"response": resp})
    out += ev("response.output_item.added", {"output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}})
    for w in WORDS:
        out += ev("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": w})
    text = "".join(WORDS)
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    out += ev("response.output_item.done", {"output_index": 0, "item": item})
    done = {**resp, "status": "completed", "output": [item],
            "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 8,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 28}}
    return out + ev("response.completed", {"response": done})


def messages_sse():
    def ev(kind, data):
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n"
    out = ev("message_start", {"message": {"id": "msg_bench", "type": "message", "role": "assistant",
             "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None,
             "usage": {"input_tokens": 20, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 1}}})
    out += ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    out += ev("ping", {})
    for w in WORDS:
        out += ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
    out += ev("content_block_stop", {"index": 0})
    out += ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 8}})
    return out + ev("message_stop", {})


def stub_block(port):
    q = g.nginx_quote
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /sse/v1/chat/completions {{ default_type text/event-stream; return 200 '{q(g.SSE)}'; }}
        location = /resp/v1/responses {{ default_type text/event-stream; return 200 '{q(responses_sse())}'; }}
        location = /anth/v1/messages {{ default_type text/event-stream; return 200 '{q(messages_sse())}'; }}
        location = /api/1/integration/otlp/v1/traces {{ default_type application/x-protobuf; return 200 ''; }}
    }}"""


def start_beacon(tmp, name, up, binary):
    return g.serve(tmp, name, f"""[[providers]]
name = "sse"
base_url = "http://127.0.0.1:{up}/sse/v1"
api_key = "sk-stub"
[[providers]]
name = "resp"
base_url = "http://127.0.0.1:{up}/resp/v1"
api_key = "sk-stub"
[[providers]]
name = "anth"
kind = "anthropic"
base_url = "http://127.0.0.1:{up}/anth/v1"
api_key = "sk-stub"
[[tenants]]
id = "bench"
api_keys = ["{g.KEY}"]
{g.sentry_destination(up)}""", binary)


MSG = [{"role": "user", "content": "Say hello"}]
# api: (beacon path, beacon body, stub path, stub body)
APIS = {
    "chat": ("/v1/chat/completions", {"model": "sse/gpt-4o", "messages": MSG, "stream": True},
             "/sse/v1/chat/completions", {"model": "gpt-4o", "messages": MSG, "stream": True}),
    "responses": ("/v1/responses", {"model": "resp/gpt-4o", "input": "Say hello", "stream": True},
                  "/resp/v1/responses", {"model": "gpt-4o", "input": "Say hello", "stream": True}),
    "messages": ("/v1/messages", {"model": "anth/claude-sonnet-4-5", "max_tokens": 64, "messages": MSG, "stream": True},
                 "/anth/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": MSG, "stream": True}),
}
HEADERS = {"authorization": f"Bearer {g.KEY}", "content-type": "application/json"}


def ttfc_round(port, path, body, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("POST", path, body=data, headers=HEADERS)
        r = c.getresponse()
        first = r.read1(1)
        times.append(time.perf_counter() - t0)
        rest = r.read()
        assert r.status == 200 and (first + rest), (r.status, rest[:200])
    c.close()
    return statistics.median(times)


def instructions(binary, tmp, up, path, body, n, tag):
    start = lambda name, b: start_beacon(tmp, name, up, b)  # noqa: E731
    return g.callgrind_instructions(start, binary, tmp, path, json.dumps(body), n, tag)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(g.ROOT / "target/release/beacon"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--no-callgrind", action="store_true")
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="apis-bench-")); tmp.chmod(0o755)
    up = g.free_port()
    procs = [g.start_nginx(tmp, "stub", stub_block(up))]
    g.wait_port(up)
    try:
        beacon, port = start_beacon(tmp, "beacon", up, a.bin)
        procs.append(beacon)
        for name, (bp, bb, sp, sb) in APIS.items():  # warm-up, and a check that each works
            ttfc_round(port, bp, bb, 20); ttfc_round(up, sp, sb, 20)
        added = {name: [] for name in APIS}
        for r in range(a.rounds):
            for name, (bp, bb, sp, sb) in APIS.items():
                direct = ttfc_round(up, sp, sb, a.n)
                via = ttfc_round(port, bp, bb, a.n)
                added[name].append((via - direct) * 1e6)
            print(f"round {r + 1}: " + ", ".join(f"{k} +{v[-1]:.0f} µs" for k, v in added.items()), flush=True)
        result = {"ttfc_added_us": {k: round(statistics.median(v), 1) for k, v in added.items()}}
        if not a.no_callgrind:
            icount = {}
            for name, (bp, bb, _, _) in APIS.items():
                i1 = instructions(a.bin, tmp, up, bp, bb, 300, f"{name}1")
                i2 = instructions(a.bin, tmp, up, bp, bb, 1300, f"{name}2")
                icount[name] = round((i2 - i1) / 1000)
                print(f"{name}: {icount[name]} instructions/request", flush=True)
            result["instructions_per_request"] = icount
        print(json.dumps(result, indent=2))
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
