"""`probing PID catch CLASS`: raises of an exception class recorded in python.exceptions, caught or
not, once each, where they were raised, with the stack out from there (CPython 3.12+, refused with
the reason before); the program goes on as before, and removing the catch gives sys.monitoring's
tool id back."""
import json
import time

import pytest

from conftest import interpreter_params, marker_line, run_cli
from test_probes import cli_ok, probes, wait_until

pytestmark = pytest.mark.parametrize("interp", interpreter_params())


def raised(pid, catch_id):
    rows = json.loads(cli_ok(pid, "query", "--format", "json",
                             "SELECT thread, type, message, file, line, function, stack FROM python.exceptions "
                             "WHERE kind = 'raised' AND context = 'catch %d' ORDER BY time" % catch_id))
    for r in rows:
        r["stack"] = json.loads(r["stack"])
    return rows


def step_of(t):
    start = len(t.stdout_lines())
    t.write("state\n")
    i = t.wait_line(lambda l: l.startswith("step "), start=start)
    return int(t.stdout_lines()[i].split()[1])


def test_catch_records_raises_of_a_class_caught_or_not(interp, target_factory):
    t = target_factory("raises.py", interp, mode="launch")
    if tuple(map(int, interp.version.split("."))) < (3, 12):
        rc, out, err = run_cli(t.pid, "catch", "KeyError")
        assert rc == 1 and "catch needs CPython 3.12 or later" in err and "python.exceptions" in err, (rc, out, err)
        return
    key = json.loads(cli_ok(t.pid, "catch", "KeyError", "--limit", "2", "--json"))
    assert (key["event"], key["catch"], key["state"]) == ("raise", ["KeyError"], "active"), key
    os_error = json.loads(cli_ok(t.pid, "catch", "OSError", "--limit", "1", "--json"))
    value = json.loads(cli_ok(t.pid, "catch", "builtins.ValueError", "--when", "step % 2 == 0 and 'x' in str(exc)",
                              "--limit", "2", "--json"))
    ids = (key["id"], os_error["id"], value["id"])
    assert wait_until(lambda: all(probes(t.pid)[i]["state"].startswith("done") for i in ids), 20), probes(t.pid)

    # Each KeyError once, where lookup() raised it, with the calls out from there.
    rows = raised(t.pid, key["id"])
    assert len(rows) == 2, rows
    for r in rows:
        assert (r["type"], r["function"], r["line"], r["thread"]) == \
            ("KeyError", "lookup", marker_line("raises.py", "RAISES_KEY"), "MainThread"), r
        assert r["file"].endswith("raises.py") and r["message"].startswith("'k"), r
        assert [f["func"] for f in r["stack"][:3]] == ["lookup", "fetch", "main"], r["stack"]
        assert {"name": "key", "value": repr(r["message"].strip("'")), "kind": "argument"} in \
            r["stack"][0]["locals"], r["stack"][0]
    # A subclass: open()'s FileNotFoundError is an OSError; raised in C, recorded in main().
    [r] = raised(t.pid, os_error["id"])
    assert (r["type"], r["function"]) == ("FileNotFoundError", "main"), r
    # --when, in the raising frame, with exc.
    rows = raised(t.pid, value["id"])
    assert len(rows) == 2 and all(r["line"] == marker_line("raises.py", "RAISES_VALUE") for r in rows), rows
    steps = [int(next(v["value"] for v in r["stack"][0]["locals"] if v["name"] == "step")) for r in rows]
    assert all(s % 2 == 0 for s in steps), steps

    # Removed: no more rows, and the tool id is free again; the program went on.
    again = json.loads(cli_ok(t.pid, "catch", "ValueError", "--json"))
    assert wait_until(lambda: len(raised(t.pid, again["id"])) >= 2, 20), raised(t.pid, again["id"])
    cli_ok(t.pid, "probe", "remove", str(again["id"]))
    n = len(raised(t.pid, again["id"]))
    before = step_of(t)
    time.sleep(0.5)
    assert step_of(t) > before
    assert len(raised(t.pid, again["id"])) == n
    cli_ok(t.pid, "probe", "remove", "all")
    out = cli_ok(t.pid, "eval", "import sys; print([sys.monitoring.get_tool(i) for i in (3, 4)])")
    assert out.strip() == "[None, None]", out


def test_catch_says_what_is_wrong(interp, target_factory):
    t = target_factory("raises.py", interp, mode="launch")
    rc, out, err = run_cli(t.pid, "catch", "not a class")
    assert rc == 1 and "catch takes exception classes" in err, (rc, out, err)
    rc, out, err = run_cli(t.pid, "catch", "KeyError", "--limit", "-1")
    assert rc != 0 and "--limit" in err, (rc, out, err)
