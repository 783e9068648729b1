"""Remote access on real processes: TCP on 127.0.0.1 and TLS with a certificate made here; the
right token, a wrong one, none, a read-only token trying eval and SET; allowed and refused
networks; a non-loopback bind without a token; the audit table; and a hostile client (random
bytes, truncated and oversized requests, 1,000 connections at once, slow drips) after which the
agent answers at once and the target's loop lost no time."""
import http.client
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (DEBIAN_PYTHON, PROBING, PYPKG, Interpreter, agent_mapped, clean_env, http_request, run_as_nobody,
                      run_cli)

PY = Interpreter("debian", DEBIAN_PYTHON)
TOKEN = "s3cret-full-token"
READ_TOKEN = "r3ad-only-token"


def listening_address(t):
    i = t.err.wait_for(lambda l: "Probing server listening on" in l, 10)
    assert i is not None, t.stderr_lines()[-5:]
    m = re.search(r"listening on (\S+)", t.stderr_lines()[i])
    host, port = m.group(1).rsplit(":", 1)
    return host, int(port)


def remote_target(target_factory, **env):
    e = {"PROBING_PORT": "0"}
    e.update(env)
    return target_factory("remote_target.py", PY, env=e)


def call(addr, method, path, body=None, token=None, tls=None, timeout=10, headers=None):
    host, port = addr
    if tls is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = dict({"Content-Type": "application/json"}, **(headers or {}))
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null"), dict(r.getheaders())
    finally:
        conn.close()


def test_tokens_and_rights(target_factory):
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_READ_TOKEN=READ_TOKEN)
    addr = listening_address(t)
    assert addr[0] == "127.0.0.1"
    status, body, headers = call(addr, "GET", "/health")
    assert status == 401 and body["error"]["type"] == "Unauthorized" and headers.get("WWW-Authenticate") == "Bearer"
    assert "pid" not in json.dumps(body)  # a refusal tells nothing about the process
    assert call(addr, "GET", "/health", token="wrong")[0] == 401
    assert call(addr, "GET", "/health", token=TOKEN[:-1])[0] == 401
    status, body, _ = call(addr, "GET", "/health", token=READ_TOKEN)
    assert status == 200 and body["pid"] == t.pid and body["remote"] == "%s:%d" % addr
    # read: query, backtrace, config reads; not eval, SET, PUT /config, completion
    status, body, _ = call(addr, "POST", "/query", {"sql": "SELECT pid FROM process.info"}, token=READ_TOKEN)
    assert status == 200 and body["rows"] == [[t.pid]]
    assert call(addr, "GET", "/backtrace", token=READ_TOKEN)[0] == 200
    assert call(addr, "GET", "/config/query.max_rows", token=READ_TOKEN)[0] == 200
    assert call(addr, "POST", "/profile", {"hz": 50, "seconds": 1}, token=READ_TOKEN)[0] == 200
    assert call(addr, "GET", "/profile?last=1", token=READ_TOKEN)[0] == 200
    for method, path, req in [("POST", "/eval", {"code": "1"}), ("POST", "/query", {"sql": "SET query.max_rows = 5"}),
                              ("PUT", "/config/query.max_rows", {"value": "5"}), ("POST", "/complete", {"text": "st"})]:
        status, body, _ = call(addr, method, path, req, token=READ_TOKEN)
        assert status == 403 and "full token" in body["error"]["message"], (path, status, body)
    # full: everything
    status, body, _ = call(addr, "POST", "/eval", {"code": "print('hi from', step > 0)"}, token=TOKEN)
    assert status == 200 and body["output"] == "hi from True\n", body
    assert call(addr, "POST", "/query", {"sql": "SET query.max_rows = 500"}, token=TOKEN)[0] == 200
    assert call(addr, "PUT", "/config/query.max_rows", {"value": "10000"}, token=TOKEN)[0] == 200
    assert call(addr, "POST", "/complete", {"text": "ste", "line": "x = ste"}, token=TOKEN)[0] == 200
    assert call(addr, "POST", "/interrupt", {"id": "no-such-eval"}, token=TOKEN)[0] == 404
    # the audit trail has them, with the peer and the right
    status, body, _ = call(addr, "POST", "/query", {"sql": "SELECT peer, right, action, first_line, length(sha256) "
                                                          "FROM probing.audit ORDER BY time"}, token=READ_TOKEN)
    rows = [r[1:] for r in body["rows"]]
    assert rows == [["full", "eval", "print('hi from', step > 0)", 64], ["full", "set", "SET query.max_rows = 500", 64],
                    ["full", "config", 'query.max_rows = "10000"', 64], ["full", "complete", "x = ste", 64],
                    ["full", "interrupt", "interrupt no-such-eval", 64]], body["rows"]
    assert all(r[0].startswith("127.0.0.1:") for r in body["rows"])
    # the unix socket needs no token
    assert http_request(t.pid, "POST", "/eval", {"code": "1"}).status == 200


def test_cli_and_python_client_over_tcp(target_factory):
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_READ_TOKEN=READ_TOKEN)
    host, port = listening_address(t)
    where = "%s:%d" % (host, port)
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "eval", "step > 0")
    assert (rc, out) == (0, "True\n"), err
    rc, out, err = run_cli("-t", where, "eval", "1", env=dict(clean_env(), PROBING_TOKEN=TOKEN))
    assert (rc, out) == (0, "1\n"), err
    rc, out, err = run_cli("-t", where, "--token", READ_TOKEN, "query", "--format", "csv", "SELECT pid FROM process.info")
    assert (rc, out) == (0, "pid\n%d\n" % t.pid), err
    rc, out, err = run_cli("-t", where, "--token", READ_TOKEN, "eval", "1")
    assert rc == 1 and "full token" in err, err
    rc, out, err = run_cli("-t", where, "eval", "1")
    assert rc == 1 and "token" in err, err
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "backtrace")
    assert rc == 0 and "remote_target.py" in out, err
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "repl", input="x = 6\nfor i in range(2):\n    x *= 7\n\nx\n")
    assert (rc, out) == (0, "294\n"), (rc, out, err)
    code = ("import probing, json; p = probing.connect(%r, token=%r); "
            "print(json.dumps([p.eval('step > 0'), p.query('SELECT 2 AS x')]))" % (where, TOKEN))
    out = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True, timeout=30,
                         env=dict(clean_env(), PYTHONPATH=os.path.join(os.path.dirname(os.path.dirname(PROBING)), "lib", "probing", "python")))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["True\n", [{"x": 2}]]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls(target_factory, certificate):
    cert, key = certificate
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_TLS_CERT=cert, PROBING_TLS_KEY=key)
    addr = listening_address(t)
    assert "TLS" in t.stderr_lines()[0]
    ctx = ssl.create_default_context(cafile=cert)
    status, body, _ = call(addr, "POST", "/eval", {"code": "step > 0"}, token=TOKEN, tls=ctx)
    assert status == 200 and body["value"] == "True"
    with pytest.raises(ssl.SSLCertVerificationError):  # not trusted without the CA
        call(addr, "GET", "/health", token=TOKEN, tls=ssl.create_default_context())
    with pytest.raises((ConnectionError, http.client.HTTPException, socket.timeout, OSError)):
        call(addr, "GET", "/health", token=TOKEN, timeout=5)  # plain HTTP to a TLS port
    where = "%s:%d" % addr
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "--cacert", cert, "eval", "step > 0")
    assert (rc, out) == (0, "True\n"), err
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "--insecure", "eval", "1")
    assert (rc, out) == (0, "1\n"), err
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "--tls", "eval", "1")
    assert rc == 1 and "TLS" in err, err  # the certificate is not trusted


def test_piped_repl_with_the_read_token_fails(target_factory):
    # Nothing ran, so the exit status must say so (the code's own exceptions would not).
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_READ_TOKEN=READ_TOKEN)
    where = "%s:%d" % listening_address(t)
    rc, out, err = run_cli("-t", where, "--token", READ_TOKEN, "repl", input="x = 1\nprint(x)\n", timeout=30)
    assert rc == 1 and "needs the full token" in err and out == "", (rc, out, err)
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "repl", input="x = 1\nprint(x)\n1/0\n", timeout=30)
    assert rc == 0 and out == "1\n" and "ZeroDivisionError" in err, (rc, out, err)


def test_tls_to_a_plain_agent_says_to_drop_tls(target_factory):
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN)
    where = "%s:%d" % listening_address(t)
    for flag in ("--tls", "--insecure"):
        rc, out, err = run_cli("-t", where, "--token", TOKEN, flag, "eval", "1")
        assert rc == 1 and "answers in plain HTTP, not TLS" in err and "drop --tls" in err, (flag, err)
        assert "use --cacert" not in err, err
    rc, out, err = run_cli("-t", where, "--token", TOKEN, "eval", "1")
    assert (rc, out) == (0, "1\n"), err
    code = ("import probing\n"
            "try:\n"
            "    probing.connect(%r, token=%r, tls=True).eval('1')\n"
            "except probing.TargetUnavailable as e:\n"
            "    print(e)\n" % (where, TOKEN))
    p = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True, timeout=30,
                       env=clean_env({"PYTHONPATH": PYPKG}))
    assert "answers in plain HTTP, not TLS" in p.stdout, (p.stdout, p.stderr)


def test_loopback_without_token_serves_this_user_only(target_factory):
    t = remote_target(target_factory)
    addr = listening_address(t)
    assert "no token" in t.stderr_lines()[0]
    status, body, _ = call(addr, "POST", "/eval", {"code": "step > 0"})
    assert status == 200 and body["value"] == "True"
    # a web page going through the user's browser: a cross-site POST, or DNS rebinding
    status, body, _ = call(addr, "POST", "/eval", {"code": "1"}, headers={"Origin": "http://evil.example"})
    assert status == 403 and "web pages" in body["error"]["message"]
    status, body, _ = call(addr, "GET", "/health", headers={"Host": "rebound.evil.example:%d" % addr[1]})
    assert status == 403
    assert call(addr, "GET", "/health", headers={"Host": "localhost:%d" % addr[1]})[0] == 200
    probe = ("import http.client,sys; c=http.client.HTTPConnection('%s', %d, timeout=5); c.request('GET', '/health'); "
             "r=c.getresponse(); sys.stdout.write(str(r.status) + ' ' + r.read().decode())" % addr)
    out = run_as_nobody(["/usr/bin/python3", "-c", probe])
    assert out.stdout.startswith("403 ") and "PROBING_TOKEN" in out.stdout, (out.stdout, out.stderr)


def test_non_loopback_bind_without_token_refuses_tcp_and_keeps_running(target_factory):
    t = remote_target(target_factory, PROBING_HOST="0.0.0.0")
    i = t.err.wait_for(lambda l: "not listening on TCP" in l, 10)
    assert i is not None, t.stderr_lines()
    assert "without PROBING_TOKEN" in t.stderr_lines()[i]
    assert http_request(t.pid, "POST", "/eval", {"code": "step > 0"}).json()["value"] == "True"  # the agent serves
    assert http_request(t.pid, "GET", "/health").json()["remote"] is None
    t2 = remote_target(target_factory, PROBING_HOST="0.0.0.0", PROBING_TOKEN=TOKEN)
    host, port = listening_address(t2)
    assert host == "0.0.0.0"
    assert call(("127.0.0.1", port), "GET", "/health", token=TOKEN)[0] == 200


def test_allowed_and_refused_networks(target_factory):
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_ALLOW="10.0.0.0/8, 192.168.0.0/16")
    addr = listening_address(t)
    status, body, _ = call(addr, "GET", "/health", token=TOKEN)
    assert status == 403 and "PROBING_ALLOW" in body["error"]["message"]
    t2 = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_ALLOW="10.0.0.0/8,127.0.0.0/8")
    assert call(listening_address(t2), "GET", "/health", token=TOKEN)[0] == 200
    t3 = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_ALLOW="10.0.0.0/33")
    assert t3.err.wait_for(lambda l: "bad prefix length" in l, 10) is not None, t3.stderr_lines()


def _raw(addr, data, read=True, timeout=5):
    s = socket.create_connection(addr, timeout=timeout)
    try:
        s.sendall(data)
        return s.recv(65536) if read else b""
    except OSError:
        return b""
    finally:
        s.close()


def test_hostile_client(target_factory):
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_SERVER_REQUEST_TIMEOUT_S="1")
    addr = listening_address(t)
    rng = random.Random(7)
    # random bytes, truncated and malformed requests: each is refused or closed
    for _ in range(200):
        _raw(addr, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))), read=False)
    # a truncated request: the agent closes it after server.request_timeout_s (1 s here)
    s = socket.create_connection(addr, timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    start = time.monotonic()
    assert s.recv(100) == b"" and time.monotonic() - start < 3
    s.close()
    reply = _raw(addr, b"BREW /coffee HTCPCP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:80]
    big = b"POST /eval HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + \
          b"\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536
    assert _raw(addr, big).startswith(b"HTTP/1.1 413"), "oversized body"
    huge_header = b"GET /health HTTP/1.1\r\nX-A: " + b"a" * 100000 + b"\r\n\r\n"
    assert _raw(addr, huge_header).startswith(b"HTTP/1.1 431")
    # 1,000 connections at once, and slow drips that never finish a request
    socks = []
    for _ in range(1000):
        try:
            socks.append(socket.create_connection(addr, timeout=2))
        except OSError:
            pass
    drips = []
    for _ in range(20):
        try:
            s = socket.create_connection(addr, timeout=2)
            s.sendall(b"GET /hea")
            drips.append(s)
        except OSError:
            pass
    for s in drips:
        try:
            s.sendall(b"l")
        except OSError:
            pass
    fds_during = len(os.listdir("/proc/%d/fd" % t.pid))
    for s in socks + drips:
        s.close()
    assert fds_during < 300, "the agent held %d descriptors for the flood" % fds_during
    # afterwards: a normal request answers at once, over TCP and the unix socket
    deadline = time.monotonic() + 10
    while True:
        start = time.monotonic()
        try:
            status = call(addr, "GET", "/health", token=TOKEN)[0]
        except OSError:
            status = None
        took = time.monotonic() - start
        if (status == 200 and took < 0.1) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200 and took < 0.1, (status, took)
    start = time.monotonic()
    status, body, _ = call(addr, "POST", "/query", {"sql": "SELECT count(*) FROM process.info"}, token=TOKEN)
    assert status == 200 and time.monotonic() - start < 0.1
    # the target's loop never stalled: its longest gap between two steps stayed small
    gap = http_request(t.pid, "POST", "/eval", {"code": "max_gap"}).json()["value"]
    assert float(gap) < 0.5, gap


def test_a_socket_name_taken_first_gets_nothing(target_factory):
    """Anyone may bind @probing-PID before the agent does. The CLI, inject and the Python client
    check who listens (SO_PEERCRED) and send nothing — no code, no token — to another process."""
    t = target_factory("idle.py", PY, mode="none")
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind("\0probing-%d" % t.pid)
    squatter.listen(64)
    received = []  # what each connection sent before it closed

    def serve():
        while True:
            try:
                conn, _ = squatter.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                try:
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    pass
                received.append(data)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        holder = "@probing-%d is held by process %d" % (t.pid, os.getpid())
        rc, out, err = run_cli(t.pid, "eval", "print('secret code')", env={"PROBING_TOKEN": TOKEN})
        assert rc == 1 and holder in err and "nothing was sent" in err, (rc, out, err)
        rc, out, err = run_cli(t.pid, "inject", timeout=60)
        assert rc == 1 and "cannot attach to process %d" % t.pid in err and holder in err, (rc, out, err)
        assert agent_mapped(t.pid) == 0  # refused before injecting anything
        code = ("import probing\n"
                "try:\n"
                "    probing.connect(pid=%d, token=%r).eval('1')\n"
                "except probing.TargetUnavailable as e:\n"
                "    print(e)\n" % (t.pid, TOKEN))
        p = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True, timeout=30,
                           env=clean_env({"PYTHONPATH": PYPKG}))
        assert holder in p.stdout and "nothing was sent" in p.stdout, (p.stdout, p.stderr)
    finally:
        squatter.shutdown(socket.SHUT_RDWR)
        squatter.close()
        server.join(15)
    # Every client connected and closed without sending a byte.
    assert len(received) >= 3 and all(r == b"" for r in received), received


def test_read_right_runs_no_repr_of_the_target(target_factory):
    # A class's __repr__ can do anything (query a database, take a lock): with the read right the
    # locals show built-in values only, and <Type at 0x...> for the rest; the full right sees reprs.
    t = remote_target(target_factory, PROBING_TOKEN=TOKEN, PROBING_READ_TOKEN=READ_TOKEN)
    addr = listening_address(t)
    setup = ("class Spy:\n"
             "    def __repr__(self):\n"
             "        global spied\n"
             "        spied += 1\n"
             "        return 'Spy!'\n"
             "    def __hash__(self):\n"
             "        global spied\n"
             "        spied += 1\n"
             "        return 1\n"
             "spied = 0\n"
             "spy = Spy()\n"
             "plain = {'a': [1, 2.5, None], 'b': (True, b'x')}\n"
             "keyed = {Spy(): 'value'}\n"
             "spied = 0\n")  # the dict above hashed its key once
    status, body, _ = call(addr, "POST", "/eval", {"code": setup}, token=TOKEN)
    assert status == 200 and body["exception"] is None, body

    def module_locals(token):
        status, body, _ = call(addr, "GET", "/backtrace?locals=1", token=token)
        assert status == 200, body
        locals_ = body["threads"][0]["frames"][-1]["locals"]  # the outermost frame: <module>
        assert all(x["kind"] == "global" for x in locals_), locals_
        return {x["name"]: x["value"] for x in locals_}

    brief = module_locals(READ_TOKEN)
    assert re.fullmatch(r"<__main__\.Spy at 0x[0-9a-f]+>", brief["spy"]), brief["spy"]
    assert brief["plain"] == "{'a': [1, 2.5, None], 'b': (True, b'x')}", brief["plain"]
    assert re.fullmatch(r"\{<__main__\.Spy at 0x[0-9a-f]+>: 'value'\}", brief["keyed"]), brief["keyed"]
    status, body, _ = call(addr, "POST", "/query", {"sql": "SELECT locals FROM python.backtrace WHERE func = "
                                                          "'<module>'"}, token=READ_TOKEN)
    assert status == 200 and "Spy at 0x" in body["rows"][0][0] and "Spy!" not in body["rows"][0][0], body
    status, body, _ = call(addr, "POST", "/eval", {"code": "spied"}, token=TOKEN)
    assert body["value"] == "0", body  # no __repr__ or __hash__ of the target ran
    full = module_locals(TOKEN)
    assert full["spy"] == "Spy!" and full["keyed"] == "{Spy!: 'value'}", full
