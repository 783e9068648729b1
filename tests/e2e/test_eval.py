"""probing PID eval, and the agent's HTTP surface, against real targets under each interpreter."""
import json
import re
import signal
import subprocess
import time
import uuid

import pytest

from conftest import (PROBING, Target, connect_agent, eval_ok, eval_while_gil_held, http_request, interpreter_params,
                      read_http_reply, run_as_nobody, run_cli)


@pytest.fixture(scope="module")
def idle(interp):
    """One idle target per interpreter, shared by the tests that leave it as they found it."""
    with Target("idle.py", interp, mode="preload") as t:
        yield t


def _alive_and_answering(t):
    assert t.alive(), "target %d died (stderr %r)" % (t.pid, t.stderr_lines()[-10:])
    assert eval_ok(t.pid, "1 + 1") == "2\n"


# ---------------------------------------------------------------------------------------------
# What eval prints

def test_expression_value(idle, interp):
    assert eval_ok(idle.pid, "1 + 1") == "2\n"


def test_print_target_object(idle, interp):
    assert eval_ok(idle.pid, "print(model)") == "{'layers': 3}\n"


def test_runs_in_the_target_process(idle, interp):
    assert eval_ok(idle.pid, "import os; os.getpid()") == "%d\n" % idle.pid
    assert eval_ok(idle.pid, "import sys; sys.executable") == repr(interp.executable) + "\n"
    assert eval_ok(idle.pid, "__name__") == "'__main__'\n"


def test_statement_prints_nothing(idle, interp):
    assert eval_ok(idle.pid, "stmt_result = 40 + 2") == ""
    assert eval_ok(idle.pid, "stmt_result") == "42\n"


def test_none_value_prints_nothing(idle, interp):
    assert eval_ok(idle.pid, "None") == ""


def test_multiline_with_final_expression(idle, interp):
    code = "squares = [i * i for i in range(4)]\nprint(len(squares))\nfor s in squares:\n    print(s)\nsum(squares)\n"
    assert eval_ok(idle.pid, code) == "4\n0\n1\n4\n9\n14\n"


def test_code_from_file(idle, interp, tmp_path):
    f = tmp_path / "snippet.py"
    f.write_text("print('from file')\ndef triple(n):\n    return 3 * n\ntriple(14)\n")
    rc, out, err = run_cli(idle.pid, "eval", "-f", str(f))
    assert (rc, out, err) == (0, "from file\n42\n", "")


def test_code_from_missing_file(idle, interp, tmp_path):
    rc, out, err = run_cli(idle.pid, "eval", "-f", str(tmp_path / "nope.py"))
    assert rc == 1 and out == ""
    assert "nope.py" in err


def test_code_from_stdin(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "-", input="print('from stdin')\n2 ** 10\n")
    assert (rc, out, err) == (0, "from stdin\n1024\n", "")
    rc, out, err = run_cli(idle.pid, "eval", "-f", "-", input="'a' * 3\n")
    assert (rc, out, err) == (0, "'aaa'\n", "")


def test_state_persists_in_main(idle, interp):
    assert eval_ok(idle.pid, "y = 5") == ""
    assert eval_ok(idle.pid, "y * 2") == "10\n"
    assert eval_ok(idle.pid, "import sys; sys.modules['__main__'].y") == "5\n"
    # The target's own globals are the same namespace, and live.
    c1 = int(eval_ok(idle.pid, "counter"))
    idle.wait_line(lambda l: l.startswith("tick"), start=len(idle.stdout_lines()))
    idle.wait_line(lambda l: l.startswith("tick"), start=len(idle.stdout_lines()))
    c2 = int(eval_ok(idle.pid, "counter"))
    assert c2 > c1 > 0


def test_output_captured_not_leaked(idle, interp):
    """What the eval prints comes back to the CLI and never reaches the target's stdout/stderr,
    while the target's own thread keeps printing to its stdout during the capture."""
    mark = "E2E-%s" % uuid.uuid4().hex
    code = ("import sys, time\nprint('%s-out-1')\nsys.stderr.write('%s-err\\n')\ntime.sleep(0.6)\n"
            "print('%s-out-2', flush=True)\n" % (mark, mark, mark))
    t0 = time.monotonic()
    out = eval_ok(idle.pid, code)
    t1 = time.monotonic()
    assert out == "%s-out-1\n%s-err\n%s-out-2\n" % (mark, mark, mark)
    # Let anything the target wrote meanwhile reach us: a later tick is flushed after it.
    idle.wait_line(lambda l: l.startswith("tick"), start=len(idle.stdout_lines()))
    leaked = [l for l in idle.stdout_lines() + idle.stderr_lines() if mark in l]
    assert leaked == []
    during = [l for ts, l in idle.out.timed() if t0 + 0.1 < ts < t1 - 0.05 and l.startswith("tick ")]
    assert len(during) >= 4, "the target's ticker printed %d lines during a 0.6 s eval" % len(during)


def test_output_printed_before_exception_is_kept(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "print('before')\n1 / 0\n")
    assert rc == 1
    assert out == "before\n"
    assert "ZeroDivisionError" in err


# ---------------------------------------------------------------------------------------------
# Exceptions

def test_exception_traceback(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "a = 1\nb = 0\nresult = a / b\n")
    assert rc == 1 and out == ""
    assert err.startswith("Traceback (most recent call last):\n"), err
    assert 'line 3, in <module>' in err, err
    assert "    result = a / b\n" in err, "the traceback lacks the source line:\n" + err
    assert err.rstrip("\n").endswith("ZeroDivisionError: division by zero"), err
    # No frames of the agent's own machinery.
    assert "agent_helpers" not in err and "run_eval" not in err, err


def test_exception_in_final_expression(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "1/0")
    assert rc == 1 and out == ""
    assert "ZeroDivisionError: division by zero" in err
    assert "    1/0\n" in err, "the traceback lacks the source line:\n" + err
    # 3.11+ marks the failing expression under the line; the carets must sit under it, also when
    # the code has no final newline.
    if tuple(map(int, interp.version.split("."))) >= (3, 11):
        assert "    1/0\n    ~^~\n" in err, err
        rc, out, err = run_cli(idle.pid, "eval", "x = 1\ny = x / 0")
        assert "    y = x / 0\n        ~~^~~\n" in err, err


def test_syntax_error(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "def broken(:\n")
    assert rc == 1 and out == ""
    assert "SyntaxError" in err, err
    _alive_and_answering(idle)


@pytest.mark.parametrize("code,name", [("raise SystemExit(3)", "SystemExit: 3"),
                                       ("raise KeyboardInterrupt", "KeyboardInterrupt")])
def test_exit_exceptions_are_reported_not_raised(idle, interp, code, name):
    rc, out, err = run_cli(idle.pid, "eval", code)
    assert rc == 1 and out == ""
    assert name in err, err
    _alive_and_answering(idle)
    before = len(idle.stdout_lines())
    idle.wait_line(lambda l: l.startswith("tick"), start=before)  # the target itself still runs


def test_timeout_interrupts_and_target_survives(idle, interp):
    t0 = time.monotonic()
    rc, out, err = run_cli(idle.pid, "eval", "--timeout", "1", "while True: pass", timeout=15)
    elapsed = time.monotonic() - t0
    assert rc == 1, (out, err)
    assert elapsed < 3.0, "eval --timeout 1 took %.2f s" % elapsed
    assert elapsed >= 0.9
    assert "timeout" in err.lower(), err
    _alive_and_answering(idle)


def _eval_with_ctrl_c(pid, code, presses):
    """Runs `probing PID eval CODE`, sends it SIGINT `presses` times (1 s, then 0.5 s apart), and
    returns (rc, out, err, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([PROBING, str(pid), "eval", "--timeout", "60", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    for i in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err, time.monotonic() - t0


def test_ctrl_c_interrupts_the_code_and_says_when(idle, interp):
    # The code is in time.sleep: the KeyboardInterrupt waits for it, and the user is told so.
    rc, out, err, _ = _eval_with_ctrl_c(idle.pid, "import time; time.sleep(2.5); print('finished')", 1)
    assert rc == 1 and out == "", (rc, out, err)
    assert "KeyboardInterrupt sent" in err and "clock_nanosleep" in err, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    # Running Python: it stops at once.
    rc, out, err, elapsed = _eval_with_ctrl_c(idle.pid, "while True: pass", 1)
    assert rc == 1 and "KeyboardInterrupt" in err and elapsed < 5, (rc, err, elapsed)
    # A second Ctrl-C stops waiting.
    rc, out, err, elapsed = _eval_with_ctrl_c(idle.pid, "import time; time.sleep(4)", 2)
    assert rc == 130 and "stopped waiting" in err and elapsed < 3.5, (rc, err, elapsed)
    time.sleep(3)  # the sleep ends and its KeyboardInterrupt is raised: the target goes on
    _alive_and_answering(idle)


def test_timeout_keeps_output_so_far(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "--timeout", "0.5", "print('started')\nwhile True: pass", timeout=15)
    assert rc == 1
    assert out == "started\n"
    assert "timeout" in err.lower()


def test_huge_output_is_cut(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "print('x' * 5_000_000)", timeout=30)
    assert rc == 0, err
    limit = 1048576  # eval.max_output_bytes default
    assert out.startswith("x" * limit)
    assert re.fullmatch(r"\n\[probing: output cut at %d \w+\]\n" % limit, out[limit:]), out[limit:limit + 200]
    rc, out, err = run_cli(idle.pid, "eval", "--json", "print('x' * 5_000_000)", timeout=30)
    assert rc == 0
    assert json.loads(out)["output_truncated"] is True
    _alive_and_answering(idle)


def test_huge_multibyte_output_is_bounded_in_bytes(idle, interp):
    """eval.max_output_bytes is documented as bytes: 3 M two-byte characters must come back cut
    to about 1 MiB of UTF-8, not 2 MiB."""
    rc, out, err = run_cli(idle.pid, "eval", "print('\\u00e9' * 3_000_000)", timeout=30)
    assert rc == 0, err
    n = len(out.encode("utf-8"))
    assert "output cut" in out[-200:]
    assert n <= 1048576 + 200, "%d bytes came back; the notice says %r" % (n, out[-60:])


def test_large_value_repr(idle, interp):
    out = eval_ok(idle.pid, "list(range(50000))")
    assert len(out) > 1000
    assert "cut" in out or out == repr(list(range(50000))) + "\n"


def test_json_output(idle, interp):
    rc, out, err = run_cli(idle.pid, "eval", "--json", "print('hi')\n41 + 1")
    assert rc == 0, err
    j = json.loads(out)
    assert {"output", "value", "exception"} <= set(j), j
    assert (j["output"], j["value"], j["exception"]) == ("hi\n", "42", None)

    rc, out, err = run_cli(idle.pid, "eval", "--json", "1 / 0")
    assert rc == 1
    j = json.loads(out)
    assert j["value"] is None
    assert j["exception"]["type"] == "ZeroDivisionError"
    assert j["exception"]["message"] == "division by zero"
    assert "ZeroDivisionError" in j["exception"]["traceback"]


def test_concurrent_evals(idle, interp):
    """Several CLIs at once, each gets its own output back."""
    procs = [subprocess.Popen([PROBING, str(idle.pid), "eval",
                               "import time; time.sleep(0.2); print('eval-%d')" % i],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    try:
        results = [p.communicate(timeout=20) + (p.returncode,) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert results == [("eval-%d\n" % i, "", 0) for i in range(6)]


# ---------------------------------------------------------------------------------------------
# HTTP, spoken directly

def test_health(idle, interp):
    r = http_request(idle.pid, "GET", "/health")
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("application/json")
    h = r.json()
    assert h["pid"] == idle.pid
    assert h["python"].startswith(interp.version + "."), h["python"]
    assert h["python_status"] == "ready"
    assert h["cmdline"] == [interp.executable, idle.script_path]
    assert h["socket"] == "@probing-%d" % idle.pid


def test_python_version_matches_interpreter(idle, interp):
    h = http_request(idle.pid, "GET", "/health").json()
    assert eval_ok(idle.pid, "import platform; platform.python_version()") == repr(h["python"]) + "\n"


def test_unknown_route_is_404_json(idle, interp):
    r = http_request(idle.pid, "GET", "/no/such/route")
    assert r.status == 404
    e = r.json()["error"]
    assert e["type"] and "/no/such/route" in e["message"]


def test_malformed_eval_body_is_400(idle, interp):
    for body in (b"{not json", b'{"timeout": 1}', b'{"code": 5}', b"[1, 2]"):
        r = http_request(idle.pid, "POST", "/eval", body)
        assert r.status == 400, (body, r)
        e = r.json()["error"]
        assert isinstance(e["type"], str) and isinstance(e["message"], str) and e["message"], r
    r = http_request(idle.pid, "POST", "/eval", {"code": "1", "timeout": -1})
    assert r.status == 400, r


def test_raw_eval(idle, interp):
    r = http_request(idle.pid, "POST", "/eval", {"code": "print('raw')\nmodel['layers'] * 2", "timeout": 5})
    assert r.status == 200
    j = r.json()
    assert (j["output"], j["value"], j["exception"]) == ("raw\n", "6", None)


def test_wrong_method(idle, interp):
    r = http_request(idle.pid, "POST", "/health", {})
    assert r.status == 405
    assert "error" in r.json()


def test_keep_alive_two_requests_one_connection(idle, interp):
    with connect_agent(idle.pid) as s:
        for i in range(2):
            body = json.dumps({"code": "%d * 3" % i}).encode()
            s.sendall(b"POST /eval HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            r = read_http_reply(s)
            assert r.status == 200 and r.json()["value"] == str(i * 3)


REFUSED_PEER = r"""
import json, os, socket, sys
# Sends GET /health and reads the whole reply (by Content-Length), then reads once more to see how
# the connection ends. A send that fails with EPIPE (the agent answered and closed first) is retried:
# we want the case where the request reached the agent before it answered.
for tries in range(1, 51):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect("\0probing-%s" % sys.argv[1])
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
    except BrokenPipeError:
        s.close()
        continue
    break
data = b""
while b"\r\n\r\n" not in data:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
length = 0
for line in head.split(b"\r\n")[1:]:
    k, _, v = line.partition(b":")
    if k.strip().lower() == b"content-length":
        length = int(v)
while len(body) < length:
    chunk = s.recv(65536)
    if not chunk:
        break
    body += chunk
try:
    end = "eof" if s.recv(65536) == b"" else "more data"
except ConnectionResetError:
    end = "ECONNRESET"
print(json.dumps({"uid": os.getuid(), "tries": tries, "head": head.decode("latin-1"),
                  "body": body.decode("latin-1"), "end": end}))
"""


def _refused_peer(pid):
    # The client runs under Debian's python: root's pyenv is not readable by uid 65534.
    p = run_as_nobody(["/usr/bin/python3", "-c", REFUSED_PEER, str(pid)])
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["uid"] == 65534
    return got


def test_refused_peer_gets_403(idle, interp):
    got = _refused_peer(idle.pid)
    assert got["head"].startswith("HTTP/1.1 403"), got
    err = json.loads(got["body"])["error"]
    assert "65534" in err["message"], err
    _alive_and_answering(idle)


def test_refused_peer_connection_ends_cleanly(idle, interp):
    """After the 403 the connection must end with EOF. Closing with the client's request still
    unread makes Linux reset it (ECONNRESET), and clients such as curl then lose the 403."""
    got = _refused_peer(idle.pid)
    assert got["head"].startswith("HTTP/1.1 403"), got
    assert got["end"] == "eof", "after the 403 the connection ended with %s (%d tries)" % (got["end"], got["tries"])


# ---------------------------------------------------------------------------------------------
# Targets that get disturbed: their own processes

def test_target_exits_mid_request(interp, target_factory):
    t = target_factory("idle.py", interp, mode="preload")
    t0 = time.monotonic()
    rc, out, err = run_cli(t.pid, "eval", "import os; os._exit(0)", timeout=15)
    elapsed = time.monotonic() - t0
    assert rc == 1, (out, err)
    assert elapsed < 5, elapsed
    assert re.search(r"closed the connection|exited", err), err
    assert t.wait_exit(10) == 0


def test_gil_held_answers_within_gil_timeout(interp, target_factory):
    t = target_factory("gil_holder.py", interp, mode="preload", args=[3], env={"PROBING_GIL_TIMEOUT_S": "1"})
    holder, rc, out, err, elapsed = eval_while_gil_held(t)
    assert rc == 1, (out, err)
    assert 0.9 <= elapsed < 2.5, "answered after %.2f s with gil.timeout_s=1" % elapsed
    assert "GIL" in err and "not released" in err, err
    assert "tid %d" % holder in err, "the answer does not name the holding thread: " + err
    # Once the holder lets go, the same agent serves evals again.
    t.wait_line("released", timeout=10)
    assert eval_ok(t.pid, "model") == "{'layers': 3}\n"


@pytest.mark.parametrize("interp", interpreter_params(only=["debian"]), scope="module")
def test_gil_held_default_timeout(interp, target_factory):
    t = target_factory("gil_holder.py", interp, mode="preload", args=[30])
    holder, rc, out, err, elapsed = eval_while_gil_held(t)
    assert rc == 1, (out, err)
    assert 4.8 <= elapsed < 7, "answered after %.2f s with the default gil.timeout_s=5" % elapsed
    assert "GIL" in err and "tid %d" % holder in err, err
    # The health endpoint needs no GIL: it still answers while the GIL is held.
    h = http_request(t.pid, "GET", "/health", timeout=3).json()
    assert h["pid"] == t.pid


def test_agent_does_not_import_threading_for_the_target(interp):
    # threading imported first on an agent thread would take that thread for the main thread.
    with Target("no_threading.py", interp, mode="launch") as t:
        if "threading imported at start: True" in t.stdout_lines():
            pytest.skip("this interpreter imports threading at start-up (site), nothing to check")
        assert "threading imported at start: False" in t.stdout_lines()
        assert eval_ok(t.pid, "print('hi')") == "hi\n"
        rc, out, err = run_cli(str(t.pid), "backtrace")
        assert rc == 0, err
        assert eval_ok(t.pid, "import sys; 'threading' in sys.modules") == "False\n"
        t.write("check\n")
        i = t.wait_line(lambda l: l.startswith("main thread is main"), timeout=10)
        assert t.stdout_lines()[i] == "main thread is main: True"


def test_timeout_while_the_agent_loads_its_helpers(interp, target_factory):
    """The first eval loads the agent's helpers (imports, hundreds of GIL hand-overs when the target's
    threads spin): a deadline that passes meanwhile must interrupt nothing the load needs. An
    interrupt that loaded the helpers itself once waited on the import lock the load held, holding
    the lock the load's worker needed next, with the GIL: the target froze for good."""
    t = target_factory("spin.py", interp, mode="preload")
    rc, out, err = run_cli(t.pid, "eval", "--timeout", "0.01", "1 + 1", timeout=30)
    assert rc in (0, 1), (rc, out, err)
    before = int(eval_ok(t.pid, "counter").strip())  # answers: the GIL is not held forever
    time.sleep(0.5)
    assert int(eval_ok(t.pid, "counter").strip()) > before, "the target's main thread no longer runs"
    assert t.alive()


def test_answers_a_busy_event_loop(interp, target_factory):
    """An asyncio loop that always has work polls with a zero timeout: it lets the GIL go and takes it
    back every millisecond, so CPython never asks it to hand the GIL over, and a thread waiting for
    it (the agent's) could wait for good. The agent has the main thread step aside."""
    t = target_factory("async_tasks.py", interp, mode="preload")
    for _ in range(3):
        t0 = time.monotonic()
        before = int(eval_ok(t.pid, "counter").strip())
        assert time.monotonic() - t0 < 3.0, "eval took %.1f s" % (time.monotonic() - t0)
    time.sleep(0.3)
    assert int(eval_ok(t.pid, "counter").strip()) > before, "the loop stopped"


@pytest.mark.parametrize("py", interpreter_params())
def test_a_program_that_traces_itself_goes_on_after_requests(py, target_factory):
    """The agent's requests leave nothing pending in the interpreter: a thread in tracing mode
    (sys.settrace, as under coverage or pdb) kept finding the eval breaker raised after the
    first one, and on 3.11 ran its function's first instruction again and again for good."""
    t = target_factory("traced_loop.py", py, mode="launch")

    def calls():
        start = len(t.stdout_lines())
        t.write("\n")
        i = t.wait_line(lambda l: l.startswith("calls "), start=start)
        return int(t.stdout_lines()[i].split()[1])

    assert run_cli(t.pid, "eval", "1")[0] == 0
    assert run_cli(t.pid, "backtrace")[0] == 0
    before = calls()
    time.sleep(0.3)
    after = calls()
    assert after > before + 1000, (before, after)
