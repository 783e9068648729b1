"""`probing PID memory`: the summary; and in leaky.py started with PYTHONTRACEMALLOC=1, `memory
snapshot` then `memory diff` finding the line that leaks, on every interpreter. tracemalloc is never
started or stopped in a running process (that can crash it): `memory track` says so."""
import json
import os
import time

from conftest import eval_ok, run_cli

LEAKY = os.path.join(os.path.dirname(__file__), "targets", "leaky.py")
LEAK_LINE = next(i for i, line in enumerate(open(LEAKY), 1) if "LEAK_LINE" in line)
TRACED = {"PYTHONTRACEMALLOC": "1"}


def growth(pid):
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
    assert "allocated blocks" in out and "traced    no (a process started with PYTHONTRACEMALLOC=1" in out
    assert "objects by type (python.objects):" in out and "function" in out
    # Without tracemalloc, what grows cannot be told, and the agent does not start it.
    for args in (["memory", "diff"], ["memory", "snapshot"]):
        rc, _, err = run_cli(t.pid, *args)
        assert rc == 1 and "PYTHONTRACEMALLOC=1" in err, (args, err)
    rc, _, err = run_cli(t.pid, "memory", "track", "start")
    assert rc == 1 and "crash" in err and "PYTHONTRACEMALLOC=1" in err, err
    rc, out, _ = run_cli(t.pid, "query", "SELECT tracing FROM python.memory")
    assert rc == 0 and out.splitlines()[2].strip() == "0", out


def test_diff_finds_the_leaking_line(interp, target_factory):
    t = target_factory("leaky.py", interp, env=TRACED)
    rc, out, err = run_cli(t.pid, "memory")
    assert rc == 0 and "traced    " in out and "frame(s) per allocation" in out, (out, err)
    rows = growth(t.pid)  # before any snapshot: all that is alive, from nothing
    assert rows and rows[0]["size_diff_kb"] > 0, rows
    rc, out, err = run_cli(t.pid, "memory", "snapshot")
    assert rc == 0 and out.startswith("new base:"), (out, err)
    time.sleep(1.5)
    rows = growth(t.pid)
    top = rows[0]
    assert top["file"].endswith("leaky.py") and top["lineno"] == LEAK_LINE, rows
    assert top["count_diff"] >= 50 and top["size_diff_kb"] > 10, rows  # ~150 lists of 100 floats
    rc, out, err = run_cli(t.pid, "memory", "diff", "--limit", "3")
    assert rc == 0 and "leaky.py" in out and "(3 rows)" in out, (out, err)


def test_snapshot_needs_the_full_right(interp, target_factory):
    t = target_factory("leaky.py", interp, env=TRACED)
    rc, _, err = run_cli("--read-only", t.pid, "memory", "snapshot")
    assert rc == 1 and "read right only" in err, err
    rc, out, err = run_cli("--read-only", t.pid, "memory", "diff")  # reading is reading
    assert rc == 0, err


def test_cuda_history_refusals(interp, target_factory):
    t = target_factory("leaky.py", interp)
    rc, _, err = run_cli(t.pid, "memory", "cuda-history", "start")
    assert rc == 1 and "has not imported torch" in err, err
    rc, _, err = run_cli(t.pid, "memory", "cuda-history", "begin")
    assert rc == 2 and "begin" in err, err


def test_cuda_history_start_stop_dump(interp, target_factory, tmp_path):
    # No GPU here: a process whose torch, torch.cuda and torch.cuda.memory are stand-ins checks
    # what the agent asks of PyTorch's API and that the dump is the snapshot, pickled.
    t = target_factory("fake_cuda.py", interp, env={"PROBING_TORCH": "0"})
    rc, out, err = run_cli(t.pid, "memory", "cuda-history", "start", "--max-entries", "5000")
    assert rc == 0 and "recording CUDA allocations" in out, err
    rc, _, err = run_cli(t.pid, "--read-only", "memory", "cuda-history", "stop")
    assert rc == 1, err  # the full right
    out_file = tmp_path / "oom.pickle"
    rc, out, err = run_cli(t.pid, "memory", "cuda-history", "dump", "-o", str(out_file))
    assert rc == 0 and "2 events, 1 segments" in out and "memory_viz" in out, (out, err)
    import pickle
    with open(out_file, "rb") as f:
        snapshot = pickle.load(f)
    assert snapshot["segments"][0]["total_size"] == 2 << 20 and len(snapshot["device_traces"][0]) == 2
    rc, _, err = run_cli(t.pid, "memory", "cuda-history", "dump", "-o", str(out_file))
    assert rc == 1 and "exists" in err, err  # never overwrites
    rc, out, err = run_cli(t.pid, "memory", "cuda-history", "stop")
    assert rc == 0 and "stopped" in out, err
    assert eval_ok(t.pid, "calls").strip() == (
        "[('record', 'all', 5000), ('snapshot',), ('record', None, 1)]"), "the agent's calls"
