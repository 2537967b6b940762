#!/usr/bin/env python3
"""Beacon against the direct path, nginx as a plain reverse proxy and LiteLLM, in one run.

One command installs and starts everything on 127.0.0.1:
  - nginx (Debian) as the upstream stub: a canned chat.completion, a canned SSE stream, a
    slow SSE stream (limit_rate) and a Sentry OTLP receiver answering 200;
  - nginx as a plain proxy_pass reverse proxy in front of the stub;
  - bench/loadgen's beacon-hyper-floor: hyper's server and client relaying and nothing else,
    on Beacon's thread layout (the floor of the stack Beacon is built on);
  - Beacon (release build) with broadcast on (to the Sentry stub), broadcast off, and
    broadcast on with Sentry down (a closed port);
  - LiteLLM proxy from PyPI (pinned; --no-litellm skips it);
  - optionally TensorZero's gateway (--tensorzero PATH, built by bench/tensorzero/build.sh),
    LD_PRELOADed with bench/tensorzero/nodelay.so (TCP_NODELAY; see that file);
  - wrk (Debian) for saturated throughput, and bench/loadgen (Rust) for the fixed-rate,
    streaming and held-streams scenarios.
Targets run interleaved (A B C A B C ...) for several rounds; medians are reported.

Usage:
  python3 bench/gateway_bench.py [--rounds 5] [--duration 8] [--soak 0] [--no-litellm]
                                [--tensorzero target/tensorzero/target/release/gateway]
Writes docs/bench/results.json, docs/bench/results.txt and docs/bench/results.png.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV = ROOT / "bench/.venv"
LITELLM = "litellm[proxy]==1.74.9"  # a 2025 release (never 1.107.0)
MATPLOTLIB = "matplotlib==3.10.3"
KEY = "bk-bench-key-0001"
MODEL = "gpt-4o-2024-08-06"
# TensorZero's OpenAI-compatible endpoint names a model of its config this way.
TENSORZERO_MODEL = "tensorzero::model_name::stub"


def chunk(delta, finish=None, usage=None):
    c = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
         "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        c["usage"] = usage
    return "data: " + json.dumps(c, separators=(",", ":")) + "\n\n"


USAGE = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                 "finish_reason": "stop"}],
    "usage": USAGE,
}, separators=(",", ":"))
WORDS = ["Hello", " from", " the", " benchmark", " upstream", ",", " one", " chunk", " at", " a", " time", "."]
SSE = (chunk({"role": "assistant", "content": ""}) + "".join(chunk({"content": w}) for w in WORDS)
       + chunk({}, "stop") + chunk(None, usage=USAGE) + "data: [DONE]\n\n")
# A slow stream: 400 chunks sent at 2 KiB/s by nginx (limit_rate), ~40 s long.
SLOW_SSE = (chunk({"role": "assistant", "content": ""}) + "".join(chunk({"content": f" w{i}"}) for i in range(400))
            + chunk({}, "stop") + chunk(None, usage=USAGE) + "data: [DONE]\n\n")
# A trickling stream: the first chunk at once, the rest over ~1 s (no chunk may be held back).
TRICKLE_SSE = SSE + "".join(chunk({"content": f" t{i}"}) for i in range(60))


# A realistic chat request (issue 19): a system prompt and a three-turn conversation, about
# 700 bytes — what an application sends, beside the one-message request.
REALISTIC_MESSAGES = [
    {"role": "system", "content": "You are a support assistant for Acme's billing product. Answer in two or three "
                                  "sentences, cite the help-center article when there is one, and never guess an "
                                  "amount the customer did not give."},
    {"role": "user", "content": "Hi, I was charged twice for my March invoice (INV-20431). Can you check why and "
                                "tell me how to get the second charge refunded?"},
    {"role": "assistant", "content": "I can see two payments for INV-20431 on March 3rd: the first card payment "
                                     "failed at the bank and was retried. Do you see both as settled on your statement?"},
    {"role": "user", "content": "Yes, both are settled, 49.00 each. What do I do now?"},
]


def body(model, stream=False, realistic=False):
    b = {"model": model, "messages": REALISTIC_MESSAGES if realistic else [{"role": "user", "content": "Say hello"}]}
    if stream:
        b["stream"] = True
    return json.dumps(b)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(litellm):
    missing = [p for p, b in (("nginx", "/usr/sbin/nginx"), ("wrk", "/usr/bin/wrk")) if not os.path.exists(b)]
    if missing:
        for attempt in (1, 2):
            ok = subprocess.run(["apt-get", "update", "-qq"]).returncode == 0 and subprocess.run(
                ["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode == 0
            if ok:
                break
            if attempt == 2:
                raise SystemExit(f"cannot install {missing}")
            time.sleep(5)
    if not (VENV / "bin/python").exists():
        sh(sys.executable, "-m", "venv", str(VENV))
    want = [MATPLOTLIB] + ([LITELLM] if litellm else [])
    check = subprocess.run([str(VENV / "bin/python"), "-c",
                            "import importlib.metadata as m, sys; "
                            "sys.exit(0 if all(m.version(w.split('[')[0].split('==')[0]) == w.split('==')[1] for w in sys.argv[1:]) else 1)",
                            *want], capture_output=True)
    if check.returncode != 0:
        for attempt in (1, 2):
            if subprocess.run([str(VENV / "bin/pip"), "install", "-q", "--disable-pip-version-check", *want]).returncode == 0:
                break
            if attempt == 2:
                raise SystemExit("pip install failed")
            time.sleep(5)
    sh("cargo", "build", "--release", "--locked", "-p", "beacon", "-p", "beacon-loadgen", cwd=ROOT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    start = time.time()
    while time.time() - start < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nginx_quote(text):
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def start_nginx(tmp, name, server_block):
    conf = tmp / f"{name}.conf"
    conf.write_text(f"""
worker_processes auto;
worker_rlimit_nofile 20000;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 8000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{server_block}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=raise_nofile)
    return proc


# The response headers OpenAI's API sends with a chat completion (its API reference, "Rate
# limits" and "Debugging requests"): what Beacon relays (the x-ratelimit-* family, the
# processing time, the request id) and what it drops. The `/openai/` stub answers with them.
OPENAI_HEADERS = "".join(f"\n            add_header {k} {v} always;" for k, v in (
    ("openai-organization", "org-benchmark"), ("openai-processing-ms", "412"),
    ("openai-version", "2020-10-01"), ("x-request-id", "req_0123456789abcdef0123456789abcdef"),
    ("x-ratelimit-limit-requests", "10000"), ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-requests", "9999"), ("x-ratelimit-remaining-tokens", "29999986"),
    ("x-ratelimit-reset-requests", "6ms"), ("x-ratelimit-reset-tokens", "0s"),
    ("strict-transport-security", "max-age=31536000"), ("cf-cache-status", "DYNAMIC"),
))


def stub_block(tmp, port):
    # The long streams are files: a POST to a static file is a 405, which error_page turns
    # into an internal GET of the file (nginx's static module serves no POST).
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "slow.sse").write_text(SLOW_SSE)
    (www / "trickle.sse").write_text(TRICKLE_SSE)
    files = "".join(f"""
        location /files/{name}/ {{ internal; alias {www}/; types {{ }} default_type text/event-stream;
                                  limit_rate_after {after}; limit_rate {rate}; }}
        location = /{name}/v1/chat/completions {{ error_page 405 =200 /files/{name}/{name}.sse; return 405; }}"""
                    for name, after, rate in (("slow", "0", "2k"), ("trickle", "0", "7k")))
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /v1/chat/completions {{ default_type application/json; return 200 '{nginx_quote(COMPLETION)}'; }}
        location = /openai/v1/chat/completions {{ default_type application/json;{OPENAI_HEADERS}
                                                  return 200 '{nginx_quote(COMPLETION)}'; }}
        location = /sse/v1/chat/completions {{ default_type text/event-stream; return 200 '{nginx_quote(SSE)}'; }}
        location = /api/1/integration/otlp/v1/traces {{ default_type application/x-protobuf; return 200 ''; }}{files}
    }}"""


def proxy_block(port, up_port):
    return f"""
    upstream stub {{ server 127.0.0.1:{up_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}"""


def sentry_destination(port):
    """Broadcast on for the tenant above it, to a Sentry destination at the stub on `port`
    (its OTLP and envelope routes)."""
    return f"""
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "stub"
otlp_endpoint = "http://127.0.0.1:{port}/api/1/integration/otlp/v1/traces"
dsn = "http://benchkey@127.0.0.1:{port}/1"
"""


def serve(tmp, name, config, binary=None):
    """`beacon serve` (`binary`, else $BEACON_BIN, else the release build) on a free port of
    127.0.0.1, with a SQLite store in `tmp`, private destinations allowed and `config` (its
    providers, tenants, ...) after that; logs at warn to `tmp/<name>.log`. -> (proc, port)"""
    port = free_port()
    conf = tmp / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{tmp}/{name}.db"
[broadcast]
allow_private_destinations = true
""" + config)
    binary = binary or os.environ.get("BEACON_BIN", str(ROOT / "target/release/beacon"))
    proc = subprocess.Popen([binary, "serve", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / f"{name}.log", "w"), env={**os.environ, "BEACON_LOG": "warn"},
                            preexec_fn=raise_nofile)
    wait_port(port)
    return proc, port


def start_beacon(tmp, name, up_port, broadcast, sentry_port=None):
    dest = sentry_destination(sentry_port or up_port) if broadcast else ""
    providers = "".join(f"""
[[providers]]
name = "{p}"
base_url = "http://127.0.0.1:{up_port}{prefix}/v1"
api_key = "sk-stub"
""" for p, prefix in (("stub", ""), ("sse", "/sse"), ("trickle", "/trickle"), ("slow", "/slow")))
    return serve(tmp, name, f"""{providers}
[[tenants]]
id = "bench"
api_keys = ["{KEY}"]
{dest}
""")


def start_litellm(tmp, up_port):
    port = free_port()
    conf = tmp / "litellm.yaml"
    conf.write_text(f"""
model_list:
  - model_name: stub/gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:{up_port}/v1
      api_key: sk-stub
litellm_settings:
  telemetry: false
""")
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": KEY, "DISABLE_SCHEMA_UPDATE": "true",
           "NO_DOCS": "True", "LITELLM_TELEMETRY": "False"}
    proc = subprocess.Popen([str(VENV / "bin/litellm"), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=open(tmp / "litellm.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp,
                            preexec_fn=raise_nofile)
    wait_port(port, timeout=180)
    return proc, port


def start_tensorzero(tmp, up_port, binary, shim):
    """TensorZero's gateway on the stub (bench/tensorzero/tensorzero.toml.in: one model, no
    database), with the TCP_NODELAY shim preloaded; checked with /health and one completion."""
    port = free_port()
    conf = tmp / "tensorzero.toml"
    conf.write_text(string.Template((ROOT / "bench/tensorzero/tensorzero.toml.in").read_text())
                    .substitute(port=port, upstream_port=up_port))
    # No TENSORZERO_* from the caller: no database URL, no bind address beside the config's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORZERO_")}
    env.update({"LD_PRELOAD": str(shim), "RUST_LOG": "warn"})  # warn, as Beacon's BEACON_LOG
    log = tmp / "tensorzero.log"
    proc = subprocess.Popen([str(binary), "--config-file", str(conf)], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env, preexec_fn=raise_nofile)
    try:
        wait_port(port)
        if str(shim) not in open(f"/proc/{proc.pid}/maps").read():
            raise SystemExit(f"TensorZero did not load {shim}")
        for path, data in (("/health", None), ("/openai/v1/chat/completions", body(TENSORZERO_MODEL).encode())):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
    except (SystemExit, OSError) as e:
        proc.kill()
        raise SystemExit(f"TensorZero failed: {e}\n{log.read_text()[-2000:]}")
    return proc, port


def rss(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def cpu_split(pids):
    """CPU seconds (user, system) used so far by `pids` (a pid or a list of them)."""
    user = system = 0.0
    for pid in pids if isinstance(pids, list) else [pids]:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        user += int(f[11]) / os.sysconf("SC_CLK_TCK")
        system += int(f[12]) / os.sysconf("SC_CLK_TCK")
    return user, system


def nginx_workers(master):
    return [int(x) for x in subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()]


def wrk_script(tmp, name, model, realistic=False):
    path = tmp / f"{name}.lua"
    path.write_text('wrk.method = "POST"\n'
                    f"wrk.body = {json.dumps(body(model, realistic=realistic))}\n"
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
    return path


def machine_cpu():
    """(idle, total) jiffies of the whole machine so far."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[3] + f[4], sum(f)


def task_files(pid, name):
    """The text of /proc/<pid>/task/<tid>/<name> for each thread still there."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            yield open(f"/proc/{pid}/task/{tid}/{name}").read()
        except FileNotFoundError:
            continue


def thread_cpu(pid):
    """CPU seconds so far of each thread of `pid`, by thread name (threads of one name summed)."""
    out = {}
    for st in task_files(pid, "stat"):
        name = st[st.index("(") + 1:st.rindex(")")]
        f = st.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def thread_switches(pid):
    """Context switches so far of each thread of `pid` by thread name: (voluntary — the
    thread blocked, e.g. in epoll_wait or on a lock — and involuntary — it was preempted)."""
    out = {}
    for status in task_files(pid, "status"):
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        name = fields.get("Name", "?").strip()
        v, n = out.get(name, (0, 0))
        out[name] = (v + int(fields.get("voluntary_ctxt_switches", 0)),
                     n + int(fields.get("nonvoluntary_ctxt_switches", 0)))
    return out


def wrk(port, path, duration, connections, script, pid=None, rss_pid=None):
    before = cpu_split(pid) if pid else None
    threads_before = thread_cpu(pid) if isinstance(pid, int) else None
    switches_before = thread_switches(pid) if isinstance(pid, int) else None
    machine_before, started = machine_cpu(), time.monotonic()
    proc = subprocess.Popen(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                             f"http://127.0.0.1:{port}{path}"], stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:  # resident memory while the load runs
        if rss_pid:
            peak = max(peak, rss(rss_pid) or 0)
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed on port {port}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    res = {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99), "non_2xx": int(errors.group(1)) if errors else 0,
           "socket_errors": socket_errors.group(1) if socket_errors else ""}
    machine_after, elapsed = machine_cpu(), time.monotonic() - started
    # The machine's idle share while the load ran (0 = every core busy).
    res["machine_idle"] = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1)
    if pid:
        after = cpu_split(pid)
        user, system = ((a - b) * 1e6 / max(total, 1) for a, b in zip(after, before))
        res["cpu_us_per_request"] = user + system
        res["cpu_user_us_per_request"] = user
        res["cpu_sys_us_per_request"] = system
        # Cores the target used (of the machine's), and each of its threads' share.
        res["cores"] = sum(a - b for a, b in zip(after, before)) / elapsed
    if threads_before is not None:
        threads_after = thread_cpu(pid)
        res["threads"] = {n: round((t - threads_before.get(n, 0.0)) / elapsed, 3)
                          for n, t in threads_after.items() if t - threads_before.get(n, 0.0) > 0.005 * elapsed}
        # Per request, for the same busy threads: how often each blocked and was preempted.
        switches_after = thread_switches(pid)
        res["switches_per_request"] = {
            n: [round((a - switches_before.get(n, (0, 0))[i]) / max(total, 1), 3) for i, a in enumerate(sw)]
            for n, sw in switches_after.items() if n in res["threads"]}
    if rss_pid:
        res["rss_peak_kib_under_load"] = peak
    return res


def loadgen(*args):
    out = subprocess.run([str(ROOT / "target/release/beacon-loadgen"), *args], capture_output=True, text=True,
                         preexec_fn=raise_nofile)
    if out.returncode != 0:
        raise SystemExit(f"beacon-loadgen {args[0]} failed: {out.stderr}")
    return json.loads(out.stdout)


def med(values):
    return statistics.median(values) if values else None


def plot(summary, path):
    py = VENV / "bin/python"
    script = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
s = json.load(open(sys.argv[1]))
t64 = s["throughput"]["64"]
names = [n for n in ("direct", "nginx", "hyper_floor", "beacon", "beacon_off", "beacon_sentry_down", "tensorzero",
                     "litellm") if n in t64]
fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
ax = axes[0]
vals = [t64[n]["rps"] for n in names]
colors = {"direct": "#888", "nginx": "#2a9d8f", "hyper_floor": "#94d2bd", "beacon": "#5a3fd6", "beacon_off": "#8e7cc3",
          "beacon_sentry_down": "#b4a7d6", "tensorzero": "#e9c46a", "litellm": "#e76f51"}
ax.bar(names, vals, color=[colors[n] for n in names])
ax.set_title("Non-streaming throughput, 64 connections (req/s, median)")
ax.tick_params(axis="x", rotation=30)
for i, v in enumerate(vals):
    ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
ax = axes[1]
fr = s["fixed_rate"]["targets"]
pcts = ["p50_us", "p90_us", "p99_us", "p999_us"]
for n, c in (("direct", "#888"), ("nginx", "#2a9d8f"), ("hyper_floor", "#94d2bd"), ("beacon", "#5a3fd6")):
    if n in fr:
        ax.plot([p[:-3] for p in pcts], [fr[n][p] / 1000 for p in pcts], marker="o", label=n, color=c)
ax.set_title(f"Latency at a fixed {s['fixed_rate']['rate']:.0f} req/s (ms, medians of rounds)")
ax.set_yscale("log")
ax.legend()
ax = axes[2]
st = s["streaming"]["targets"]
for n, c in (("direct", "#888"), ("nginx", "#2a9d8f"), ("beacon", "#5a3fd6")):
    ax.plot(["1 stream p50", "1 stream p99", "16 streams p50", "16 streams p99"],
            [st["1"][n]["ttfc_p50_us"] / 1000, st["1"][n]["ttfc_p99_us"] / 1000,
             st["16"][n]["ttfc_p50_us"] / 1000, st["16"][n]["ttfc_p99_us"] / 1000],
            marker="o", label=n, color=c)
ax.set_title("Streaming: time to first chunk (ms)")
ax.legend()
fig.suptitle(s["title"], fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""
    tmp = pathlib.Path(tempfile.mkdtemp()) / "plot.py"
    tmp.write_text(script)
    data = pathlib.Path(tempfile.mkdtemp()) / "s.json"
    data.write_text(json.dumps(summary))
    sh(str(py), str(tmp), str(data), str(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--rate", type=float, default=2000, help="fixed-rate scenario, requests/s")
    ap.add_argument("--streams", type=int, default=1000, help="slow streams held open at once")
    ap.add_argument("--soak", type=int, default=0, help="seconds of Sentry-down soak for memory growth (600 = the target's 10 minutes)")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    ap.add_argument("--tensorzero", metavar="PATH",
                    help="also measure TensorZero's gateway binary (bench/tensorzero/build.sh prints its path)")
    ap.add_argument("--tensorzero-shim", metavar="PATH",
                    help="the TCP_NODELAY preload shim (default: nodelay.so beside the --tensorzero binary)")
    ap.add_argument("--out", default=str(ROOT / "docs/bench"))
    args = ap.parse_args()
    litellm = not args.no_litellm
    tz_bin = tz_shim = None
    if args.tensorzero:
        tz_bin = pathlib.Path(args.tensorzero).resolve()
        tz_shim = pathlib.Path(args.tensorzero_shim or tz_bin.parent / "nodelay.so").resolve()
        for f in (tz_bin, tz_shim):
            if not f.is_file():
                raise SystemExit(f"{f} is missing: build it with bench/tensorzero/build.sh")
    elif args.tensorzero_shim:
        raise SystemExit("--tensorzero-shim needs --tensorzero")
    ensure_tools(litellm)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="beacon-bench-"))
    tmp.chmod(0o755)  # nginx workers (user nobody when started as root) read the stream files
    procs = []
    up_port, proxy_port = free_port(), free_port()
    procs.append(start_nginx(tmp, "stub", stub_block(tmp, up_port)))
    procs.append(start_nginx(tmp, "proxy", proxy_block(proxy_port, up_port)))
    floor_port = free_port()
    floor = subprocess.Popen([str(ROOT / "target/release/beacon-hyper-floor"), "--listen", f"127.0.0.1:{floor_port}",
                              "--upstream", f"http://127.0.0.1:{up_port}"], preexec_fn=raise_nofile)
    procs.append(floor)
    wait_port(up_port)
    wait_port(proxy_port)
    wait_port(floor_port)
    try:
        beacon, beacon_port = start_beacon(tmp, "beacon", up_port, True)
        off, off_port = start_beacon(tmp, "beacon_off", up_port, False)
        down, down_port = start_beacon(tmp, "beacon_sentry_down", up_port, True, sentry_port=free_port())
        procs += [beacon, off, down]
        targets = {  # name: (port, path, model, pid)
            "direct": (up_port, "/v1/chat/completions", "gpt-4o", None),
            "nginx": (proxy_port, "/v1/chat/completions", "gpt-4o", nginx_workers(procs[1])),
            "hyper_floor": (floor_port, "/v1/chat/completions", "gpt-4o", floor.pid),
            "beacon": (beacon_port, "/v1/chat/completions", "stub/gpt-4o", beacon.pid),
            "beacon_off": (off_port, "/v1/chat/completions", "stub/gpt-4o", off.pid),
            "beacon_sentry_down": (down_port, "/v1/chat/completions", "stub/gpt-4o", down.pid),
        }
        if litellm:
            ll, ll_port = start_litellm(tmp, up_port)
            procs.append(ll)
            targets["litellm"] = (ll_port, "/v1/chat/completions", "stub/gpt-4o", ll.pid)
        if tz_bin:
            tz, tz_port = start_tensorzero(tmp, up_port, tz_bin, tz_shim)
            procs.append(tz)
            targets["tensorzero"] = (tz_port, "/openai/v1/chat/completions", TENSORZERO_MODEL, tz.pid)
        # The token table alone: one cancelled request needs an estimate, which loads o200k_base.
        rss_idle = rss(beacon.pid)
        subprocess.run(["curl", "-s", "-m", "0.5", f"http://127.0.0.1:{beacon_port}/v1/chat/completions",
                        "-H", f"authorization: Bearer {KEY}", "-H", "content-type: application/json",
                        "-d", body("slow/gpt-4o", True)], capture_output=True)
        time.sleep(1)
        tokenizer_kib = rss(beacon.pid) - rss_idle
        scripts = {n: wrk_script(tmp, n, t[2]) for n, t in targets.items()}
        for n, (port, path, _, _) in targets.items():  # warm-up
            wrk(port, path, 2, 64, scripts[n])
        rss_after_warmup = rss(beacon.pid)

        # --- throughput at 16 and 64 connections, interleaved rounds --------------------------
        throughput = {"16": {}, "64": {}}
        runs = {"16": {n: [] for n in targets}, "64": {n: [] for n in targets}}
        for r in range(args.rounds):
            for conns in ("16", "64"):
                for n, (port, path, _, pid) in targets.items():
                    if conns == "16" and n in ("beacon_off", "beacon_sentry_down"):
                        continue
                    res = wrk(port, path, args.duration, int(conns), scripts[n], pid,
                              rss_pid=beacon.pid if n == "beacon" else None)
                    runs[conns][n].append(res)
                    print(f"round {r + 1} c{conns} {n}: {res}", file=sys.stderr)
        # The realistic request (4 messages, ~700 bytes) at 64 connections, beside the one above.
        realistic = [n for n in ("direct", "nginx", "hyper_floor", "beacon", "beacon_off", "tensorzero") if n in targets]
        scripts_realistic = {n: wrk_script(tmp, f"{n}-realistic", targets[n][2], realistic=True) for n in realistic}
        runs["64_realistic"] = {n: [] for n in realistic}
        throughput["64_realistic"] = {}
        for r in range(args.rounds):
            for n in realistic:
                port, path, _, pid = targets[n]
                res = wrk(port, path, args.duration, 64, scripts_realistic[n], pid)
                runs["64_realistic"][n].append(res)
                print(f"round {r + 1} c64 realistic {n}: {res}", file=sys.stderr)
        for conns, by in runs.items():
            for n, rs in by.items():
                if rs:
                    throughput[conns][n] = {k: med([x[k] for x in rs]) for k in ("rps", "p50_ms", "p99_ms", "machine_idle")}
                    if "cores" in rs[0]:
                        throughput[conns][n]["cores"] = med([x["cores"] for x in rs])
                    if "threads" in rs[0]:
                        names = {t for x in rs for t in x["threads"]}
                        throughput[conns][n]["threads"] = {t: med([x["threads"].get(t, 0.0) for x in rs])
                                                           for t in sorted(names)}
                    for k in ("cpu_us_per_request", "cpu_user_us_per_request", "cpu_sys_us_per_request"):
                        if k in rs[0]:
                            throughput[conns][n][k] = med([x[k] for x in rs])
                    if "rss_peak_kib_under_load" in rs[0]:
                        throughput[conns][n]["rss_peak_kib_under_load"] = max(x["rss_peak_kib_under_load"] for x in rs)
                    throughput[conns][n]["non_2xx"] = sum(x["non_2xx"] for x in rs)
        peak_rss_kib = rss(beacon.pid, "VmHWM")

        # --- fixed rate: latency added to the direct path --------------------------------------
        fixed = {n: [] for n in ("direct", "nginx", "hyper_floor", "beacon")}
        for r in range(args.rounds):
            for n in fixed:
                port, path, model, _ = targets[n]
                res = loadgen("rate", "--url", f"http://127.0.0.1:{port}{path}", "--body", body(model),
                              "-H", f"authorization: Bearer {KEY}", "--rate", str(args.rate), "--duration", "5",
                              "--connections", "64")
                fixed[n].append(res)
                print(f"round {r + 1} fixed-rate {n}: {res['latency']}", file=sys.stderr)
        fixed_med = {n: {k: med([x["latency"][k] for x in rs]) for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")}
                     | {"errors": sum(x["errors"] for x in rs)} for n, rs in fixed.items()}

        # --- streaming: time to first chunk and total --------------------------------------------
        stream_targets = {"direct": (up_port, "/sse/v1/chat/completions", "gpt-4o"),
                          "nginx": (proxy_port, "/sse/v1/chat/completions", "gpt-4o"),
                          "beacon": (beacon_port, "/v1/chat/completions", "sse/gpt-4o")}
        trickle_targets = {"direct": (up_port, "/trickle/v1/chat/completions", "gpt-4o"),
                           "nginx": (proxy_port, "/trickle/v1/chat/completions", "gpt-4o"),
                           "beacon": (beacon_port, "/v1/chat/completions", "trickle/gpt-4o")}
        streaming = {c: {n: [] for n in stream_targets} for c in ("1", "16")}
        trickle = {n: [] for n in trickle_targets}
        for r in range(args.rounds):
            for conc in ("1", "16"):
                for n, (port, path, model) in stream_targets.items():
                    res = loadgen("stream", "--url", f"http://127.0.0.1:{port}{path}", "--body", body(model, True),
                                  "-H", f"authorization: Bearer {KEY}", "--concurrency", conc, "--requests", "2000")
                    streaming[conc][n].append(res)
                    print(f"round {r + 1} stream c{conc} {n}: ttfc {res['time_to_first_chunk']}", file=sys.stderr)
            for n, (port, path, model) in trickle_targets.items():
                res = loadgen("stream", "--url", f"http://127.0.0.1:{port}{path}", "--body", body(model, True),
                              "-H", f"authorization: Bearer {KEY}", "--concurrency", "8", "--requests", "16")
                trickle[n].append(res)
                print(f"round {r + 1} trickle {n}: ttfc {res['time_to_first_chunk']['p50_us']} total {res['total']['p50_us']}", file=sys.stderr)

        def stream_med(d):
            return {n: {"ttfc_p50_us": med([x["time_to_first_chunk"]["p50_us"] for x in rs]),
                        "ttfc_p99_us": med([x["time_to_first_chunk"]["p99_us"] for x in rs]),
                        "total_p50_us": med([x["total"]["p50_us"] for x in rs]),
                        "total_p99_us": med([x["total"]["p99_us"] for x in rs]),
                        "frames_per_stream": med([x["frames_per_stream"] for x in rs]),
                        "errors": sum(x["errors"] for x in rs)} for n, rs in d.items()}

        streaming_med = {c: stream_med(d) for c, d in streaming.items()}
        trickle_med = stream_med(trickle)

        # --- slow streams held open: memory per stream --------------------------------------------
        held = {}
        for n, (port, path, model, pid_of) in {
                "beacon": (beacon_port, "/v1/chat/completions", "slow/gpt-4o", beacon.pid)}.items():
            held[n] = loadgen("hold", "--url", f"http://127.0.0.1:{port}{path}", "--body", body(model, True),
                              "-H", f"authorization: Bearer {KEY}", "--streams", str(args.streams), "--seconds", "5",
                              "--pid", str(pid_of))
            print(f"hold {n}: {held[n]}", file=sys.stderr)

        # --- soak with Sentry down: memory stays flat ---------------------------------------------
        soak = None
        if args.soak:
            port, path, _, pid = targets["beacon_sentry_down"]
            samples = []
            proc = subprocess.Popen([str(ROOT / "target/release/beacon-loadgen"), "rate", "--url",
                                     f"http://127.0.0.1:{port}{path}", "--body", body("stub/gpt-4o"),
                                     "-H", f"authorization: Bearer {KEY}", "--rate", str(args.rate),
                                     "--duration", str(args.soak), "--warmup", "0", "--connections", "64"],
                                    stdout=subprocess.PIPE, text=True)
            start = time.time()
            while proc.poll() is None:
                samples.append((round(time.time() - start, 1), rss(pid)))
                time.sleep(10)
            out = json.loads(proc.stdout.read())
            settled = [kib for t, kib in samples if t >= 60] or [kib for _, kib in samples]
            soak = {"seconds": args.soak, "rate": args.rate, "rss_kib_samples": samples,
                    "rss_kib_first_minute_end": settled[0], "rss_kib_end": settled[-1],
                    "growth": settled[-1] / settled[0] - 1, "latency": out["latency"], "errors": out["errors"]}
            print(f"soak: {soak['rss_kib_first_minute_end']} → {soak['rss_kib_end']} KiB", file=sys.stderr)

        def metric_sum(port, prefix):
            text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
            out = {}
            for line in text.splitlines():
                if line.startswith(prefix):
                    reason = re.search(r'reason="([^"]+)"', line)
                    k = reason.group(1) if reason else "total"
                    out[k] = out.get(k, 0) + float(line.rsplit(" ", 1)[1])
            return out

        exported = metric_sum(beacon_port, "beacon_broadcast_exported_total")
        dropped = metric_sum(beacon_port, "beacon_broadcast_dropped_total")
        down_dropped = metric_sum(down_port, "beacon_broadcast_dropped_total")
        versions = {
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines() or [""])[0],
            "beacon": subprocess.run([str(ROOT / "target/release/beacon"), "--version"], capture_output=True, text=True).stdout.strip(),
            "litellm": LITELLM if litellm else None,
            "tensorzero": subprocess.run([str(tz_bin), "--version"], capture_output=True, text=True).stdout.strip()
                          if tz_bin else None,
            "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    t64, t16, t64r = throughput["64"], throughput["16"], throughput["64_realistic"]
    ratios = {
        "beacon_vs_nginx_rps_64_realistic": t64r["beacon"]["rps"] / t64r["nginx"]["rps"],
        "beacon_cores_64": t64["beacon"].get("cores"),
        "beacon_cores_64_realistic": t64r["beacon"].get("cores"),
        "beacon_vs_nginx_rps_64": t64["beacon"]["rps"] / t64["nginx"]["rps"],
        "beacon_vs_nginx_p99_64": t64["beacon"]["p99_ms"] / t64["nginx"]["p99_ms"],
        "beacon_vs_nginx_rps_16": t16["beacon"]["rps"] / t16["nginx"]["rps"],
        "beacon_vs_direct_rps_64": t64["beacon"]["rps"] / t64["direct"]["rps"],
        "hyper_floor_vs_nginx_rps_64": t64["hyper_floor"]["rps"] / t64["nginx"]["rps"],
        "hyper_floor_vs_nginx_p99_64": t64["hyper_floor"]["p99_ms"] / t64["nginx"]["p99_ms"],
        "beacon_vs_hyper_floor_rps_64": t64["beacon"]["rps"] / t64["hyper_floor"]["rps"],
        "nginx_vs_direct_rps_64": t64["nginx"]["rps"] / t64["direct"]["rps"],
        "broadcast_on_vs_off_rps": t64["beacon"]["rps"] / t64["beacon_off"]["rps"],
        "sentry_down_vs_up_rps": t64["beacon_sentry_down"]["rps"] / t64["beacon"]["rps"],
        "sentry_down_vs_up_p99": t64["beacon_sentry_down"]["p99_ms"] / t64["beacon"]["p99_ms"],
        "added_p50_us_beacon": fixed_med["beacon"]["p50_us"] - fixed_med["direct"]["p50_us"],
        "added_p99_us_beacon": fixed_med["beacon"]["p99_us"] - fixed_med["direct"]["p99_us"],
        "added_p50_us_nginx": fixed_med["nginx"]["p50_us"] - fixed_med["direct"]["p50_us"],
        "added_p50_us_hyper_floor": fixed_med["hyper_floor"]["p50_us"] - fixed_med["direct"]["p50_us"],
        "added_p99_us_hyper_floor": fixed_med["hyper_floor"]["p99_us"] - fixed_med["direct"]["p99_us"],
        "added_p99_us_nginx": fixed_med["nginx"]["p99_us"] - fixed_med["direct"]["p99_us"],
        "added_ttfc_p50_us_beacon_1_stream": streaming_med["1"]["beacon"]["ttfc_p50_us"] - streaming_med["1"]["direct"]["ttfc_p50_us"],
        "added_ttfc_p99_us_beacon_1_stream": streaming_med["1"]["beacon"]["ttfc_p99_us"] - streaming_med["1"]["direct"]["ttfc_p99_us"],
        "added_ttfc_p99_us_nginx_1_stream": streaming_med["1"]["nginx"]["ttfc_p99_us"] - streaming_med["1"]["direct"]["ttfc_p99_us"],
        "added_ttfc_p99_us_beacon_16_streams": streaming_med["16"]["beacon"]["ttfc_p99_us"] - streaming_med["16"]["direct"]["ttfc_p99_us"],
        "added_ttfc_p99_us_nginx_16_streams": streaming_med["16"]["nginx"]["ttfc_p99_us"] - streaming_med["16"]["direct"]["ttfc_p99_us"],
        "trickle_ttfc_p50_us_beacon": trickle_med["beacon"]["ttfc_p50_us"],
        "trickle_total_p50_us_beacon": trickle_med["beacon"]["total_p50_us"],
        "peak_rss_mib_under_load_64": t64["beacon"]["rss_peak_kib_under_load"] / 1024,
        "peak_rss_mib_hwm_incl_tokenizer": peak_rss_kib / 1024,
        "tokenizer_table_mib": tokenizer_kib / 1024,
        "kib_per_open_stream": held["beacon"]["kib_per_stream"],
    }
    if "tensorzero" in t64:
        ratios["beacon_vs_tensorzero_rps_64"] = t64["beacon"]["rps"] / t64["tensorzero"]["rps"]
        ratios["beacon_vs_tensorzero_p99_64"] = t64["beacon"]["p99_ms"] / t64["tensorzero"]["p99_ms"]
        ratios["beacon_vs_tensorzero_rps_64_realistic"] = t64r["beacon"]["rps"] / t64r["tensorzero"]["rps"]
        ratios["tensorzero_cores_64"] = t64["tensorzero"].get("cores")
    if "litellm" in t64:
        ratios["beacon_vs_litellm_rps_64"] = t64["beacon"]["rps"] / t64["litellm"]["rps"]
        ratios["beacon_vs_litellm_p99_64"] = t64["beacon"]["p99_ms"] / t64["litellm"]["p99_ms"]
    if soak:
        ratios["soak_rss_growth"] = soak["growth"]
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine(),
               "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")}
    summary = {
        "title": f"Beacon {versions['git']} vs nginx {versions['nginx'].split('/')[-1]}"
                 + (f", TensorZero {versions['tensorzero'].split()[-1]}" if versions["tensorzero"] else "")
                 + f" and {LITELLM if litellm else 'no LiteLLM'}"
                 f" — {machine['cpus']} vCPU {machine['cpu_model']}, {args.rounds} interleaved rounds",
        "command": "python3 bench/gateway_bench.py " + " ".join(sys.argv[1:]),
        "machine": machine, "versions": versions,
        "settings": {"rounds": args.rounds, "wrk_duration_s": args.duration, "fixed_rate": args.rate,
                     "held_streams": args.streams},
        "ratios": ratios,
        "throughput": throughput,
        "fixed_rate": {"rate": args.rate, "targets": fixed_med},
        "streaming": {"targets": streaming_med, "trickle": trickle_med},
        "held_streams": held,
        "memory": {"rss_kib_idle": rss_idle, "tokenizer_table_kib": tokenizer_kib,
                   "rss_kib_after_warmup": rss_after_warmup, "vm_hwm_kib_after_throughput": peak_rss_kib,
                   "rss_peak_kib_under_load_64": t64["beacon"]["rss_peak_kib_under_load"],
                   "note": "VmHWM includes the o200k tokenizer table once a cancelled request (wrk stopping mid-request) needs an estimate"},
        "soak": soak,
        "broadcast": {"exported": exported, "dropped": dropped, "sentry_down_dropped": down_dropped},
        "runs": {"throughput": runs, "fixed_rate": fixed, "streaming": streaming, "trickle": trickle},
    }
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [summary["title"], f"command: {summary['command']}", ""]
    lines.append(f"{'target':<22}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req (user + sys)':>26}"
                 f"{'cores':>7}{'idle':>6}")
    for conns in ("16", "64", "64_realistic"):
        for n, v in throughput[conns].items():
            cpu = (f"{v['cpu_us_per_request']:.1f} ({v['cpu_user_us_per_request']:.1f} + {v['cpu_sys_us_per_request']:.1f})"
                   if "cpu_us_per_request" in v else "-")
            cores = f"{v['cores']:.2f}" if "cores" in v else "-"
            label = "64r" if conns == "64_realistic" else conns
            lines.append(f"{n:<22}{label:>4}{v['rps']:>10.0f}{v['p50_ms']:>9.2f}{v['p99_ms']:>9.2f}{cpu:>26}"
                         f"{cores:>7}{v['machine_idle']:>6.2f}")
    for n in ("beacon", "tensorzero"):
        if "threads" in throughput["64"].get(n, {}):
            lines.append(f"{n}'s threads at 64 connections (cores): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in throughput["64"][n]["threads"].items()))
    lines += ["", f"fixed rate {args.rate:.0f} req/s (µs)   p50     p90     p99    p99.9"]
    for n, v in fixed_med.items():
        lines.append(f"  {n:<22}{v['p50_us']:>7.0f}{v['p90_us']:>8.0f}{v['p99_us']:>8.0f}{v['p999_us']:>9.0f}")
    for conc, by in streaming_med.items():
        lines += ["", f"streaming, {conc} at once (µs)  ttfc p50 ttfc p99 total p50 total p99"]
        for n, v in by.items():
            lines.append(f"  {n:<22}{v['ttfc_p50_us']:>9.0f}{v['ttfc_p99_us']:>9.0f}{v['total_p50_us']:>10.0f}{v['total_p99_us']:>10.0f}")
    lines += ["", "trickling stream (µs)     ttfc p50 total p50 frames"]
    for n, v in trickle_med.items():
        lines.append(f"  {n:<22}{v['ttfc_p50_us']:>9.0f}{v['total_p50_us']:>10.0f}{v['frames_per_stream']:>7}")
    lines += ["", "ratios and targets:"] + [f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}" for k, v in ratios.items()]
    text = "\n".join(lines) + "\n"
    (out / "results.txt").write_text(text)
    print(text)
    plot(summary, out / "results.png")
    if out == ROOT / "docs/bench":
        sh(sys.executable, str(ROOT / "bench/report.py"))


if __name__ == "__main__":
    main()


def callgrind_instructions(start, binary, tmp, path, body, n, tag, per_thread=False):
    """Instructions (all threads, callgrind) of a Beacon started by `start(name, binary)`
    -> (proc, port) serving `n` sequential POSTs of `body` (bytes or str) to `path`.

    With `per_thread`, each thread's instructions, largest first: sequential requests on one
    connection are served by one proxy worker (the first), and exported by the export
    thread (the second); the main runtime's timers (store syncs, ledger writes, snapshot
    reloads) and the store's own threads run per second, not per request, and the export
    thread's batches vary with timing, so the serving worker's count is the steadiest
    measure of what the request path costs."""
    import glob as _glob
    import http.client as _http
    out = tmp / f"cg-{tag}"
    wrapper = tmp / f"wrap-{tag}.sh"
    separate = " --separate-threads=yes" if per_thread else ""
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind{separate} --callgrind-out-file={out}.%p {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    proc, port = start(f"cg{tag}", str(wrapper))
    time.sleep(2)
    c = _http.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    for _ in range(n):
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse(); r.read(); assert r.status == 200, r.status
    time.sleep(2)
    proc.terminate(); proc.wait(timeout=120)
    if per_thread:
        counts = []
        for f in _glob.glob(f"{out}.*"):
            with open(f, errors="replace") as fh:
                counts.append(next((int(line.split()[1]) for line in fh
                                    if line.startswith(("summary:", "totals:"))), 0))
        return sorted(counts, reverse=True)
    total = 0
    for f in _glob.glob(f"{out}.*"):
        for line in open(f):
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total
