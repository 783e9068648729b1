"""`probing PID memory`: the summary, and tracemalloc on demand (track start, diff, snapshot, track
stop) finding the line that leaks in leaky.py, on every interpreter."""
import json
import os
import time

from conftest import run_cli

LEAKY = os.path.join(os.path.dirname(__file__), "targets", "leaky.py")
LEAK_LINE = next(i for i, line in enumerate(open(LEAKY), 1) if "LEAK_LINE" in line)


def diff_rows(pid):
    rc, out, err = run_cli(pid, "query", "--format", "json",
                           "SELECT file, lineno, size_diff_kb, count_diff FROM python.memory_growth "
                           "ORDER BY size_diff_kb DESC LIMIT 5", timeout=60)
    assert rc == 0, err
    return json.loads(out)


def test_memory_summary(interp, target_factory):
    t = target_factory("leaky.py", interp)
    rc, out, err = run_cli(t.pid, "memory")
    assert rc == 0, err
    assert out.startswith("process   RSS "), out
    assert "allocated blocks" in out and "tracked   no" in out
    assert "objects by type (python.objects):" in out and "function" in out


def test_track_finds_the_leaking_line(interp, target_factory):
    t = target_factory("leaky.py", interp)
    rc, out, err = run_cli(t.pid, "memory", "track", "start")
    assert rc == 0 and "memory is tracked" in out, err
    time.sleep(1.5)
    rows = diff_rows(t.pid)
    top = rows[0]
    assert top["file"].endswith("leaky.py") and top["lineno"] == LEAK_LINE, rows
    assert top["count_diff"] >= 50 and top["size_diff_kb"] > 10, rows  # ~150 lists of 100 floats
    rc, out, err = run_cli(t.pid, "memory", "diff", "--limit", "3")
    assert rc == 0 and "leaky.py" in out, (out, err)
    rc, out, _ = run_cli(t.pid, "memory")
    assert "traced" in out and "memory diff" in out
    # A new base: what grew since it is what the last moments leaked, less than since the start.
    before = top["count_diff"]
    rc, out, err = run_cli(t.pid, "memory", "snapshot")
    assert rc == 0 and out.startswith("new base:"), (out, err)
    rows = diff_rows(t.pid)
    leak = [r for r in rows if r["lineno"] == LEAK_LINE and r["file"].endswith("leaky.py")]
    assert not leak or leak[0]["count_diff"] < before, (rows, before)
    rc, out, err = run_cli(t.pid, "memory", "track", "stop")
    assert rc == 0 and "not tracked" in out, err
    rc, _, err = run_cli(t.pid, "memory", "diff")
    assert rc == 1 and "memory track start" in err, err


def test_tracking_needs_the_full_right(interp, target_factory):
    t = target_factory("leaky.py", interp)
    rc, _, err = run_cli("--read-only", t.pid, "memory", "track", "start")
    assert rc == 1 and "read right only" in err, err
    rc, out, _ = run_cli(t.pid, "query", "SELECT tracing FROM python.memory")
    assert rc == 0 and "0" in out.splitlines()[2], out  # nothing started
    rc, _, err = run_cli(t.pid, "memory", "track", "start", "--frames", "0")
    assert rc == 2, err  # refused by the CLI before the agent
