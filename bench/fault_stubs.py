"""What bench/memory_attack.py and bench/soak_faults.py share: a canned OpenAI upstream,
RSS readings from /proc, free ports, and starting a `beacon serve` with a config."""
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "echo",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the stub upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
}).encode()


class Upstream(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the canned chat completion."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(COMPLETION)))
        self.end_headers()
        self.wfile.write(COMPLETION)

    def log_message(self, *args):
        pass


def start_upstream():
    """The canned upstream on 127.0.0.1, in a thread; returns its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def status(pid, field):
    """A /proc/PID/status field in MiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_beacon(binary, config, workdir, log=subprocess.DEVNULL):
    """Writes `config` to WORKDIR/beacon.toml, starts `beacon serve` and waits for /healthz
    on the port the config listens on (`port` must be in the config as listen's port)."""
    path = os.path.join(workdir, "beacon.toml")
    with open(path, "w") as f:
        f.write(config)
    port = int(config.split('listen = "127.0.0.1:')[1].split('"')[0])
    env = dict(os.environ, BEACON_SECRET_KEY="00" * 32, BEACON_LOG="warn")
    proc = subprocess.Popen([binary, "serve", "--config", path], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, port
