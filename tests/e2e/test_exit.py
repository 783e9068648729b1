"""The host exits while requests are in flight — evals, queries, authorization checks over TCP
— many times over: every run must end with the host's own exit status (0) and its own output,
with no crash and no hang. (The agent stops serving in an exit handler that runs before any
library state is torn down, and none of its objects is ever destroyed: docs/architecture.md.)

A small library preloaded beside the agent registers an exit handler that takes 200 ms, as
PyTorch's do (it deregisters thousands of kernels): exit() then spends that long with OpenSSL's
state already freed, which is when a request still being served would use it."""
import os
import random
import re
import socket
import subprocess
import threading

import pytest

from conftest import (LIBPROBING, PROBING, TARGETS, agent_address, clean_env, interpreter_params,
                      torch_interpreter_params, wait_for_health)

RUNS = int(os.environ.get("PROBING_EXIT_RUNS", "50"))  # per interpreter
TOKEN = "exit-test-token"
BODIES = [
    b'POST /eval HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s',
    b'POST /query HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s',
]
PAYLOADS = [
    (0, b'{"code": "import gc; gc.collect(); step"}'),
    (0, b'{"code": "import time; time.sleep(0.05); step"}'),
    (1, b'{"sql": "SELECT count(*) FROM python.objects"}'),
    (1, b'{"sql": "SELECT * FROM probing.audit"}'),
    (1, b'{"sql": "SET query.max_rows = 777"}'),
]


def send(address, family, payload, token=None):
    """One request; the reply is read and dropped. Errors (the host is exiting) are expected."""
    kind, body = payload
    request = BODIES[kind] % (len(body), body)
    if token is not None:
        request = request.replace(b"Host: p\r\n", b"Host: p\r\nAuthorization: Bearer " + token.encode() + b"\r\n")
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(address)
        s.sendall(request)
        while s.recv(65536):
            pass
    except OSError:
        pass
    finally:
        s.close()


def hammer(pid, tcp, stop, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        payload = rng.choice(PAYLOADS)
        if tcp is not None and rng.random() < 0.5:
            send(tcp, socket.AF_INET, payload, token=rng.choice([TOKEN, "wrong-" + TOKEN]))
        else:
            send(agent_address(pid), socket.AF_UNIX, payload)


@pytest.fixture(scope="module")
def slow_exit(tmp_path_factory):
    """A library whose constructor registers an exit handler that sleeps 200 ms."""
    d = tmp_path_factory.mktemp("slow-exit")
    (d / "slow_exit.c").write_text("#include <stdlib.h>\n#include <unistd.h>\n"
                                   "static void slow(void) { usleep(200000); }\n"
                                   "__attribute__((constructor)) static void init(void) { atexit(slow); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / "slow_exit.so"), str(d / "slow_exit.c")], check=True,
                   timeout=60)
    return str(d / "slow_exit.so")


@pytest.mark.parametrize("interp", interpreter_params())
def test_host_exits_with_requests_in_flight(interp, slow_exit):
    rng = random.Random(7)
    for run in range(RUNS):
        # Both orders: the slow handler registered before the agent's library loads, and after.
        preload = "%s:%s" % ((slow_exit, LIBPROBING) if run % 2 == 0 else (LIBPROBING, slow_exit))
        env = clean_env({"LD_PRELOAD": preload, "PROBING_PORT": "0", "PROBING_TOKEN": TOKEN})
        proc = subprocess.Popen([interp.path, os.path.join(TARGETS, "exits_soon.py"), "%.3f" % rng.uniform(0.2, 0.5)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        stop = threading.Event()
        threads = []
        try:
            assert proc.stdout.readline() == b"ready\n"
            wait_for_health(proc.pid, 10, proc)
            line = proc.stderr.readline().decode()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            assert m, line
            tcp = ("127.0.0.1", int(m.group(1)))
            threads = [threading.Thread(target=hammer, args=(proc.pid, tcp, stop, run * 10 + i), daemon=True)
                       for i in range(4)]
            for t in threads:
                t.start()
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail("run %d: the host did not exit within 30 s (hung at exit)" % run)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, "run %d: exit status %s; stderr %r" % (run, proc.returncode, err[-2000:])
        assert out == b"" and err == b"", "run %d: the host's output changed: %r %r" % (run, out[-500:], err[-500:])


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_host_exits_while_an_eval_runs_tensor_operations(interp):
    """Before 3.14, CPython ends a thread that takes the GIL back after finalization began with
    pthread_exit; inside torch's GIL-releasing operations that unwind meets a noexcept destructor,
    which aborts the process ("terminate called without an active exception") unless the agent
    parks its own thread. Every run must exit 0 with the host's own output."""
    loop = "import torch\na = torch.randn(200, 200)\nwhile True: a.mm(a)"
    for run in range(3):
        env = clean_env({"LD_PRELOAD": LIBPROBING})
        proc = subprocess.Popen([interp.path, os.path.join(TARGETS, "exits_soon.py"), "1.5", "torch"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        evals = []
        try:
            assert proc.stdout.readline() == b"ready\n"
            wait_for_health(proc.pid, 30, proc)
            evals = [subprocess.Popen([PROBING, str(proc.pid), "eval", "--timeout", "60", loop],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
                     for _ in range(2)]
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("run %d: the host did not exit within 60 s (hung at exit)" % run)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for e in evals:
                e.wait(30)
        assert proc.returncode == 0, "run %d: exit status %s; stderr %r" % (run, proc.returncode, err[-2000:])
        assert out == b"" and err == b"", "run %d: the host's output changed: %r %r" % (run, out[-500:], err[-500:])
