"""python.exceptions: exceptions nothing caught, recorded by the agent's hooks (exceptions.capture)
with their stack and locals in brief, while the program's own hooks still run and print as
before; a hook the program sets later is wrapped in turn; off puts back what was there."""
import json
import time

import pytest

from conftest import Target, eval_ok, interpreter_params, marker_line, run_cli

PARAMS = interpreter_params()
HOOKS = "import sys, threading; print(sys.excepthook.__name__, sys.unraisablehook.__name__, " \
        "threading.excepthook.__name__)"
OURS = "probing_excepthook probing_unraisablehook probing_thread_excepthook"


def rows(pid, sql):
    rc, out, err = run_cli(pid, "query", "--format", "json", sql, timeout=30)
    assert rc == 0, (sql, err)
    return json.loads(out)


def wait_hooks(pid, want, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = eval_ok(pid, HOOKS).strip()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def command(t, word):
    n = len(t.stdout_lines())
    t.write(word + "\n")
    assert t.wait_line("done " + word, timeout=20, start=n) is not None, (t.stdout_lines()[-5:], t.stderr_lines()[-20:])


@pytest.mark.parametrize("py", PARAMS)
def test_uncaught_exceptions_are_recorded_and_the_programs_hooks_still_run(py):
    with Target("exceptions.py", py, mode="launch") as t:
        assert wait_hooks(t.pid, OURS) == OURS
        # The program sets its own threading.excepthook over the agent's: it is wrapped in turn.
        command(t, "mine")
        assert wait_hooks(t.pid, OURS) == OURS
        command(t, "raise")
        got = rows(t.pid, "SELECT kind, thread, type, message, file, line, function, stack, chain, context "
                          "FROM python.exceptions ORDER BY time")
        assert [(r["kind"], r["thread"], r["type"], r["message"]) for r in got] == [
            ("thread", "loader", "ValueError", "bad batch 7"),
            ("unraisable", "MainThread", "RuntimeError", "close failed"),
            ("thread", "lookup", "RuntimeError", "lookup failed"),
        ], got
        loader, leaky, lookup = got
        assert (loader["file"], loader["line"], loader["function"]) == (
            t.script_path, marker_line("exceptions.py", "EXC_RAISE_LINE"), "load_batch")
        stack = json.loads(loader["stack"])
        assert stack[0]["func"] == "load_batch", stack
        assert [(v["name"], v["value"], v["kind"]) for v in stack[0]["locals"]] == [
            ("index", "7", "argument"), ("items", "[1, 2, 3]", "local")], stack[0]
        assert loader["chain"] is None and loader["context"] is None
        # (3.14+ say it in their own words, the object within: "Exception ignored while calling
        # deallocator <function Leaky.__del__ at 0x...>")
        assert leaky["function"] == "Leaky.__del__", leaky
        assert leaky["context"].startswith("Exception ignored") and "Leaky.__del__" in leaky["context"], leaky
        assert json.loads(lookup["chain"]) == [{"how": "cause", "type": "KeyError", "message": "'k'"}], lookup
        # The program's hook ran for both threads, and the default one after it printed as ever.
        assert [l for l in t.stdout_lines() if l.startswith("mine:")] == ["mine: ValueError", "mine: RuntimeError"]
        err = "\n".join(t.stderr_lines())
        assert "ValueError: bad batch 7" in err and "RuntimeError: close failed" in err, err[-2000:]

        # Off: every hook the agent set is taken out; the program's own is back in place.
        assert run_cli(t.pid, "config", "exceptions.capture=off")[0] == 0
        assert wait_hooks(t.pid, "excepthook unraisablehook mine") == "excepthook unraisablehook mine"
        command(t, "raise")
        assert len(rows(t.pid, "SELECT * FROM python.exceptions")) == 3
        assert [l for l in t.stdout_lines() if l.startswith("mine:")][-2:] == ["mine: ValueError", "mine: RuntimeError"]

        # The main thread's uncaught exception ends the program as it would without the agent.
        assert run_cli(t.pid, "config", "exceptions.capture=on")[0] == 0
        assert wait_hooks(t.pid, OURS) == OURS
        t.write("die\n")
        assert t.wait_exit(20) == 1
        assert t.err.wait_for(lambda l: l == "SystemError: the end", 10) is not None, t.stderr_lines()[-5:]
