#!/usr/bin/env python3
"""What PyTorch tracing (python.torch_trace) costs per module call and per training step, in one
target process (/usr/bin/python3.11, or PROBING_BENCH_PYTHON such as the version matrix's
sid-3.14 with PyTorch 2.14; agent preloaded with LD_PRELOAD, torch.set_num_threads(1), CPU) with
the tracing switched at run time (`SET torch.trace = on/off`, `SET torch.sample_rate = X` over
@probing-<pid>), so that every side runs in the same process on the same model.

Per module call, side by side: no hooks; no-op global hooks (pre and post, the floor of any
module tracer); naive global Python hooks timing each call into a list; torch.profiler (CPU)
around the block; probing at sample_rate 1 and 0. On the hook-stress model (200 x Linear(32, 32),
batch 8, SGD: 201 module calls a step) and on 1000 x Identity called forward only (1001 calls a
step, nothing but module calls, the cleanest figure). Each round runs one block per setting
(order reversed every other round); a setting's cost per call is (its block - the no-hooks block
of the same round) / calls, median over rounds, and probing's over the floor likewise. Targets:
probing <= 0.5 us per traced call over the floor, <= 0.2 us at sample_rate 0.

Per training step:
- the bench model: a small transformer (embedding of 256 tokens, nn.TransformerEncoder
  d_model=128, nhead=4, dim_feedforward=256, 4 layers, linear head; batch 2 x 16 tokens; Adam; a
  step of ~25 ms here: Debian's torch 1.13 has the generic reference BLAS, so batch 16 x 32 would
  take ~550 ms); target: the default settings (torch.trace on, torch.sample_rate 1) cost <= 2 %
  of its step time;
- the stress case: an MLP (4 x Linear(64, 64) + ReLU, batch 32; Adam), a step of about a ms,
  where the cost per traced module call shows most;
- on PyTorch 2.x, the transformer and the MLP through torch.compile (the default backend where a
  C++ compiler is present, aot_eager where not); target: the compiled transformer's steps <= 2 %
  slower. On the compiled MLP's millisecond step, PyTorch's own cost of any global module hook
  (the no-op hooks' block, "the floor") is already about that much: what probing adds over the
  floor is printed, in ms a step. TorchDynamo's counters are printed after the run: switching
  tracing compiles each state once (the global hooks are guarded on).
Protocol: warm-up steps, then rounds; each round runs one block of K timed steps per setting (off,
off with no-op global module hooks (the floor of any module tracer), sample_rate 1, 0.25, 0.1, and
0: the hooks installed but no step traced; sample_rate 1 with
torch.module_backward on; order reversed every other round to cancel drift), after a few untimed
steps that let the new setting settle. The target runs a block when the bench asks on its stdin
and answers with the per-step times; the bench switches the setting between blocks (the target
waits in `readline`, holding no GIL). Per block: the median and the mean of its step times; the
overhead of a setting is its block against the off block of the same round, median over rounds.
The rows of python.torch_trace are counted around each block: they must grow with tracing on (by
the sample rate's share of the steps) and not at all with it off or at sample_rate 0.
The transformer's overhead is also given as its rows per step times the MLP's cost per row, a
steadier figure on a loaded machine than the difference of two ~25 ms medians.
"""

import argparse
import json
import os
import statistics
import time

from common import TRANSFORMER, AgentConnection, StdinTarget, build_paths, wait_for_agent

TARGET = TRANSFORMER + r'''
WIDTH, MLP_BATCH = 64, 32

def mlp():
    layers = []
    for _ in range(4):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*layers)

def make(name, backend=None):
    """(model, step): a training step of the transformer or the MLP; through torch.compile with
    `backend`, if given."""
    if name == "transformer":
        model = Transformer()
        x = torch.randint(0, VOCAB, (BATCH, SEQ))
        y = torch.randint(0, VOCAB, (BATCH, SEQ))
        loss_fn = lambda out: nn.functional.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1))
    else:
        model = mlp()
        x = torch.randn(MLP_BATCH, WIDTH)
        y = torch.randn(MLP_BATCH, WIDTH)
        loss_fn = lambda out: nn.functional.mse_loss(out, y)
    model.train()
    forward = torch.compile(model, backend=backend) if backend else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    def step():
        opt.zero_grad()
        loss = loss_fn(forward(x))
        loss.backward()
        opt.step()
    return model, step

def stress():
    """The hook-stress model: 200 x Linear(32, 32), batch 8, SGD."""
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(200)])
    x = torch.randn(8, 32)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    return model, step

def identity():
    """1000 x Identity, forward only: nothing but module calls."""
    model = nn.Sequential(*[nn.Identity() for _ in range(1000)])
    x = torch.randn(2)
    def step():
        with torch.no_grad():
            model(x)
    return model, step

# The no-op hooks' blocks: PyTorch 2.x warns when a compiled module is called while a global hook
# exists (probing filters the warning out while it traces; the filter costs the same here).
import warnings
warnings.filterwarnings("ignore", category=UserWarning, message=r"Using `torch\.compile\(module\)` when there are global hooks")
MODELS = {name: make(name) for name in ("transformer", "mlp")}
COMPILE_BACKEND = None
if hasattr(torch, "compile"):
    # PyTorch 2.x: the transformer and the MLP through torch.compile, with the default backend
    # where a C++ compiler is present, aot_eager where not
    import shutil
    COMPILE_BACKEND = "inductor" if shutil.which("g++") or shutil.which("c++") else "aot_eager"
    for name in ("transformer", "mlp"):
        model, step = make(name, COMPILE_BACKEND)
        step()  # compiles
        MODELS["compiled_" + name] = (model, step)
MODELS["stress"] = stress()
MODELS["identity"] = identity()
perf = time.perf_counter
from torch.nn.modules import module as _module_mod

# The other ways to time module calls, for the per-call comparison (MODE of a block):
#   noop      global pre and post hooks that do nothing: the floor of any module tracer
#   naive     global Python hooks timing each call into a list
#   profiler  torch.profiler (CPU) around the block
_stack, _timings = [], []
def _naive_pre(m, i):
    _stack.append(perf())
def _naive_post(m, i, o):
    _timings.append((m, perf() - _stack.pop()))
HOOKS = {"noop": (lambda m, i: None, lambda m, i, o: None), "naive": (_naive_pre, _naive_post)}

def run_block(step, settle, k):
    for _ in range(settle):
        step()
    times = []
    for _ in range(k):
        t0 = perf()
        step()
        times.append(perf() - t0)
    return times

print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "info":
        print(json.dumps({"torch": torch.__version__, "python": sys.version.split()[0], "backend": COMPILE_BACKEND,
                          "modules": {name: len(list(m.modules())) for name, (m, _) in MODELS.items()}}), flush=True)
    elif cmd[0] == "counters":  # TorchDynamo's: frames compiled, graphs, graph breaks, recompilations
        from torch._dynamo.utils import counters
        print(json.dumps({k: dict(v) for k, v in counters.items()}), flush=True)
    elif cmd[0] == "block":  # block MODEL SETTLE K [MODE]
        step = MODELS[cmd[1]][1]
        mode = cmd[4] if len(cmd) > 4 else "plain"
        handles = []
        if mode in HOOKS:
            pre, post = HOOKS[mode]
            handles = [_module_mod.register_module_forward_pre_hook(pre), _module_mod.register_module_forward_hook(post)]
        if mode == "profiler":
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
                times = run_block(step, int(cmd[2]), int(cmd[3]))
        else:
            times = run_block(step, int(cmd[2]), int(cmd[3]))
        for h in handles:
            h.remove()
        del _timings[:]
        print(json.dumps(times), flush=True)
'''

FLOOR = "off, no-op hooks (the floor)"  # global module hooks that do nothing: any module tracer pays this
SETTINGS = [("off", None), (FLOOR, None), ("on, sample_rate 1 (default)", 1.0), ("on, sample_rate 0.25", 0.25),
            ("on, sample_rate 0.1", 0.1), ("on, sample_rate 0 (hooks only)", 0.0),
            ("on, module_backward on", 1.0)]
DEFAULT = SETTINGS[2][0]
MODULE_BACKWARD = "on, module_backward on"  # a backward row per module call too
TARGET_PCT = 2.0


class Bench:
    def __init__(self, target):
        self.t = target
        self.conn = AgentConnection(target.pid, timeout=60)

    def sql(self, sql):
        try:
            status, body = self.conn.request("POST", "/query", {"sql": sql})
        except OSError:  # the agent closes a keep-alive connection left idle during a block
            self.conn.close()
            self.conn = AgentConnection(self.t.pid, timeout=60)
            status, body = self.conn.request("POST", "/query", {"sql": sql})
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def rows(self):
        """Rows ever appended to python.torch_trace (kept + dropped)."""
        r = self.sql("SELECT rows + dropped_rows FROM information_schema.tables "
                     "WHERE table_schema = 'python' AND table_name = 'torch_trace'")["rows"]
        return int(r[0][0]) if r else 0

    def set(self, rate, module_backward=False):
        if rate is None:
            self.sql("SET torch.trace = off")
        else:
            self.sql("SET torch.sample_rate = %g" % rate)
            self.sql("SET torch.module_backward = %s" % ("on" if module_backward else "off"))
            self.sql("SET torch.trace = on")

    def ask(self, line):
        self.t.proc.stdin.write(line + "\n")
        self.t.proc.stdin.flush()
        out = self.t.proc.stdout.readline()
        if not out:
            raise RuntimeError("the target died on %r" % line)
        return json.loads(out)

    def block(self, model, settle, k, mode="plain"):
        """(step times, rows appended during the block, steps run)."""
        r0 = self.rows()
        times = self.ask("block %s %d %d %s" % (model, settle, k, mode))
        return times, self.rows() - r0, settle + k


def run_model(b, model, k, rounds, settle, warmup):
    b.set(1.0)
    b.block(model, 0, warmup)
    # rows per traced step, from a block fully traced
    _, rows, steps = b.block(model, settle, k)
    per_step = {name: rows / steps for name, _ in SETTINGS}
    b.set(1.0, module_backward=True)
    b.block(model, settle, k)
    _, rows, steps = b.block(model, settle, k)
    per_step[MODULE_BACKWARD] = rows / steps
    res = {name: {"median": [], "mean": [], "rows": [], "steps": []} for name, _ in SETTINGS}
    for r in range(rounds):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for name, rate in order:
            b.set(rate, module_backward=name == MODULE_BACKWARD)
            times, rows, steps = b.block(model, settle, k, mode="noop" if name == FLOOR else "plain")
            d = res[name]
            d["median"].append(statistics.median(times))
            d["mean"].append(statistics.fmean(times))
            d["rows"].append(rows)
            d["steps"].append(steps)
    b.set(1.0)  # back to the default
    return per_step, res


COMPILED_TRANSFORMER, COMPILED_MLP = "compiled_transformer", "compiled_mlp"  # PyTorch 2.x


def step_models(args):
    """(model, timed steps per block, warm-up steps) of the per-step comparison."""
    return (("transformer", args.k_transformer, 20), ("mlp", args.k_mlp, 300),
            (COMPILED_TRANSFORMER, args.k_transformer, 20), (COMPILED_MLP, args.k_mlp, 300))


# The per-call comparison: (name, probing's sample rate or None for tracing off, the block's mode).
PER_CALL = [("no hooks", None, "plain"), ("no-op hooks (the floor)", None, "noop"),
            ("naive Python hooks", None, "naive"), ("torch.profiler (CPU)", None, "profiler"),
            ("probing, sample_rate 1", 1.0, "plain"), ("probing, sample_rate 0", 0.0, "plain")]
PER_CALL_TARGET_US = 0.5      # probing over the floor, per traced module call
PER_CALL_RATE0_TARGET_US = 0.2


def run_per_call(b, model, calls, k, rounds):
    """Block medians per setting and round, and probing's rows per step."""
    b.set(None)
    b.block(model, 0, k)  # warm-up
    res = {name: [] for name, _, _ in PER_CALL}
    rows = {name: [] for name, _, _ in PER_CALL}
    for r in range(rounds):
        order = PER_CALL if r % 2 == 0 else PER_CALL[::-1]
        for name, rate, mode in order:
            b.set(rate)
            times, n, steps = b.block(model, 3, k, mode)
            res[name].append(statistics.median(times))
            rows[name].append(n / steps)
    b.set(1.0)
    return res, rows


def report_per_call(model, calls, k, rounds, res, rows):
    base = res["no hooks"]
    floor = res["no-op hooks (the floor)"]
    print("%s: %d module calls per step, %d rounds of %d steps per setting" % (model, calls, rounds, k))
    print("  %-26s %10s %14s %14s   %s" % ("setting", "median ms", "us/call over", "us/call over", "rows/step"))
    print("  %-26s %10s %14s %14s" % ("", "", "no hooks", "the floor"))
    figures = {}
    for name, rate, _ in PER_CALL:
        med = statistics.median(res[name]) * 1000
        over = statistics.median((a - o) / calls for a, o in zip(res[name], base)) * 1e6
        over_floor = statistics.median((a - f) / calls for a, f in zip(res[name], floor)) * 1e6
        figures[name] = over_floor
        print("  %-26s %10.3f %14.3f %14s   %.1f" % (name, med, over, "-" if name == "no hooks" else "%.3f" % over_floor,
                                                 statistics.median(rows[name])))
    # a row per module call, and for a training step its backward and optimizer step
    want = calls + (2 if model == "stress" else 0)
    ok_rows = (all(abs(x - want) <= 1.5 for x in rows["probing, sample_rate 1"][1:]) and
               all(x == 0 for x in rows["probing, sample_rate 0"]))
    on, zero = figures["probing, sample_rate 1"], figures["probing, sample_rate 0"]
    print("  probing over the floor per call: %.3f us (target <= %g: %s); at sample_rate 0: %.3f us (target <= %g: %s);"
          " rows: %s" % (on, PER_CALL_TARGET_US, "PASS" if on <= PER_CALL_TARGET_US else "OVER",
                         zero, PER_CALL_RATE0_TARGET_US, "PASS" if zero <= PER_CALL_RATE0_TARGET_US else "OVER",
                         "PASS" if ok_rows else "CHECK FAILED"))
    return ok_rows


def overhead(res, name, stat):
    """Median over rounds of (block / the off block of the same round) - 1, in %."""
    return 100 * (statistics.median(a / o for a, o in zip(res[name][stat], res["off"][stat])) - 1)


def report(model, modules, k, rounds, per_step, res):
    off_med = statistics.median(res["off"]["median"])
    print("%s: %d modules, %.1f traced rows per step (%.1f with module_backward), %d rounds of %d steps per setting"
          % (model, modules, per_step[DEFAULT], per_step[MODULE_BACKWARD], rounds, k))
    print("  %-30s %10s %10s %9s %9s   %s" % ("setting", "median ms", "mean ms", "ovh med", "ovh mean",
                                             "rows per step (expected)"))
    checks = []
    for name, rate in SETTINGS:
        d = res[name]
        med = statistics.median(d["median"]) * 1000
        mean = statistics.median(d["mean"]) * 1000
        got = sum(d["rows"]) / sum(d["steps"])
        want = 0.0 if rate is None else per_step[name] * rate
        if rate is None:
            ok = all(x == 0 for x in d["rows"])
        else:
            # per block: within a traced step or so of the share (the untimed steps that
            # settle a new setting may or may not include one)
            ok = all((x > 0 if rate > 0 else x == 0) and abs(x - per_step[name] * rate * n) <= 1.5 * per_step[name]
                     for x, n in zip(d["rows"], d["steps"]))
        if name == "off":
            ovh = "%9s %9s" % ("-", "-")
        else:  # the floor's too
            ovh = "%8.1f%% %8.1f%%" % (overhead(res, name, "median"), overhead(res, name, "mean"))
        checks.append(ok)
        print("  %-30s %10.3f %10.3f %s   %.2f (%.2f)%s"
              % (name, med, mean, ovh, got, want, "" if ok else "  CHECK FAILED"))
    print("  tracing check (rows grew in every on block by the sample rate's share; never with off or 0): %s"
          % ("PASS" if all(checks) else "FAIL"))
    return off_med, all(checks)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=15, help="rounds (one block per setting each)")
    ap.add_argument("--k-transformer", type=int, default=20, help="timed steps per transformer block")
    ap.add_argument("--k-mlp", type=int, default=200, help="timed steps per MLP block")
    ap.add_argument("--rounds-per-call", type=int, default=9, help="rounds of the per-call comparison")
    ap.add_argument("--k-stress", type=int, default=20, help="timed steps per block of 200 x Linear(32, 32)")
    ap.add_argument("--k-identity", type=int, default=40, help="timed steps per block of 1000 x Identity")
    ap.add_argument("--per-call-only", action="store_true", help="only the per-call comparison")
    args = ap.parse_args()
    lib = build_paths(args.build)["library"]
    load0 = os.getloadavg()
    t_start = time.monotonic()
    # PROBING_TORCH is left unset: tracing starts on by default; the bench switches it from here.
    with StdinTarget(TARGET, env={"LD_PRELOAD": lib}) as t:
        wait_for_agent(t.pid)
        b = Bench(t)
        info = b.ask("info")
        results = {}
        per_call = {}
        dynamo = None
        for model, k in (("stress", args.k_stress), ("identity", args.k_identity)):
            per_call[model] = run_per_call(b, model, info["modules"][model], k, args.rounds_per_call)
        if not args.per_call_only:
            for model, k, warmup in step_models(args):
                if model in info["modules"]:
                    results[model] = run_model(b, model, k, args.rounds, settle=4, warmup=warmup)
        dynamo = b.ask("counters") if COMPILED_TRANSFORMER in info["modules"] else None
        b.conn.close()
    wall = time.monotonic() - t_start
    load1 = os.getloadavg()

    print("PyTorch tracing overhead: one target (CPython %s, torch %s CPU, 1 thread, agent preloaded), tracing "
          "switched at run time" % (info["python"], info["torch"]))
    print("load average %.2f at the start, %.2f at the end (%d cores); %.0f s"
          % (load0[0], load1[0], os.cpu_count(), wall))
    print()
    ok_all = True
    print("Per module call, every way of timing calls side by side in the same process:")
    for model, k in (("stress", args.k_stress), ("identity", args.k_identity)):
        ok_all = report_per_call(model, info["modules"][model], k, args.rounds_per_call, *per_call[model]) and ok_all
        print()
    if args.per_call_only:
        if not ok_all:
            print("TRACING CHECK FAILED: see the rows per step above")
        return
    figures = {}
    for model, k, _ in step_models(args):
        if model not in results:
            continue
        per_step, res = results[model]
        if model.startswith("compiled_"):
            print("(the %s through torch.compile, backend %s: its rows are the compiled module's call, backward "
                  "and step)" % (model.split("_", 1)[1], info["backend"]))
        off_med, ok = report(model, info["modules"][model], k, args.rounds, per_step, res)
        ok_all = ok_all and ok
        figures[model] = (per_step[DEFAULT], res, off_med, per_step[MODULE_BACKWARD] - per_step[DEFAULT])
        print()
    if dynamo is not None:
        print("TorchDynamo's counters after the run (tracing switched %d times): %s"
              % (2 * args.rounds * len(SETTINGS), json.dumps(dynamo, sort_keys=True)))
    for model in (COMPILED_TRANSFORMER, COMPILED_MLP):
        if model in figures:
            res = figures[model][1]
            ovh = overhead(res, DEFAULT, "median")
            print("%s: sample_rate 1 slows it by %.1f %%; the floor (no-op hooks) by %.1f %%, probing over the floor "
                  "%.3f ms a step" % (model, ovh, overhead(res, FLOOR, "median"),
                                      1000 * statistics.median(a - f for a, f in zip(res[DEFAULT]["median"],
                                                                                       res[FLOOR]["median"]))))
    if COMPILED_TRANSFORMER in figures:
        ovh = overhead(figures[COMPILED_TRANSFORMER][1], DEFAULT, "median")
        print("target: a compiled model (the transformer) slowed by <= %g %%: %.1f %%  %s"
              % (TARGET_PCT, ovh, "PASS" if ovh <= TARGET_PCT else "OVER"))
    per_step, res, _, _ = figures["transformer"]
    ovh = overhead(res, DEFAULT, "median")
    print("target: default settings (sample_rate 1) <= %g %% of the transformer's step: %.1f %%  %s"
          % (TARGET_PCT, ovh, "PASS" if ovh <= TARGET_PCT else "OVER (%.1fx the target)" % (ovh / TARGET_PCT)))
    for name, rate in SETTINGS[3:]:
        print("  %-32s %.1f %% (median), %.1f %% (mean)"
              % (name, overhead(res, name, "median"), overhead(res, name, "mean")))
    for model in ("transformer", "mlp"):
        _, res, _, calls = figures[model]
        added = statistics.median(a - b for a, b in zip(res[MODULE_BACKWARD]["median"], res[DEFAULT]["median"]))
        print("%-11s module_backward adds %.3f ms per step over sample_rate 1: %.2f us per module backward row "
              "(%.1f a step)" % (model + ":", added * 1000, added / max(calls, 1) * 1e6, calls))
    for model in ("transformer", "mlp"):
        per_step, res, _, _ = figures[model]
        added = statistics.median(a - o for a, o in zip(res[DEFAULT]["median"], res["off"]["median"]))
        print("%-11s sample_rate 1 adds %.3f ms per step: %.2f us per traced row (module call; on - off, "
              "median over rounds, / %.1f rows per step)" % (model + ":", added * 1000, added / per_step * 1e6, per_step))
    mlp_row = statistics.median(a - o for a, o in zip(figures["mlp"][1][DEFAULT]["median"],
                                                      figures["mlp"][1]["off"]["median"])) / figures["mlp"][0]
    tr_rows, _, tr_off, _ = figures["transformer"]
    print("transformer at the MLP's cost per row: %.1f rows x %.2f us = %.3f ms, %.1f %% of its step"
          % (tr_rows, mlp_row * 1e6, tr_rows * mlp_row * 1000, 100 * tr_rows * mlp_row / tr_off))
    if not ok_all:
        print("TRACING CHECK FAILED: see the rows per step above")


if __name__ == "__main__":
    main()
