"""Shared pieces of the benchmarks: the build, targets that say `ready`, a keep-alive HTTP client
over the agent's abstract unix socket, and statistics."""

import json
import os
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The interpreter the targets run under: Debian's python3.11, or PROBING_BENCH_PYTHON (e.g. the
# version matrix's /var/cache/probing-matrix/bin/sid-3.14, with its chroot mounted).
PYTHON = os.environ.get("PROBING_BENCH_PYTHON", "/usr/bin/python3.11")


# The small transformer both torch benches train (torch_overhead.py, profile.py): the source a
# target program starts with. One thread, seeded.
TRANSFORMER = r'''
import json, sys, time
import torch
import torch.nn as nn
torch.set_num_threads(1)
torch.manual_seed(0)
VOCAB, D, SEQ, BATCH = 256, 128, 16, 2

class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        layer = nn.TransformerEncoderLayer(D, nhead=4, dim_feedforward=256, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=4)
        self.head = nn.Linear(D, VOCAB)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)))
'''


def build_paths(build):
    build = os.path.abspath(build)
    return {
        "probing": os.path.join(build, "bin", "probing"),
        "library": os.path.join(build, "lib", "probing", "libprobing.so"),
    }


def real_python3():
    """The python3 first on PATH, resolved past pyenv's shim."""
    out = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    return out.stdout.strip() or sys.executable


class Target:
    """A Python program started with `code`; waits for it to print `ready`."""

    def __init__(self, code, python=None, env=None, timeout=60):
        python = python or PYTHON
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen([python, "-u", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=full_env, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "ready":
                return
            if not line:
                break
        self.close()
        raise RuntimeError("target did not get ready")

    @property
    def pid(self):
        return self.proc.pid

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StdinTarget(Target):
    """A Target with a pipe to its stdin: it runs what the bench writes there."""

    def __init__(self, code, env, python=None):
        python = python or PYTHON
        full_env = dict(os.environ)
        full_env.update(env)
        self.proc = subprocess.Popen([python, "-u", "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=full_env, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("target did not get ready")


class AgentConnection:
    """One keep-alive HTTP/1.1 connection to @probing-<pid>."""

    def __init__(self, pid, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect("\0probing-%d" % pid)
        self.buf = b""

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        head = "%s %s HTTP/1.1\r\nHost: probing\r\nContent-Length: %d\r\n\r\n" % (method, path, len(data))
        self.sock.sendall(head.encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return int(head.split(b" ")[1]), rest[:length]

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("agent closed the connection")
        return chunk

    def close(self):
        self.sock.close()


def wait_for_agent(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = AgentConnection(pid, timeout=1)
            status, _ = c.request("GET", "/health")
            c.close()
            if status == 200:
                return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("agent in %d did not answer" % pid)


def measure(conn, method, path, body=None, n=100, check=None):
    """Seconds each of `n` requests took on `conn`; each must answer 200, and `check` (when
    given) is called with the reply parsed as JSON."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, reply = conn.request(method, path, body)
        samples.append(time.perf_counter() - t0)
        assert status == 200, (status, reply[:200])
        if check is not None:
            check(json.loads(reply))
    return samples


def summary_ms(samples_s):
    ms = sorted(s * 1000 for s in samples_s)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return statistics.median(ms), p99
