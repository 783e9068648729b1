"""PyTorch tracing on real training loops (Debian's python3-torch, CPU): python.torch_trace rows
with the right modules, stages and steps for an MLP and a small transformer; tracing switched
off (every hook gone, every wrapper put back) and on again; inject into a process that imported
torch long before; PROBING_TORCH=0; sampling; a loop with no optimizer; spans nested three
deep."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import PYPKG, eval_ok, run_cli, torch_interpreter_params

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module", params=torch_interpreter_params())
def torch_py(request):
    """Each interpreter torch imports in (Debian's python3-torch: 3.11 here, more in the matrix)."""
    return request.param


@pytest.fixture
def torch_factory(target_factory, torch_py):
    return lambda script, **kwargs: target_factory(script, torch_py, **kwargs)


def torch_has(torch_py, expression):
    """Whether `expression` (with torch, inspect and torch.nn.modules.module as m) holds there."""
    code = "import sys, inspect, torch; from torch.nn.modules import module as m; sys.exit(not (%s))" % expression
    return subprocess.run([torch_py.path, "-c", code], capture_output=True, timeout=120).returncode == 0


def rows(pid, sql):
    rc, out, err = run_cli(pid, "query", "--format", "json", sql, timeout=30)
    assert rc == 0, (sql, err)
    return json.loads(out)


def wait_rows(pid, sql, predicate, timeout=20.0):
    """Queries until predicate(rows) holds; returns the rows (the last ones on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        r = rows(pid, sql)
        if predicate(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def last_full_step(pid):
    """The rows of the newest step that is complete (the one before the last)."""
    r = wait_rows(pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 3)
    step = r[0]["s"] - 1
    return rows(pid, "SELECT step, seq, module, stage, duration, self_duration, allocated, max_allocated, time "
                     "FROM python.torch_trace WHERE step = %d ORDER BY seq" % step)


def start(torch_factory, kind, env=None, mode="preload"):
    env = dict(env or {})
    env["PYTHONPATH"] = PYPKG  # for probing.span in the target
    return torch_factory("torch_models.py", mode=mode, args=[kind], env=env, ready_timeout=60)


def test_mlp_rows(torch_factory):
    t = start(torch_factory, "mlp")
    step = last_full_step(t.pid)
    got = [(r["module"], r["stage"]) for r in step]
    assert got == [("encoder.0", "forward"), ("encoder.1", "forward"), ("encoder.2", "forward"),
                   ("encoder", "forward"), ("head", "forward"), ("MLP", "forward"),
                   ("MLP", "backward"), ("SGD", "step")], got
    assert [r["seq"] for r in step] == list(range(len(step)))
    assert all(r["duration"] > 0 for r in step), step
    # whole nanoseconds, as the store keeps them in a few bytes: each reads back from ns / 1e9
    assert rows(t.pid, "SELECT count(*) AS n FROM python.torch_trace "
                       "WHERE round(duration * 1e9) / 1e9 != duration")[0]["n"] == 0
    assert all(r["allocated"] is None and r["max_allocated"] is None for r in step)  # CPU
    assert all(abs(r["time"] - time.time()) < 60 for r in step)
    outer = {r["module"]: r["duration"] for r in step if r["stage"] == "forward"}
    assert outer["MLP"] >= outer["encoder"] >= outer["encoder.0"]  # a parent contains its children
    # self time: its duration less its traced children's; none for backward and step
    own = {r["module"]: r["self_duration"] for r in step if r["stage"] == "forward"}
    assert abs(own["MLP"] - (outer["MLP"] - outer["encoder"] - outer["head"])) < 1e-9, step
    assert abs(own["encoder"] - (outer["encoder"] - sum(outer["encoder.%d" % i] for i in range(3)))) < 1e-9
    assert own["head"] == outer["head"] and own["encoder.0"] == outer["encoder.0"]
    assert [r["self_duration"] for r in step if r["stage"] != "forward"] == [None, None], step
    # the seeds' queries on this table, as written
    slowest = rows(t.pid, """SELECT module, stage, avg(duration) as avg_time
FROM python.torch_trace
WHERE step > (SELECT max(step) - 5 FROM python.torch_trace)
GROUP BY module, stage
ORDER BY avg_time DESC
LIMIT 10;""")
    assert len(slowest) == 8 and slowest[0]["avg_time"] > 0, slowest
    assert rows(t.pid, "SELECT step, AVG(allocated) as avg_memory, MAX(allocated) as peak_memory FROM python.torch_trace "
                       "WHERE step >= (SELECT MAX(step) - 20 FROM python.torch_trace) GROUP BY step ORDER BY step")
    rows(t.pid, "SELECT step, module, SUM(allocated) as total_memory_mb, COUNT(*) as operation_count "
                "FROM python.torch_trace WHERE step > 100 GROUP BY step, module ORDER BY total_memory_mb DESC LIMIT 10")


def test_two_optimizers_and_steps_that_raise(torch_factory):
    # Each optimizer's step is a row named by its class; a step that raised (its post hook never
    # runs) leaves nothing that a later step's row would be timed from.
    t = start(torch_factory, "two_optimizers")
    got = wait_rows(t.pid, "SELECT module, duration FROM python.torch_trace WHERE stage = 'step'",
                    lambda r: sum(x["module"] == "Adam" for x in r) >= 60, timeout=60)
    sgd = [r["duration"] for r in got if r["module"] == "SGD"]
    adam = [r["duration"] for r in got if r["module"] == "Adam"]
    assert {r["module"] for r in got} == {"SGD", "Adam"} and len(adam) >= 60, got[:10]
    assert 0.55 < len(adam) / len(sgd) < 0.75, (len(adam), len(sgd))  # 2 of 3 Adam steps end
    assert all(d > 0 for d in sgd + adam)
    # an Adam step of 33 parameters is well under a ms; one timed from a step that raised would
    # span whole iterations (each sleeps 5 ms)
    assert sum(d > 0.01 for d in adam) <= len(adam) // 10, sorted(adam)[-10:]


def test_transformer_rows(torch_factory):
    t = start(torch_factory, "transformer")
    step = last_full_step(t.pid)
    modules = {(r["module"], r["stage"]) for r in step}
    for expected in [("embed", "forward"), ("layers.layers.0.self_attn", "forward"),
                     ("layers.layers.1.linear2", "forward"), ("layers", "forward"), ("Tiny", "forward"),
                     ("Tiny", "backward"), ("Adam", "step")]:
        assert expected in modules, (expected, sorted(modules))
    assert step[-1]["module"] == "Adam" and step[-1]["stage"] == "step"


def tracing_state(pid):
    """What tracing has installed: module hooks, the backward wrapper, and the optimizer's step
    tracing (2.x: the global step hooks; 1.13: the class's step wrapped, and the init hook that
    wraps classes first used later)."""
    out = eval_ok(pid, """
import torch, json
from torch.nn.modules import module as m
from torch.optim import optimizer as o
if hasattr(o, '_global_optimizer_pre_hooks'):
    optimizer_traced = len(o._global_optimizer_pre_hooks) + len(o._global_optimizer_post_hooks) == 2
else:
    _step = type(optimizer).__dict__['step']  # not `step`: that is the target's own counter
    optimizer_traced = (bool(getattr(_step, '__probing_traced__', False)) and
                        o.Optimizer.__dict__['_hook_for_profile'].__qualname__ != 'Optimizer._hook_for_profile')
print(json.dumps({
    'hooks': len(m._global_forward_pre_hooks) + len(m._global_forward_hooks),
    'backward_wrapped': 'probing.torch.timed' in repr(getattr(torch.autograd.backward, '__self__', None)),
    'optimizer_traced': optimizer_traced,
}))""")
    return json.loads(out)


def count(pid):
    return rows(pid, "SELECT count(*) AS n FROM python.torch_trace")[0]["n"]


def test_off_removes_every_hook_and_on_restores_tracing(torch_factory):
    t = start(torch_factory, "mlp")
    last_full_step(t.pid)
    assert tracing_state(t.pid) == {"hooks": 2, "backward_wrapped": True, "optimizer_traced": True}
    rc, out, err = run_cli(t.pid, "query", "SET torch.trace = off")
    assert rc == 0, err
    assert tracing_state(t.pid) == {"hooks": 0, "backward_wrapped": False, "optimizer_traced": False}
    n = count(t.pid)
    time.sleep(0.5)  # the loop runs a step every ~5 ms
    assert count(t.pid) == n
    rc, out, err = run_cli(t.pid, "config", "torch.trace=on")
    assert rc == 0, err
    assert wait_rows(t.pid, "SELECT count(*) AS n FROM python.torch_trace", lambda r: r[0]["n"] > n + 16)[0]["n"] > n + 16
    assert tracing_state(t.pid)["hooks"] == 2


MLP_NAMES = {"MLP", "encoder", "encoder.0", "encoder.1", "encoder.2", "head"}


def test_inject_into_a_process_that_imported_torch_long_before(torch_factory):
    t = start(torch_factory, "mlp", mode="none")
    time.sleep(1)  # training runs without an agent
    rc, out, err = run_cli(t.pid, "inject", timeout=60)
    assert rc == 0, (out, err)
    step = last_full_step(t.pid)
    assert [r["module"] for r in step][-3:] == ["MLP", "MLP", "SGD"], step
    # Every name is the dotted path from the first row on, also where tracing began mid-forward.
    names = {r["module"] for r in rows(t.pid, "SELECT DISTINCT module FROM python.torch_trace WHERE stage = 'forward'")}
    assert names == MLP_NAMES, names
    assert tracing_state(t.pid)["optimizer_traced"] is True  # the optimizer made before the agent came


def switched_off_and_on(pid, times, pause):
    """Switches torch.trace off and on `times` times, the i-th time i * `pause` seconds apart (at
    another point of the step each time); yields (i, the time before it switched on)."""
    for i in range(times):
        assert run_cli(pid, "config", "torch.trace=off")[0] == 0
        time.sleep(pause * i)
        since = time.time()
        assert run_cli(pid, "config", "torch.trace=on")[0] == 0
        yield i, since


def test_names_are_the_same_from_the_first_row_after_each_toggle(torch_factory):
    """Tracing switched off and on 12 times while a transformer trains, each time at another point
    of its step: every forward row after each switch carries the module's dotted path (a switch
    in the middle of a forward once named modules by their class, or from a submodule, for good)."""
    t = start(torch_factory, "transformer")
    last_full_step(t.pid)
    expected = set(json.loads(eval_ok(t.pid, "import json; print(json.dumps([n or 'Tiny' for n, _ in model.named_modules()]))")))
    for i, since in switched_off_and_on(t.pid, 12, 0.003):
        got = wait_rows(t.pid, "SELECT DISTINCT module FROM python.torch_trace WHERE stage = 'forward' "
                               "AND time > %f" % since, lambda r: len(r) >= 20)
        names = {r["module"] for r in got}
        assert names <= expected and len(names) >= 20, (i, sorted(names - expected), sorted(names))


def test_a_module_swapped_in_is_named_under_its_parent(torch_factory):
    t = start(torch_factory, "mlp")
    last_full_step(t.pid)
    eval_ok(t.pid, "model.head = torch.nn.Linear(32, 1)")
    since = time.time()
    got = wait_rows(t.pid, "SELECT DISTINCT module FROM python.torch_trace WHERE stage = 'forward' AND time > %f" % since,
                    lambda r: len(r) >= 6)
    assert {r["module"] for r in got} == MLP_NAMES, got


def test_data_rows_time_the_wait_for_each_batch(torch_factory):
    t = start(torch_factory, "loader")
    step = last_full_step(t.pid)
    assert [(r["module"], r["stage"]) for r in step] == [
        ("DataLoader", "data"), ("encoder.0", "forward"), ("encoder.1", "forward"), ("encoder.2", "forward"),
        ("encoder", "forward"), ("head", "forward"), ("MLP", "forward"), ("MLP", "backward"),
        ("SGD", "step")], step
    assert step[0]["duration"] > 0 and step[0]["self_duration"] is None
    # the seeds' question: is the data loader the bottleneck?
    share = rows(t.pid, "SELECT sum(CASE WHEN stage = 'data' THEN duration END) / sum(CASE WHEN stage IN "
                        "('data', 'step', 'backward') OR module = 'MLP' THEN duration END) AS s "
                        "FROM python.torch_trace")[0]["s"]
    assert 0 < share < 1, share
    # switched off, the iterator's __next__ is PyTorch's own again
    assert run_cli(t.pid, "config", "torch.trace=off")[0] == 0
    assert eval_ok(t.pid, "from torch.utils.data import dataloader as d; "
                          "print(d._BaseDataLoaderIter.__next__.__module__, "
                          "'probing' in repr(d._BaseDataLoaderIter.__dict__['__next__']))").strip() == \
        "torch.utils.data.dataloader False"


def test_dataloader_workers_record_nothing_and_keep_no_hooks(torch_factory):
    """Forked DataLoader workers run the dataset's code (here a module on each item): under
    `probing launch` each has an agent of its own, and neither it nor the hooks inherited from
    the parent trace anything there; the parent traces its steps and their waits."""
    t = start(torch_factory, "workers", mode="launch")
    step = last_full_step(t.pid)
    assert [r["stage"] for r in step][:2] == ["data", "forward"], step
    pids = json.loads(eval_ok(t.pid, "import json; print(json.dumps(workers))"))
    assert len(pids) == 2, pids
    for pid in pids:
        deadline = time.monotonic() + 30
        while run_cli(pid, "eval", "1")[0] != 0:  # its agent is up
            assert time.monotonic() < deadline, "no agent in worker %d" % pid
            time.sleep(0.2)
        state = eval_ok(pid, "import sys, torch; m = torch.nn.modules.module; "
                             "d = sys.modules['torch.utils.data._utils.worker']._worker_info.dataset; "
                             "print(d.calls > 0, len(m._global_forward_pre_hooks) + len(m._global_forward_hooks))")
        assert state.strip() == "True 0", (pid, state)  # items made by the module, no hook left
        assert rows(pid, "SELECT count(*) AS n FROM python.torch_trace") == [{"n": 0}], pid


def test_the_cuda_path_reuses_events_reads_memory_per_step_and_skips_graph_capture(torch_factory):
    """The CUDA path, with torch.cuda's timing events and allocator figures stood in for
    (targets/fake_gpu.py): rows timed by events with self times, a pool of events instead of two
    new ones per call, the allocator read on the model's forward, the backward and the step only,
    and nothing recorded while a step is captured into a CUDA graph (every 10th)."""
    t = torch_factory("fake_gpu.py", env={"PYTHONPATH": PYPKG}, ready_timeout=60)
    got = wait_rows(t.pid, "SELECT count(DISTINCT step) AS n FROM python.torch_trace WHERE allocated IS NOT NULL",
                    lambda r: r[0]["n"] >= 60, timeout=40)
    assert got[0]["n"] >= 60, got
    full = rows(t.pid, "SELECT step FROM python.torch_trace GROUP BY step HAVING count(*) = 8 ORDER BY step DESC LIMIT 1")
    step = rows(t.pid, "SELECT * FROM python.torch_trace WHERE step = %d ORDER BY seq" % full[0]["step"])
    assert [(r["module"], r["stage"]) for r in step] == [
        ("encoder.0", "forward"), ("encoder.1", "forward"), ("encoder.2", "forward"), ("encoder", "forward"),
        ("head", "forward"), ("MLP", "forward"), ("MLP", "backward"), ("SGD", "step")], step
    top = {(r["module"], r["stage"]) for r in step if r["allocated"] is not None}
    assert top == {("MLP", "forward"), ("MLP", "backward"), ("SGD", "step")}, step
    assert all(r["allocated"] == 64.0 and r["max_allocated"] == 96.0 for r in step if r["allocated"] is not None)
    d = {r["module"]: r for r in step if r["stage"] == "forward"}
    assert abs(d["MLP"]["self_duration"] - (d["MLP"]["duration"] - d["encoder"]["duration"] - d["head"]["duration"])) < 1e-9
    counts = json.loads(eval_ok(t.pid, "import json; print(json.dumps(dict(counts, step=step)))"))
    steps = counts["step"]
    assert counts["records_in_capture"] == 0, counts
    assert counts["events_made"] < 100, counts  # 16 events a step, reused: not 16 new ones per step
    assert counts["records"] > 16 * 60, counts
    assert counts["memory_reads"] <= 3 * steps + 3, counts
    # the captured steps (every 10th of the target's) have numbers and no rows
    traced = sorted(r["step"] for r in rows(t.pid, "SELECT DISTINCT step FROM python.torch_trace"))
    gaps = [b for a, b in zip(traced, traced[1:]) if b - a == 2]
    assert len(gaps) >= 4, traced


def test_probing_torch_0_keeps_it_off_until_switched_on(torch_factory):
    t = start(torch_factory, "mlp", env={"PROBING_TORCH": "0"})
    time.sleep(1.5)
    assert count(t.pid) == 0
    assert rows(t.pid, "SELECT value FROM information_schema.df_settings WHERE name = 'torch.trace'") == [{"value": "off"}]
    assert run_cli(t.pid, "query", "SET torch.trace = on")[0] == 0
    assert wait_rows(t.pid, "SELECT count(*) AS n FROM python.torch_trace", lambda r: r[0]["n"] > 0)[0]["n"] > 0


def test_sample_rate(torch_factory):
    t = start(torch_factory, "mlp")
    last_full_step(t.pid)
    rc, out, err = run_cli(t.pid, "query", "SET torch.sample_rate = 0.25")
    assert rc == 0, err
    since = rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace")[0]["s"] + 1
    got = wait_rows(t.pid, "SELECT DISTINCT step %% 4 AS r FROM python.torch_trace WHERE step > %d" % since,
                    lambda r: len(r) > 0)
    assert got == [{"r": 0}], got
    assert run_cli(t.pid, "query", "SET torch.sample_rate = 2")[0] == 1  # refused: between 0 and 1


def backward_rows_of_a_step(pid, since, n):
    """The backward rows of the first step after `since` that has n of them."""
    sql = ("SELECT step, module, duration, self_duration, time FROM python.torch_trace WHERE stage = 'backward' "
           "AND step > %d ORDER BY step, seq" % since)
    r = wait_rows(pid, sql, lambda r: any(sum(x["step"] == s for x in r) >= n for s in {x["step"] for x in r}),
                  timeout=30)
    steps = sorted({x["step"] for x in r if sum(y["step"] == x["step"] for y in r) >= n})
    assert steps, r
    return [x for x in r if x["step"] == steps[0]]


def test_each_modules_backward_gets_a_row(torch_factory):
    """torch.module_backward: a backward row per module call under the model, from the gradient
    reaching its output to the end of its last autograd node. encoder.1's backward sleeps 30 ms:
    it and the modules around it show it, the others do not; losses are those of a run without."""
    t = start(torch_factory, "slow_backward")
    plain = start(torch_factory, "slow_backward")
    since = last_full_step(t.pid)[0]["step"]
    assert [r["module"] for r in last_full_step(t.pid) if r["stage"] == "backward"] == ["MLP"]  # off by default
    rc, out, err = run_cli(t.pid, "config", "torch.module_backward=on")
    assert rc == 0, err
    # (encoder.4, an Identity, makes no autograd node: no row)
    step = backward_rows_of_a_step(t.pid, since + 1, 7)
    assert sorted(r["module"] for r in step) == ["MLP", "encoder", "encoder.0", "encoder.1", "encoder.2",
                                                 "encoder.3", "head"], step
    span = {r["module"]: (r["time"], r["time"] + r["duration"]) for r in step}
    took = {r["module"]: r["duration"] for r in step}
    assert took["encoder.1"] >= 0.03, step
    # encoder.3 (in place) stops at its own node, before encoder.2's and encoder.1's backward
    assert all(took[m] < 0.025 for m in ("encoder.0", "encoder.2", "encoder.3", "head")), step
    # autograd runs the modules in reverse: head first, encoder.0 last
    order = [m for m, _ in sorted(span.items(), key=lambda kv: kv[1][0]) if m not in ("MLP", "encoder")]
    assert order == ["head", "encoder.3", "encoder.2", "encoder.1", "encoder.0"], span
    # a parent's backward holds its children's (the pass's row, MLP, holds all of them). A child
    # that ends its parent ends with it: time + duration, both rounded to a double of about 1.8e9 s
    # (a step of 0.24 µs), may then come out one step apart.
    ulp = 1e-6
    for parent, children in (("encoder", ("encoder.0", "encoder.1", "encoder.2", "encoder.3")),
                             ("MLP", ("encoder", "head"))):
        for c in children:
            assert span[parent][0] <= span[c][0] + ulp and span[c][1] <= span[parent][1] + ulp, (parent, c, span)
    own = {r["module"]: r["self_duration"] for r in step}
    assert own["encoder.1"] >= 0.03 and 0 <= own["encoder"] < 0.01, step
    assert abs(own["encoder"] - max(0, took["encoder"] - sum(took["encoder.%d" % i] for i in range(4)))) < 1e-6
    assert own["MLP"] is None  # the pass's row, written by the backward wrapper

    # The gradients are those of a run without the hooks: the same losses, step by step.
    # (Steps traced with the hooks: from `since` on, counted as losses from a few before.)
    n = int(eval_ok(t.pid, "print(len(losses))")) + 5
    deadline = time.monotonic() + 30
    while min(int(eval_ok(p, "print(len(losses))")) for p in (t.pid, plain.pid)) < n:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert eval_ok(t.pid, "print(losses[:%d])" % n) == eval_ok(plain.pid, "print(losses[:%d])" % n)

    rc, out, err = run_cli(t.pid, "config", "torch.module_backward=off")
    assert rc == 0, err
    since = rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace")[0]["s"] + 1
    later = wait_rows(t.pid, "SELECT module FROM python.torch_trace WHERE stage = 'backward' AND step > %d" % since,
                      lambda r: len(r) >= 3)
    assert {r["module"] for r in later} == {"MLP"}, later


def test_checkpointed_modules_keep_their_names(torch_factory):
    """Activation checkpointing runs the encoder again during the backward pass, on its own (no
    model's forward around it): it keeps its name, and the step its rows."""
    t = start(torch_factory, "checkpointed")
    step = last_full_step(t.pid)
    got = [(r["module"], r["stage"]) for r in step]
    encoder = [("encoder.0", "forward"), ("encoder.1", "forward"), ("encoder.2", "forward"), ("encoder", "forward")]
    assert got[:6] == encoder + [("head", "forward"), ("CheckpointedMLP", "forward")], got
    assert got[6:-1].count(("encoder", "forward")) == 1 and set(encoder) <= set(got[6:-1]), got  # the recomputation
    assert got[-1] == ("SGD", "step") and ("CheckpointedMLP", "backward") in got, got
    assert not {m for m, _ in got} & {"Sequential", "Linear", "ReLU"}, got


@pytest.mark.parametrize("how", ["hooks", "reentrant", "own"])
def test_switched_on_during_a_recomputation_names_no_model_of_its_own(torch_factory, torch_py, how):
    """Tracing switched on while a checkpoint recomputes the encoder in the backward pass (20 ms of
    each ~30 ms step): the encoder is not taken for a top model (it was named 'Sequential', its
    layers '0', '1', '2', for good); its calls there go untraced until the model's forward names
    them. torch.utils.checkpoint both ways (saved-tensor hooks, a reentrant autograd Function),
    and a checkpoint Function of the program's own, as Megatron and DeepSpeed have."""
    if how == "own" and not torch_has(torch_py, "hasattr(torch._C, '_current_graph_task_id')"):
        pytest.skip("this torch tells no backward pass apart (no torch._C._current_graph_task_id, "
                    "PyTorch 2.0+): only torch.utils.checkpoint's recomputation is recognised")
    t = start(torch_factory, "checkpointed", env={"CHECKPOINT": how})
    last_full_step(t.pid)
    want = {"encoder.0", "encoder.1", "encoder.2", "encoder", "head", "CheckpointedMLP"}
    for i, since in switched_off_and_on(t.pid, 8, 0.004):
        got = wait_rows(t.pid, "SELECT step, module FROM python.torch_trace WHERE stage = 'forward' AND time > %f"
                        % since, lambda r: len({x["step"] for x in r}) >= 3)
        assert len({x["step"] for x in got}) >= 3, (i, got)
        names = {r["module"] for r in got}
        assert names == want, (i, sorted(names))


def test_no_optimizer_counts_top_level_forward_calls(torch_factory):
    t = start(torch_factory, "inference")
    step = last_full_step(t.pid)
    assert [(r["module"], r["stage"]) for r in step] == [
        ("encoder.0", "forward"), ("encoder.1", "forward"), ("encoder.2", "forward"), ("encoder", "forward"),
        ("head", "forward"), ("MLP", "forward")], step


def test_steps_go_on_after_tracing_starts_inside_a_forward(torch_factory):
    """Without an optimizer a step is a call of the top model. Switched on while a forward runs
    (here most of the time: each forward pauses 20 ms between encoder and head), the hooks see
    that forward's inner modules first, and PyTorch never runs the post hooks of the calls that
    began without hooks: steps must still be counted from the next call on (once, entries for
    those calls were kept on the stack and the step stayed 0 for good)."""
    t = start(torch_factory, "slow_inference", env={"PROBING_TORCH": "0"})
    want = [("encoder.0", "forward"), ("encoder.1", "forward"), ("encoder.2", "forward"), ("encoder", "forward"),
            ("head", "forward"), ("SlowMLP", "forward")]
    for i in range(4):
        before = rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace")[0]["s"] or 0
        assert run_cli(t.pid, "config", "torch.trace=on")[0] == 0
        r = wait_rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= before + 3)
        assert (r[0]["s"] or 0) >= before + 3, (i, before, r)
        step = rows(t.pid, "SELECT module, stage FROM python.torch_trace WHERE step = %d ORDER BY seq" % (r[0]["s"] - 1))
        assert [(x["module"], x["stage"]) for x in step] == want, (i, step)
        assert run_cli(t.pid, "config", "torch.trace=off")[0] == 0
        time.sleep(0.013 * i)


def test_forwards_that_raise_leave_nothing_behind(torch_factory, torch_py):
    """An inference loop (no optimizer) whose every other forward raises in its head goes on
    counting steps and naming its modules. PyTorch 2.1+ runs a post hook registered with
    always_call for a forward that raised: the call gets its row and leaves no entry. Before 2.1
    no post hook runs, and the entries the raise left are dropped when the model is called again
    (hooks.cpp, drop_entries_left_by_a_raise): without that, no step was counted after the first
    raise. The calls that raised (the head, and the model around it) then have no row."""
    always_call = torch_has(torch_py, "'always_call' in inspect.signature(m.register_module_forward_hook).parameters")
    t = start(torch_factory, "raising")
    r = wait_rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 6)
    assert r[0]["s"] >= 6, r
    got = {(x["module"], x["n"]) for x in rows(t.pid, "SELECT module, count(DISTINCT step) AS n FROM "
                                                     "python.torch_trace WHERE step BETWEEN 2 AND 5 GROUP BY module")}
    raised = 4 if always_call else 2  # steps 2-5: every other one raised
    assert got == {("encoder.0", 4), ("encoder.1", 4), ("encoder.2", 4), ("encoder", 4), ("head", raised),
                   ("MLP", raised)}, got


def test_switching_off_lets_go_of_the_calls_in_progress(torch_factory):
    """A call in progress holds its module while tracing times it; switched off, tracing lets go of
    every thread's, not only of the thread that switched it (here a thread blocked in a forward)."""
    t = torch_factory("torch_blocked.py", mode="preload", env={"PYTHONPATH": PYPKG}, ready_timeout=60)
    deadline = time.monotonic() + 20
    while eval_ok(t.pid, "from torch.nn.modules import module as m; print(len(m._global_forward_pre_hooks))").strip() \
            != "1" and time.monotonic() < deadline:
        time.sleep(0.2)
    t.write("go\n")
    assert eval_ok(t.pid, "print(entered.wait(10))").strip() == "True"
    held = int(eval_ok(t.pid, "import sys; print(sys.getrefcount(outer))"))
    assert run_cli(t.pid, "config", "torch.trace=off")[0] == 0
    after = int(eval_ok(t.pid, "import sys; print(sys.getrefcount(outer))"))
    assert after == held - 1, (held, after)  # the entry's reference, released by the switch
    eval_ok(t.pid, "release.set()")


def test_spans_nested_three_deep(torch_factory):
    t = start(torch_factory, "mlp")
    n = len(t.stdout_lines())
    t.write("spans\n")
    assert t.wait_line(lambda l: l == "spans done", timeout=20, start=n) is not None, t.stderr_lines()[-10:]
    spans = rows(t.pid, "SELECT span_id, parent_id, name, duration, attrs, error FROM python.spans ORDER BY span_id")
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"epoch", "batch", "forward"}, spans
    assert by_name["epoch"]["parent_id"] is None
    assert by_name["batch"]["parent_id"] == by_name["epoch"]["span_id"]
    assert by_name["forward"]["parent_id"] == by_name["batch"]["span_id"]
    assert json.loads(by_name["forward"]["attrs"]) == {"size": 16}
    assert by_name["epoch"]["duration"] >= by_name["batch"]["duration"] >= by_name["forward"]["duration"] > 0
    events = rows(t.pid, "SELECT name, span_id FROM python.events")
    assert events == [{"name": "deep", "span_id": by_name["forward"]["span_id"]}], events


@pytest.mark.parametrize("how", ["preload", "inject"])
def test_tracing_never_touches_cuda(torch_factory, how):
    # Nothing the agent does may initialize CUDA before the program does: torch.cuda.is_available()
    # or device_count() in the parent poisons fork for DataLoader workers that use CUDA.
    t = torch_factory("cuda_calls.py", mode="preload" if how == "preload" else "none", ready_timeout=60)
    if how == "inject":
        rc, out, err = run_cli(t.pid, "inject", timeout=60)
        assert rc == 0, err
    rows = wait_rows(t.pid, "SELECT count(DISTINCT step) AS n FROM python.torch_trace", lambda r: r[0]["n"] >= 60)
    assert rows[0]["n"] >= 60, rows  # traced across the forks
    forked = t.wait_line(lambda l: l.startswith("forked"), 30)
    assert t.stdout_lines()[forked] == "forked 0"
    # The eval's own query and backtrace paths, and the tables, must not ask either.
    rows = json.loads(run_cli(t.pid, "query", "--format", "json", "SELECT * FROM python.torch_trace LIMIT 5")[1])
    assert rows and rows[0]["allocated"] is None
    assert run_cli(t.pid, "backtrace", "--all", "--locals")[0] == 0
    assert eval_ok(t.pid, "calls") == "[]\n"


def test_a_compiled_model_trains_the_same_with_tracing_on(torch_factory, torch_py):
    # TorchDynamo inlines the global module hooks into the compiled forward: they must leave no
    # trace there (no state mutated, no graph break, no error), and the optimizer steps and
    # backward passes around the compiled model are still traced.
    import subprocess
    has_compile = subprocess.run([torch_py.path, "-c", "import torch, sys; sys.exit(not hasattr(torch, 'compile'))"],
                                 capture_output=True, timeout=120).returncode == 0
    if not has_compile:
        pytest.skip("torch.compile is PyTorch 2.x")
    plain = torch_factory("torch_compiled.py", mode="none", ready_timeout=120)
    traced = torch_factory("torch_compiled.py", mode="preload", env={"PROBING_TORCH": "1"}, ready_timeout=120)
    assert plain.stdout_lines()[0].startswith("loss ")
    assert traced.stdout_lines()[0] == plain.stdout_lines()[0]  # bit for bit
    # the same frames compiled into the same graphs, and no graph break or recompilation of ours
    counters = json.loads(traced.stdout_lines()[1])
    assert counters == json.loads(plain.stdout_lines()[1]), (counters, plain.stdout_lines()[1])
    assert counters["stats"]["unique_graphs"] == 1 and "graph_break" not in counters, counters
    # one row per call of the compiled module, marked; none for the backend's code inside it
    got = {(r["module"], r["stage"]): r["n"] for r in rows(
        traced.pid, "SELECT module, stage, count(*) AS n FROM python.torch_trace GROUP BY module, stage")}
    assert set(got) == {("Sequential (compiled)", "forward"), ("Sequential (compiled)", "backward"),
                        ("SGD", "step")}, got
    assert all(n >= 30 for n in got.values()), got
    assert traced.stderr_lines() == [], traced.stderr_lines()


def test_export_steps_modules_and_spans(torch_factory, tmp_path):
    t = start(torch_factory, "mlp")
    wait_rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 5)
    n = len(t.stdout_lines())
    t.write("spans\n")
    assert t.wait_line(lambda l: l == "spans done", timeout=20, start=n) is not None, t.stderr_lines()[-10:]
    out = tmp_path / "steps.json"
    rc, _, err = run_cli(t.pid, "export", "--last", "4", "-o", str(out), timeout=60)
    assert rc == 0, err
    assert "4 step(s)" in err and "ui.perfetto.dev" in err, err
    trace = json.loads(out.read_text())
    events = trace["traceEvents"]
    assert all(e["pid"] == t.pid for e in events)
    names = {(e["name"], e["args"]["name"]) for e in events if e["ph"] == "M" and e["name"] != "thread_sort_index"}
    assert ("thread_name", "steps") in names and ("thread_name", "torch: backward") in names, names
    steps = sorted((e for e in events if e.get("cat") == "steps"), key=lambda e: e["ts"])
    numbers = [e["args"]["step"] for e in steps]
    assert len(steps) == 4 and numbers == list(range(numbers[0], numbers[0] + 4)), numbers
    calls = [e for e in events if e["ph"] == "X" and e["cat"] in ("forward", "backward", "step")]
    # The last step may still run; every complete one has the eight calls of test_mlp_rows.
    for s in steps[:-1]:
        inside = [c for c in calls if c["args"]["step"] == s["args"]["step"]]
        assert sorted(c["name"] for c in inside) == sorted(
            ["encoder.0", "encoder.1", "encoder.2", "encoder", "head", "MLP", "MLP", "SGD"]), inside
        # Each call lies within its step's span, to the rounding of unix times held as doubles in
        # seconds (2.4e-7 s apart at today's dates) and of ts and dur to 0.1 µs each: 1 µs.
        for c in inside:
            assert s["ts"] - 1 <= c["ts"] and c["ts"] + c["dur"] <= s["ts"] + s["dur"] + 1, (s, c)
        fwd = {c["name"]: c for c in inside if c["cat"] == "forward"}
        assert fwd["MLP"]["ts"] - 1 <= fwd["encoder"]["ts"] and (
            fwd["encoder"]["ts"] + fwd["encoder"]["dur"] <= fwd["MLP"]["ts"] + fwd["MLP"]["dur"] + 1)
        assert {c["tid"] for c in inside if c["cat"] == "backward"} != {c["tid"] for c in inside if c["cat"] == "forward"}

    # The spans ran outside these steps' time (on another thread): a window in seconds takes them.
    rc, text, err = run_cli(t.pid, "export", "--seconds", "600", "--format", "chrome-json", timeout=60)
    assert rc == 0, err
    events = json.loads(text)["traceEvents"]
    spans = {e["name"]: e for e in events if e.get("cat") == "span"}
    assert set(spans) == {"epoch", "batch", "forward"}, spans
    assert len({e["tid"] for e in spans.values()}) == 1
    assert spans["forward"]["args"]["size"] == 16 and spans["batch"]["args"]["parent_id"] == spans["epoch"]["args"]["span_id"]
    deep = [e for e in events if e["ph"] == "i"]
    assert [e["name"] for e in deep] == ["deep"] and deep[0]["tid"] == spans["forward"]["tid"], deep
    assert spans["forward"]["ts"] <= deep[0]["ts"] <= spans["forward"]["ts"] + spans["forward"]["dur"]
    thread = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name" and e["tid"] == deep[0]["tid"]]
    assert thread and thread[0]["args"]["name"].startswith("spans: "), thread
    # The flight recorder's stacks of the window: the main thread's, on a track of their own.
    sampled = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"
               and e["args"]["name"].startswith("samples: MainThread")]
    assert len(sampled) == 1, [e["args"] for e in events if e["ph"] == "M"]
    frames = {e["name"] for e in events if e.get("cat") == "sample" and e["tid"] == sampled[0]["tid"]}
    assert "<module>" in frames, frames

    rc, _, err = run_cli(t.pid, "export", "--format", "svg", timeout=30)
    assert rc == 2 and "unknown format 'svg'" in err, err

    # Perfetto's protobuf (the default for a .pftrace name), decoded by protoc against the
    # published field numbers and types: any field it does not know is an error.
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.skip("protoc is not installed (scripts/install-deps.sh --test installs it)")
    pftrace = tmp_path / "steps.pftrace"
    rc, _, err = run_cli(t.pid, "export", "--last", "3", "-o", str(pftrace), timeout=60)
    assert rc == 0 and "3 step(s)" in err, err
    with open(pftrace, "rb") as f:
        decoded = subprocess.run([protoc, "--proto_path", DATA, "--decode=perfetto.protos.Trace", "perfetto_trace.proto"],
                                 stdin=f, capture_output=True, text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    text = decoded.stdout
    unknown = [line for line in text.splitlines() if re.match(r"\s*\d+:", line)]
    assert not unknown, unknown[:5]
    tracks = re.findall(r'track_descriptor \{\s*uuid: (\d+)\s*(?:name: "([^"]*)")?', text)
    names = {name for _, name in tracks}
    assert {"steps", "torch: forward and optimizer", "torch: backward"} <= names, names
    assert ("pid: %d" % t.pid) in text and "process_name:" in text
    begins, ends = text.count("type: TYPE_SLICE_BEGIN"), text.count("type: TYPE_SLICE_END")
    steps = re.findall(r'name: "step (\d+)"', text)
    # (the last step may still run, as above: the two before it have their eight calls each)
    assert len(steps) == 3 and begins == ends and begins >= 2 * 8 + 3, (steps, begins, ends)
    assert text.count('name: "MLP"') >= 2 * 2 and 'categories: "backward"' in text
    assert 'name: "step"' in text and "int_value:" in text  # the step number, as an annotation
    # In time order, and nested: every end closes the slice begun last on its track.
    open_by_track = {}
    last = 0
    for packet in text.split("packet {")[1:]:
        kind = re.search(r"\btype: (TYPE_\w+)", packet)
        if kind is None:
            continue  # a track descriptor
        ts = int(re.search(r"\btimestamp: (\d+)", packet).group(1))
        track = re.search(r"\btrack_uuid: (\d+)", packet).group(1)
        assert ts >= last, "packets out of time order"
        last = ts
        if kind.group(1) == "TYPE_SLICE_BEGIN":
            open_by_track.setdefault(track, []).append(ts)
        elif kind.group(1) == "TYPE_SLICE_END":
            assert open_by_track.get(track), "an end with nothing open on track %s" % track
            assert open_by_track[track].pop() <= ts
    assert all(not v for v in open_by_track.values()), open_by_track


def test_tensors_by_storage_with_names(torch_factory, target_factory, torch_py):
    t = start(torch_factory, "mlp")
    wait_rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 2)
    eval_ok(t.pid, "base = torch.randn(16, 8); v = base[2:4]; w = base.view(-1); big = torch.zeros(4096, 4096)")
    # PyTorch 2.x's zero_grad() sets the gradients to None: a census between it and backward()
    # finds none, so ask until one came at another point of the step.
    for _ in range(20):
        got = {r["names"]: r for r in rows(t.pid, "SELECT * FROM python.tensors")}
        if "model.head.weight.grad" in got:
            break
    head = got["model.head.weight"]
    assert (head["shape"], head["dtype"], head["device"], head["bytes"], head["parameter"], head["requires_grad"]) == (
        "[1, 32]", "float32", "cpu", 128, 1, 1), head
    assert got["model.head.weight.grad"]["shape"] == "[1, 32]" and got["model.head.weight.grad"]["parameter"] == 0
    assert "model.encoder.0.weight" in got and "model.encoder.2.bias.grad" in got, sorted(got)
    # a tensor and its two views: one storage, the base's shape, every name
    (xs,) = [r for r in got.values() if r["names"] and "base" in r["names"].split(", ")]
    assert sorted(xs["names"].split(", ")) == ["base", "v", "w"] and xs["views"] == 3, xs
    assert (xs["shape"], xs["bytes"]) == ("[16, 8]", 512), xs
    largest = rows(t.pid, "SELECT names, bytes FROM python.tensors LIMIT 1")
    assert largest == [{"names": "big", "bytes": 64 << 20}], largest  # a known 64 MB tensor, by name
    # A model no global reaches (only a closure holds it) is named by its class.
    eval_ok(t.pid, "hidden = (lambda m: (lambda: m))(torch.nn.Linear(300, 200))")
    got = {r["names"]: r for r in rows(t.pid, "SELECT * FROM python.tensors")}
    assert got["Linear.weight"]["shape"] == "[200, 300]" and got["Linear.bias"]["bytes"] == 800, sorted(got)
    # A subclass with a __torch_function__ of its own would run Python code: counted, not read.
    eval_ok(t.pid, "class Sub(torch.Tensor): pass\nsub = torch.zeros(7).as_subclass(Sub)")
    rc, out, err = run_cli(t.pid, "query", "--format", "json", "SELECT names FROM python.tensors")
    assert rc == 0 and "1 tensor(s) not read" in err, err
    assert all("sub" not in (r["names"] or "").split(", ") for r in json.loads(out)), out

    adam = start(torch_factory, "transformer")
    wait_rows(adam.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 2)
    names = [r["names"] for r in rows(adam.pid, "SELECT names FROM python.tensors WHERE names LIKE 'optimizer%'")]
    assert "optimizer.state[model.head.weight].exp_avg" in names, names
    assert "optimizer.state[model.head.weight].exp_avg_sq" in names, names

    plain = target_factory("idle.py", torch_py)
    rc, out, err = run_cli(plain.pid, "query", "--format", "json", "SELECT * FROM python.tensors")
    assert rc == 0 and json.loads(out) == [] and "has not imported torch" in err, (out, err)
    assert eval_ok(plain.pid, "'torch' in __import__('sys').modules").strip() == "False"  # never imported


def test_tensors_read_forty_times_while_training(torch_factory):
    """The census reads tensors on the main thread between two of its bytecodes, never beside one
    of its PyTorch operations: asked 40 times while a transformer trains with Adam, each answer
    names the model's weights and their optimizer state, and the loop goes on (PyTorch 2.x crashed
    a census taken from another thread about once in six queries)."""
    t = start(torch_factory, "transformer")
    wait_rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 2)
    first = rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace")[0]["s"]
    for i in range(40):
        got = rows(t.pid, "SELECT names FROM python.tensors WHERE names IS NOT NULL")
        names = {n for r in got for n in r["names"].split(", ")}
        assert "model.head.weight" in names, (i, sorted(names))
        assert any(n.startswith("optimizer.state[model.head.weight].exp_avg") for n in names), (i, sorted(names))
        assert t.alive(), t.err.text()
    last = rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace")[0]["s"]
    assert last > first, (first, last)


def test_tensors_refused_while_the_main_thread_is_in_a_c_call(torch_factory):
    """A main thread in a long C call of the program's own (time.sleep here; a PyTorch operation
    alike) may be changing tensors: the census is refused, saying where the main thread is,
    within gil.timeout_s, and the process goes on."""
    t = torch_factory("hung.py", args=["sleep"], ready_timeout=60)
    rc, out, err = run_cli(t.pid, "config", "gil.timeout_s=1")
    assert rc == 0, err
    start = time.monotonic()
    rc, out, err = run_cli(t.pid, "query", "SELECT names FROM python.tensors")
    took = time.monotonic() - start
    assert rc != 0 and "the main thread ran no Python code for 1 s" in err, (rc, out, err)
    assert re.search(r"it is in <module> \(\S*hung\.py\), sleeping in \w+", err), err
    assert 0.9 < took < 3, took
    assert t.alive() and eval_ok(t.pid, "weights.shape") == "torch.Size([1024])\n"


def test_tensors_bypass_the_main_threads_torch_function_mode(torch_factory, torch_py):
    """The census runs on the main thread, where the program's TorchFunctionMode is on (as
    torch.set_default_device puts one): the tensor getters must not reach the mode's Python."""
    t = start(torch_factory, "transformer", env={"PROBING_TEST_MODE": "1"})
    if int(eval_ok(t.pid, "int(torch.__version__.split('.')[0])")) < 2:
        pytest.skip("PyTorch 1.x: its TorchFunctionMode is a prototype, unlike 2.x's")
    wait_rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace", lambda r: (r[0]["s"] or 0) >= 2)
    assert eval_ok(t.pid, "'linear' in seen_by_mode").strip() == "True"  # the mode is on
    for _ in range(3):
        names = {r["names"] for r in rows(t.pid, "SELECT names FROM python.tensors WHERE names IS NOT NULL")}
        assert "model.head.weight" in names, sorted(names)
    seen = eval_ok(t.pid, "sorted(seen_by_mode & {'_is_view', 'untyped_storage', 'numel', '_storage'})")
    assert seen.strip() == "[]", seen
    assert t.alive()
