"""`probing PID probe`: breakpoints that record and go on, on a real loop. A line probe in a script's
module-level loop, a function's call and return in a named thread, conditions, limits, expiry,
expressions that raise, a probe too costly for its budget, removal, refusals; and the program's
results unchanged throughout."""
import json
import time

import pytest

from conftest import interpreter_params, marker_line, run_cli, torch_importable

pytestmark = pytest.mark.parametrize("interp", interpreter_params())

MAIN = marker_line("probes_target.py", "PROBE_MAIN_LINE")
NO_CODE = marker_line("probes_target.py", "PROBE_NO_CODE")


def cli_ok(*args):
    rc, out, err = run_cli(*args)
    assert rc == 0, (args, rc, out, err)
    return out


def hits(pid, probe_id):
    out = cli_ok(pid, "query", "--format", "json",
                 "SELECT thread, line, function, event, captured, error FROM python.probe_hits "
                 "WHERE probe_id = %d ORDER BY time" % probe_id)
    rows = json.loads(out)
    for r in rows:
        r["captured"] = json.loads(r["captured"])
    return rows


def probes(pid):
    return {p["id"]: p for p in json.loads(cli_ok(pid, "probe", "list", "--json"))}


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_unchanged(t):
    """The program's own check: its total is what its steps compute."""
    start = len(t.stdout_lines())
    t.write("state\n")
    i = t.wait_line(lambda l: l.startswith("state "), start=start)
    line = t.stdout_lines()[i]
    assert line.endswith(" True"), line


def test_a_line_probe_in_a_module_level_loop(interp, target_factory):
    t = target_factory("probes_target.py", interp, mode="launch")
    added = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:%d" % MAIN, "--capture", "step, total",
                              "--when", "step % 2 == 0", "--limit", "5", "--json"))
    assert (added["event"], added["line"], added["function"], added["state"]) == ("line", MAIN, "<module>", "active")
    assert wait_until(lambda: probes(t.pid)[added["id"]]["state"] == "done: 5 hits"), probes(t.pid)
    rows = hits(t.pid, added["id"])
    assert len(rows) == 5, rows
    steps = [int(r["captured"]["step"]) for r in rows]
    assert all(s % 2 == 0 for s in steps) and steps == sorted(steps), steps
    assert {(r["thread"], r["line"], r["function"], r["event"], r["error"]) for r in rows} == {
        ("MainThread", MAIN, "<module>", "line", None)}
    assert_unchanged(t)


def test_call_and_return_in_a_thread_with_errors_recorded(interp, target_factory):
    t = target_factory("probes_target.py", interp, mode="launch")
    call = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:Attention.forward", "--capture",
                             "q, mask, no_such_name", "--when", "mask is not None", "--limit", "3", "--json"))
    ret = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:forward:return", "--capture", "len(q)",
                            "--limit", "4", "--json"))
    assert (call["event"], ret["event"]) == ("call", "return")
    assert call["line"] == ret["line"] == marker_line("probes_target.py", "PROBE_FORWARD_BODY") - 1
    assert wait_until(lambda: all(p["state"].startswith("done") for p in probes(t.pid).values())), probes(t.pid)
    rows = hits(t.pid, call["id"])
    assert len(rows) == 3 and {r["thread"] for r in rows} == {"helper-1"}, rows  # only it passes a mask
    for r in rows:
        assert r["captured"]["q"] == "[%s]" % r["captured"]["mask"], r
        assert r["captured"]["no_such_name"] is None
        assert r["error"] == "no_such_name: NameError: name 'no_such_name' is not defined", r
    assert probes(t.pid)[call["id"]]["errors"] == 3
    # A child forked while a probe is active runs the probed code as without it, and records
    # nothing; the parent's probe goes on.
    live = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:forward", "--json"))
    start = len(t.stdout_lines())
    t.write("fork\n")
    i = t.wait_line(lambda l: l.startswith("forked "), start=start)
    assert t.stdout_lines()[i] == "forked 0"
    assert probes(t.pid)[live["id"]]["state"] == "active"
    cli_ok(t.pid, "probe", "remove", str(live["id"]))
    rows = hits(t.pid, ret["id"])
    assert len(rows) == 4 and {r["event"] for r in rows} == {"return"}, rows
    for r in rows:  # forward returns sum(2 * x): q's length says which caller
        assert r["captured"]["len(q)"] in ("1", "2") and int(r["captured"]["return"]) % 2 == 0, r
        assert r["line"] == marker_line("probes_target.py", "PROBE_FORWARD_BODY") + 1
    assert_unchanged(t)


def test_expiry_cost_and_removal_put_everything_back(interp, target_factory):
    t = target_factory("probes_target.py", interp, mode="launch")
    p = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:%d" % MAIN, "--expire", "0.5", "--json"))
    assert wait_until(lambda: probes(t.pid)[p["id"]]["state"] == "expired"), probes(t.pid)
    n = probes(t.pid)[p["id"]]["hits"]
    assert n > 10, n  # about 2 ms a step for 0.5 s
    time.sleep(0.3)
    assert len(hits(t.pid, p["id"])) == n  # nothing after it expired
    # A probe whose hits cost more than probes.max_overhead of the time ends itself.
    cli_ok(t.pid, "config", "probes.max_overhead=0.01")
    slow = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:%d" % MAIN, "--capture",
                             "sum(range(300000))", "--json"))
    assert wait_until(lambda: probes(t.pid)[slow["id"]]["state"].startswith("disabled: its hits took")), \
        probes(t.pid)
    assert "probes.max_overhead 0.01" in probes(t.pid)[slow["id"]]["state"]
    live = json.loads(cli_ok(t.pid, "probe", "add", "probes_target.py:forward", "--json"))
    out = cli_ok(t.pid, "probe", "remove", "all")
    assert out.count("removed probe") == 3, out
    assert probes(t.pid) == {}
    # Nothing of the probes is left in the program: no sys.monitoring tool, no trace hook.
    check = ("import sys, threading\n"
             "print(sys.monitoring.get_tool(4) if hasattr(sys, 'monitoring') else None, threading._trace_hook)")
    assert cli_ok(t.pid, "eval", check).strip() == "None None"
    count = len(hits(t.pid, live["id"]))
    time.sleep(0.3)
    assert len(hits(t.pid, live["id"])) == count  # removed: no more hits
    assert_unchanged(t)


def test_bad_places_and_expressions_say_what_is_wrong(interp, target_factory):
    t = target_factory("probes_target.py", interp, mode="launch")
    cases = [
        (["probes_target.py:%d" % NO_CODE], "line %d of " % NO_CODE),
        (["no_such_file.py:3"], "no running frame or loaded module of the program comes from no_such_file.py"),
        (["probes_target.py:Nope.forward"], "no function Nope.forward in "),
        (["probes_target.py:%d" % MAIN, "--capture", "a b"], "--capture is not a list of Python expressions"),
        (["probes_target.py:%d" % MAIN, "--when", "step =="], "--when is not a Python expression"),
        (["nocolon"], "a probe goes at FILE:LINE"),
    ]
    for args, message in cases:
        rc, out, err = run_cli(t.pid, "probe", "add", *args)
        assert rc == 1 and message in err, (args, rc, out, err)
    rc, out, err = run_cli(t.pid, "probe", "add", "probes_target.py:%d" % NO_CODE)
    assert "lines with code near it:" in err, err
    rc, out, err = run_cli(t.pid, "probe", "remove", "7")
    assert rc == 1 and "no probe 7" in err, err
    rc, out, err = run_cli("--read-only", t.pid, "probe", "add", "probes_target.py:%d" % MAIN)
    assert rc == 1 and "needs the full right" in err, err
    assert probes(t.pid) == {}
    assert_unchanged(t)


def test_a_watch_records_each_change_with_the_line_that_made_it(interp, target_factory):
    t = target_factory("watched.py", interp, mode="launch")
    decay, reset = marker_line("watched.py", "WATCH_DECAY"), marker_line("watched.py", "WATCH_RESET")
    history, batch = marker_line("watched.py", "WATCH_HISTORY"), marker_line("watched.py", "WATCH_BATCH")
    # By default, in the function of the main script the main thread runs: train().
    lr = json.loads(cli_ok(t.pid, "watch", "trainer.lr", "--limit", "6", "--json"))
    assert (lr["event"], lr["function"], lr["watch"]) == ("watch", "train", "trainer.lr"), lr
    grown = json.loads(cli_ok(t.pid, "watch", "trainer.history", "--in", "watched.py:train", "--limit", "2",
                              "--json"))
    same = json.loads(cli_ok(t.pid, "watch", "trainer.batch", "--in", "watched.py:train", "--limit", "2",
                             "--json"))
    assert wait_until(lambda: all(probes(t.pid)[p["id"]]["state"].startswith("done") for p in (lr, grown, same)),
                      timeout=20), probes(t.pid)
    changes = hits(t.pid, lr["id"])
    assert len(changes) == 6 and {c["line"] for c in changes} == {decay, reset}, changes
    for c in changes:
        new, was = float(c["captured"]["trainer.lr"]), float(c["captured"]["was"])
        assert (c["event"], c["function"], c["captured"]["change"]) == ("watch", "train", "value"), c
        assert new == (1.0 if c["line"] == reset else was * 0.5), c
    for a, b in zip(changes, changes[1:]):  # one change after the other, none missed
        assert b["captured"]["was"] == a["captured"]["trainer.lr"], (a, b)
    # Grown in place: its brief repr is cut, its length is not.
    rows = hits(t.pid, grown["id"])
    assert [r["line"] for r in rows] == [history, history], rows
    assert [r["captured"]["len"] - r["captured"]["was_len"] for r in rows] == [1, 1], rows
    # An equal new list: a change of identity.
    rows = hits(t.pid, same["id"])
    assert [(r["line"], r["captured"]["change"]) for r in rows] == [(batch, "identity")] * 2, rows


def test_a_tensor_watch_records_the_optimizers_updates(interp, target_factory):
    if not torch_importable(interp):
        pytest.skip("torch is not importable in %s" % interp.path)
    t = target_factory("tensor_watched.py", interp, mode="launch", ready_timeout=90)
    step, nan, new = (marker_line("tensor_watched.py", m) for m in ("TENSOR_STEP", "TENSOR_NAN", "TENSOR_NEW"))
    w = json.loads(cli_ok(t.pid, "watch-tensor", "model.weight", "--limit", "3", "--json"))
    assert (w["event"], w["function"], w["watch"], w["tensor"]) == ("watch", "train", "model.weight", True), w
    b = json.loads(cli_ok(t.pid, "watch-tensor", "buf", "--in", "tensor_watched.py:train", "--limit", "2", "--json"))
    assert wait_until(lambda: all(probes(t.pid)[i]["state"].startswith("done") for i in (w["id"], b["id"])), 30), \
        probes(t.pid)
    # The optimizer's step: in place, once a step, each row's before the row before's after.
    rows = hits(t.pid, w["id"])
    assert len(rows) == 3, rows
    for r in rows:
        c = r["captured"]
        assert (r["line"], c["change"], c["op"], c["updates"]) == (step, "in-place", "opt.step()", 1), r
        assert (c["model.weight"]["shape"], c["model.weight"]["dtype"], c["model.weight"]["nan"]) == \
            ([2, 4], "float32", 0), r
        assert c["model.weight"]["norm"] != c["was"]["norm"], r
    assert [r["captured"]["was"] for r in rows[1:]] == [r["captured"]["model.weight"] for r in rows[:2]], rows
    # buf: filled with nan in place, then replaced by a new tensor.
    rows = {r["line"]: r["captured"] for r in hits(t.pid, b["id"])}
    assert set(rows) == {nan, new}, rows
    assert (rows[nan]["change"], rows[nan]["op"], rows[nan]["buf"]["nan"], rows[nan]["buf"]["norm"],
            rows[nan]["was"]["nan"]) == ("in-place", 'buf.fill_(float("nan"))', 3, "nan", 0), rows
    assert (rows[new]["change"], rows[new]["op"], rows[new]["buf"]["nan"], rows[new]["was"]["nan"]) == \
        ("identity", "torch.zeros(3)", 0, 3), rows
    assert "updates" not in rows[new], rows


def test_a_watch_says_what_is_wrong(interp, target_factory):
    t = target_factory("watched.py", interp, mode="launch")
    rc, out, err = run_cli(t.pid, "watch", "trainer.lr", "--in", "watched.py:%d" % marker_line("watched.py",
                                                                                               "WATCH_DECAY"))
    assert rc == 1 and "a watch looks in a function" in err, (rc, out, err)
    rc, out, err = run_cli(t.pid, "watch", "trainer.lr +")
    assert rc == 1 and "not a Python expression" in err, (rc, out, err)
    assert probes(t.pid) == {}
