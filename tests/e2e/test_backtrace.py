"""`probing PID backtrace` on real processes: known stacks and locals, named threads, a thread
that holds the GIL (the GIL-free reader), a blocked queue, deep recursion, --json, and locals
taken back to back from a main thread that churns through frames."""
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import (PROBING, TARGETS, Target, clean_env, http_request, interpreter_params, marker_line,
                      run_cli)


def backtrace_json(pid, *flags, timeout=15):
    rc, out, err = run_cli(pid, "backtrace", "--json", *flags, timeout=timeout)
    assert rc == 0, (rc, out, err)
    return json.loads(out)


def wait_for_stack(pid, predicate, *flags, timeout=10.0):
    """Backtraces until the answer satisfies predicate: the target announces 'ready' one
    statement before it blocks, so its innermost frame may still be on that statement."""
    deadline = time.monotonic() + timeout
    while True:
        j = backtrace_json(pid, *flags)
        if predicate(j) or time.monotonic() > deadline:
            return j


def main_thread(j):
    mains = [t for t in j["threads"] if t["is_main"]]
    assert len(mains) == 1, j
    return mains[0]


PARAMS = interpreter_params()


@pytest.mark.parametrize("py", PARAMS)
def test_nested_calls_and_locals(py):
    inner = marker_line("bt_nested.py", "BT_INNER_LINE")
    with Target("bt_nested.py", py, mode="launch") as t:
        j = wait_for_stack(t.pid, lambda j: main_thread(j)["frames"][0]["lineno"] == inner, "--locals")
        assert j["gil_free"] is False
        assert len(j["threads"]) == 1  # the main thread only, by default
        frames = main_thread(j)["frames"]
        script = os.path.join(TARGETS, "bt_nested.py")
        got = [(f["depth"], f["func"], f["file"], f["lineno"], f["frame_type"]) for f in frames]
        assert got == [
            (0, "inner", script, inner, "Python"),
            (1, "middle", script, marker_line("bt_nested.py", "BT_MIDDLE_LINE"), "Python"),
            (2, "outer", script, marker_line("bt_nested.py", "BT_OUTER_LINE"), "Python"),
            (3, "<module>", script, marker_line("bt_nested.py", "BT_MODULE_LINE"), "Python"),
        ], got
        assert frames[0]["source"] == "sys.stdin.readline()  # BT_INNER_LINE"
        # As inner() declares them, arguments first and marked.
        assert [(x["name"], x["kind"]) for x in frames[0]["locals"]] == [
            ("count", "argument"), ("label", "argument"), ("text", "local"), ("broken", "local"),
            ("numbers", "local")], frames[0]["locals"]
        loc = {x["name"]: x["value"] for x in frames[0]["locals"]}
        assert loc["count"] == "42"
        assert loc["label"] == "'hello'"
        assert loc["numbers"] == "[1, 2, 3]"
        assert loc["broken"] == "<__main__.Broken object; repr failed: RuntimeError>"
        assert len(loc["text"]) == 200 and "..." in loc["text"] and loc["text"].startswith("'xxx")
        assert frames[1]["locals"] == [{"name": "n", "value": "21", "kind": "argument"},
                                       {"name": "factor", "value": "42", "kind": "local"}]
        assert "locals" not in backtrace_json(t.pid)["threads"][0]["frames"][0]

        # The text form: header, one line per frame, the source under it, locals further in.
        rc, out, err = run_cli(t.pid, "backtrace", "--locals")
        assert rc == 0, (rc, out, err)
        lines = out.splitlines()
        assert lines[0] == 'Thread %d "MainThread" (tid %d)' % (main_thread(j)["thread_id"], t.proc.pid) or \
            lines[0].startswith('Thread %d "MainThread"' % main_thread(j)["thread_id"]), lines[0]
        assert lines[1] == "  inner (%s:%d)" % (script, inner)
        assert lines[2] == "      sys.stdin.readline()  # BT_INNER_LINE"
        at = lines.index("          count = 42   (argument)")
        assert lines[at:at + 5:4] == ["          count = 42   (argument)", "          numbers = [1, 2, 3]"], lines
        # The SQL column: an object in the same order.
        rc, out, err = run_cli(t.pid, "query", "SELECT locals FROM python.backtrace WHERE func = 'middle'",
                               "--format", "json")
        assert rc == 0 and json.loads(out)[0]["locals"] == '{"n": "21", "factor": "42"}', (out, err)
        assert "  middle (%s:%d)" % (script, marker_line("bt_nested.py", "BT_MIDDLE_LINE")) in lines


@pytest.mark.parametrize("py", PARAMS)
def test_locals_in_declaration_order(py):
    """Arguments first and marked, then the locals as declared (local10 after local9, not after
    local1), a cell variable last: in --json and in text."""
    expected = ["alpha", "beta", "gamma"] + ["local%d" % i for i in range(1, 30)] + ["closure", "local30"]
    with Target("many_locals.py", py, mode="launch") as t:
        frame = backtrace_json(t.pid, "--locals")["threads"][0]["frames"][0]
        assert frame["func"] == "work", frame
        names = [x["name"] for x in frame["locals"]]
        kinds = {x["name"]: x["kind"] for x in frame["locals"]}
        # CPython lists cell variables where it keeps them: after the plain locals before 3.13's
        # layout puts them among them; the order of everything else is the declaration's.
        assert [n for n in names if n != "local30"] == [n for n in expected if n != "local30"], names
        assert sorted(names) == sorted(expected), names
        assert [kinds[n] for n in ("alpha", "beta", "gamma")] == ["argument"] * 3, kinds
        assert kinds["local30"] == "cell" and kinds["local9"] == "local", kinds
        rc, out, err = run_cli(t.pid, "backtrace", "--locals")
        assert rc == 0, err
        first_frame = out.split("\n  <module> (")[0]
        printed = [line.split(" = ")[0].strip() for line in first_frame.splitlines() if line.startswith("          ")]
        assert printed == names, out
        assert "          gamma = 3   (argument)" in out.splitlines(), out


@pytest.mark.parametrize("py", PARAMS)
def test_all_threads_named(py):
    with Target("bt_nested.py", py, mode="launch") as t:
        j = backtrace_json(t.pid, "--all")
        by_name = {th["name"]: th for th in j["threads"]}
        assert {"MainThread", "worker-0", "worker-1", "worker-2"} <= set(by_name), sorted(by_name)
        assert by_name["worker-0"]["daemon"] is False and by_name["worker-1"]["daemon"] is True
        assert by_name["MainThread"]["native_thread_id"] == t.proc.pid or by_name["MainThread"]["is_main"]
        for i in range(3):
            w = by_name["worker-%d" % i]
            assert [f["func"] for f in w["frames"]][:2] == ["Condition.wait", "Event.wait"]
            assert w["state"] == "sleeping in futex", w  # what the kernel says it does
        # The main thread reads stdin (once it is past printing 'ready').
        deadline = time.monotonic() + 10
        while by_name["MainThread"]["state"] != "sleeping in read" and time.monotonic() < deadline:
            by_name = {th["name"]: th for th in backtrace_json(t.pid, "--all")["threads"]}
        assert by_name["MainThread"]["state"] == "sleeping in read", by_name["MainThread"]
        # one thread by its kernel tid
        tid = by_name["worker-2"]["native_thread_id"]
        one = backtrace_json(t.pid, "--thread", tid)
        assert [th["name"] for th in one["threads"]] == ["worker-2"]
        rc, out, err = run_cli(t.pid, "backtrace", "--all")
        assert rc == 0 and 'Thread %d "worker-1" (tid %d, sleeping in futex, daemon)' % (
            by_name["worker-1"]["thread_id"], by_name["worker-1"]["native_thread_id"]) in out, out
        rc, out, err = run_cli(t.pid, "backtrace", "--thread", "999999999")
        assert rc == 1 and "no Python thread 999999999" in err, (rc, out, err)


@pytest.mark.parametrize("py", PARAMS)
def test_a_repr_that_runs_on_is_interrupted(py):
    """A local's __repr__ that runs Python for a minute: the capture interrupts it at
    backtrace.run_timeout_s (2 s), shows it as interrupted, and answers with the GIL; the target
    goes on, and the next capture is as quick as ever."""
    with Target("bt_slow_repr.py", py, mode="launch") as t:
        start = time.monotonic()
        j = backtrace_json(t.pid, "--locals", timeout=30)
        elapsed = time.monotonic() - start
        assert j["gil_free"] is False, j
        assert 1.5 < elapsed < 5, elapsed
        frames = main_thread(j)["frames"]
        assert (frames[0]["func"], frames[0]["lineno"]) == ("wait", marker_line("bt_slow_repr.py", "BT_SLOW_WAIT_LINE"))
        assert {x["name"]: x["value"] for x in frames[0]["locals"]}["slow"] == "<repr interrupted: took too long>"
        t.write("one\n")
        t.wait_line("echo one")
        start = time.monotonic()
        assert backtrace_json(t.pid)["gil_free"] is False
        assert time.monotonic() - start < 1.5


@pytest.mark.parametrize("py", PARAMS)
def test_gil_held_answers_without_the_gil(py):
    script = os.path.join(TARGETS, "bt_gil.py")
    with Target("bt_gil.py", py, mode="launch", args=["60"]) as t:
        backtrace_json(t.pid, "--all")  # a live backtrace first: it records the thread names
        t.write("hold\n")
        t.wait_line("holding")
        # 'holding' is printed just before the call that keeps the GIL: wait until it is held.
        deadline = time.monotonic() + 10
        while True:
            start = time.monotonic()
            j = backtrace_json(t.pid, "--all")
            elapsed = time.monotonic() - start
            if j["gil_free"] or time.monotonic() > deadline:
                break
        assert j["gil_free"] is True, j
        assert elapsed < 2.0, elapsed
        # The agent's own answer: the GIL-free read after backtrace.gil_timeout_s (40 ms), not 0.5 s.
        times = []
        for _ in range(5):
            start = time.monotonic()
            r = http_request(t.pid, "GET", "/backtrace?all=1")
            times.append(time.monotonic() - start)
            assert r.status == 200 and r.json()["gil_free"] is True
        assert sorted(times)[2] < 0.2, times
        assert j["gil_holder"]["name"] == "gil-holder", j["gil_holder"]
        holder = [th for th in j["threads"] if th["holds_gil"]]
        assert len(holder) == 1 and holder[0]["name"] == "gil-holder"
        assert (holder[0]["frames"][0]["func"], holder[0]["frames"][0]["lineno"]) == \
            ("hold", marker_line("bt_gil.py", "BT_HOLD_LINE"))
        main = main_thread(j)
        assert [(f["func"], f["file"]) for f in main["frames"]] == [
            ("wait_for_line", script), ("main_loop", script), ("<module>", script)]
        assert main["frames"][0]["lineno"] == marker_line("bt_gil.py", "BT_WAIT_LINE")
        assert main["frames"][1]["source"] == "line = wait_for_line()"
        assert main["frames"][2]["source"] == "main_loop()"
        assert main["frames"][0]["source"] == "return sys.stdin.readline()  # BT_WAIT_LINE"
        # text form says so; --locals is refused gracefully with a note
        start = time.monotonic()
        rc, out, err = run_cli(t.pid, "backtrace", "--locals")
        assert time.monotonic() - start < 2.0
        assert rc == 0, (rc, out, err)
        assert out.splitlines()[0].startswith("(read without the GIL; thread %d \"gil-holder\" holds it)"
                                              % j["gil_holder"]["thread_id"]), out
        assert "locals cannot be shown without the GIL" in err
        # asyncio's tasks need the GIL too: the stacks come, with a note, and no second wait for it.
        start = time.monotonic()
        rc, out, err = run_cli(t.pid, "backtrace", "--tasks")
        assert time.monotonic() - start < 2.0
        assert rc == 0 and out.startswith("(read without the GIL;") and '"gil-holder" holds it' in out, (out, err)
        assert "the asyncio tasks need the GIL" in err, err
        assert [l for l in out.splitlines() if l.startswith("Thread ")][0].find('"MainThread"') > 0, out
        assert len([l for l in out.splitlines() if l.startswith("Thread ")]) == 1, out  # as asked: the main one
        # eval's GIL timeout names the holder
        rc, out, err = run_cli(t.pid, "eval", "--timeout", "1", "1+1")
        assert rc == 1 and '"gil-holder"' in err and "holds it" in err, (rc, out, err)
        assert t.alive()


@pytest.mark.parametrize("py", PARAMS)
def test_blocked_on_queue_get(py):
    with Target("bt_queue.py", py, mode="launch") as t:
        j = wait_for_stack(t.pid, lambda j: main_thread(j)["frames"][0]["func"] == "Condition.wait")
        frames = main_thread(j)["frames"]
        assert (frames[0]["func"], os.path.basename(frames[0]["file"])) == ("Condition.wait", "threading.py")
        assert (frames[1]["func"], os.path.basename(frames[1]["file"])) == ("Queue.get", "queue.py")
        assert (frames[2]["func"], frames[2]["lineno"]) == ("consumer", marker_line("bt_queue.py", "BT_GET_LINE"))
        assert frames[3]["func"] == "<module>" and len(frames) == 4


@pytest.mark.parametrize("py", PARAMS)
def test_deep_recursion_is_capped(py):
    bottom = marker_line("bt_deep.py", "BT_BOTTOM_LINE")
    with Target("bt_deep.py", py, mode="launch", args=["5000"]) as t:
        j = wait_for_stack(t.pid, lambda j: main_thread(j)["frames"][0]["lineno"] == bottom)
        main = main_thread(j)
        assert len(main["frames"]) == 4096 and main["truncated"] is True
        assert "deeper than 4096 frames" in main["note"]
        assert main["frames"][0]["func"] == "recurse" and main["frames"][4095]["func"] == "recurse"
        assert [f["depth"] for f in main["frames"][:3]] == [0, 1, 2]
        rc, out, err = run_cli(t.pid, "backtrace")
        assert rc == 0 and "deeper than 4096 frames" in out.splitlines()[-1], out[-300:]


@pytest.mark.parametrize("py", PARAMS)
def test_json_matches_text(py):
    with Target("bt_nested.py", py, mode="launch") as t:
        j = backtrace_json(t.pid, "--all")
        rc, out, err = run_cli(t.pid, "backtrace", "--all")
        assert rc == 0
        for th in j["threads"]:
            assert ('Thread %d "%s"' % (th["thread_id"], th["name"])) in out
            for f in th["frames"]:
                assert "  %s (%s:%d)" % (f["func"], f["file"], f["lineno"]) in out
        assert set(j) >= {"threads", "gil_free", "gil_holder", "notes", "python"}


CHURN_SECONDS = 12


@pytest.mark.parametrize("py", PARAMS)
def test_locals_while_the_main_thread_churns(py):
    """Two clients take every thread's stack with locals, back to back, while the main thread
    calls and returns from frames of every size, waits in C calls without the GIL and leaves
    garbage with finalizers that let the GIL go for the collections to find. On 3.11 a collection
    run by the capture itself let the main thread return from a frame whose object was being made
    (collection.h): the target crashed within seconds. It must run to its end, print nothing on
    stderr (no finalizer of its own is stopped halfway on the agent's thread) and exit 0."""
    t = Target("frame_churn.py", py, args=[CHURN_SECONDS, 50])
    with t:
        answered = []
        failures = []

        def client():
            while t.alive():
                p = subprocess.run([PROBING, str(t.pid), "backtrace", "--all", "--locals"], capture_output=True,
                                   text=True, timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
                if p.returncode == 0:
                    answered.append(1)
                elif p.returncode < 0:
                    failures.append("the client died of signal %d: %s" % (-p.returncode, p.stderr[-300:]))

        clients = [threading.Thread(target=client) for _ in range(2)]
        for c in clients:
            c.start()
        rc = t.wait_exit(CHURN_SECONDS + 60)
        for c in clients:
            c.join(90)
        assert rc == 0, (rc, t.stderr_lines()[-30:])
        assert t.stdout_lines()[-1].startswith("done "), t.stdout_lines()[-5:]
        assert t.stderr_lines() == []
        assert not failures, failures
        assert len(answered) >= 10, len(answered)


@pytest.mark.parametrize("py", PARAMS)
def test_locals_of_a_generator_closed_during_the_capture(py):
    """The main thread is inside a generator, in a function whose source file no capture has
    read yet; reading that file lets the GIL go, the thread returns, and the generator is closed
    and freed while the capture holds its frame. Every frame's locals are read before that
    (frames.cpp's _snapshot): on CPython 3.13.0-3.13.5 a read after it met freed locals
    (gh-125723) and crashed the target. Each stack that shows the generator shows its local as
    it was; the target runs to its end."""
    with Target("generator_close.py", py, args=[12]) as t:
        seen = 0
        while t.alive() and seen < 40:
            rc, out, err = run_cli(t.pid, "backtrace", "--json", "--locals", timeout=30)
            if rc != 0:
                continue  # the target ended (its exit status is checked below)
            j = json.loads(out)
            if j["gil_free"]:
                continue  # the GIL was held past backtrace.gil_timeout_s (a loaded machine): no locals
            for f in main_thread(j)["frames"]:
                if f["func"] == "generator":
                    values = {x["name"]: x["value"] for x in f["locals"]}
                    assert values["payload"] == "['payload', 1, 2.5]", f
                    assert values["module"].startswith("<module 'generated_"), f
                    seen += 1
        assert t.wait_exit(60) == 0, t.stderr_lines()[-30:]
        assert t.stdout_lines()[-1].startswith("done "), t.stdout_lines()[-5:]
        assert seen >= 10, seen


@pytest.mark.parametrize("py", PARAMS)
def test_reading_locals_keeps_nothing_alive(py):
    """A stack read with locals leaves no reference on the frames it read: a local the program
    lets go of afterwards is freed at once, as if the stack had never been read. A locals() dict of
    the program's own is refreshed (as any read of f_locals does) and left to it."""
    for mode, expected in (("plain", ["freed"]), ("mine", None)):
        with Target("bt_locals_dropped.py", py, mode="launch", args=[mode]) as t:
            j = wait_for_stack(t.pid, lambda j: main_thread(j)["frames"][0]["func"] == "work", "--locals")
            work = main_thread(j)["frames"][0]
            shown = {l["name"]: l["value"] for l in work["locals"]}
            assert shown["obj"].startswith("<__main__.Big object at "), shown
            t.write("\n")
            i = t.wait_line(lambda l: l in ("freed", "kept alive"))
            if mode == "plain":
                assert t.stdout_lines()[i:i + 1] == expected, t.stdout_lines()
            else:
                # The program's own dict holds obj (that is Python's rule); what matters is that it
                # still has every name, and the program goes on.
                t.wait_line(lambda l: l.startswith("mine:"), start=i)
                assert t.stdout_lines()[-1] == "mine: mode obj ref", t.stdout_lines()
            assert t.wait_exit(10) == 0
