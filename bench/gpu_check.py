#!/usr/bin/env python3
"""The torch tracer's CUDA path, end to end on a GPU, in under five minutes: run it whenever a
machine with one is available, and record what it prints in docs/performance.md. (CI and the
tests have no GPU: there, tests/e2e/targets/fake_gpu.py stands in for torch.cuda.)

One target (agent preloaded) trains the small transformer of the torch benches on cuda:0 with
Adam, and runs blocks of steps when asked on its stdin:
- `off` and `on`: eager steps with torch.trace off and on, alternated over rounds; the overhead
  of tracing is the median of each round's on/off ratio of median step times;
- `graph`: the same step captured once into a CUDA graph (torch.cuda.graph, static input and
  target, the optimizer stepped inside the capture with capturable Adam) and then replayed, with
  tracing on: the capture must succeed (an event recorded while capturing would fail it) and the
  replays must run.
Then python.torch_trace is read back: rows of the eager steps timed by CUDA events (every
duration > 0, the forward rows' self time no more than their duration), the allocator read on
the model's forward, backward and step rows only, and no row from the captured step.
Prints a table of the figures and PASS or FAIL per check; exits 1 on any FAIL, 0 with a note
when there is no GPU.
"""

import argparse
import json
import statistics
import sys
import time

from common import TRANSFORMER, AgentConnection, StdinTarget, build_paths, wait_for_agent

TARGET = TRANSFORMER + r'''
if not torch.cuda.is_available():
    print("ready", flush=True)
    print(json.dumps({"cuda": False}), flush=True)
    sys.exit(0)
dev = torch.device("cuda:0")
model = Transformer().to(dev)
x = torch.randint(0, VOCAB, (BATCH * 8, SEQ), device=dev)
y = torch.randint(0, VOCAB, (BATCH * 8, SEQ), device=dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=True)

def step():
    opt.zero_grad(set_to_none=False)
    loss = nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
    loss.backward()
    opt.step()

def timed(k):
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times

graph = None
print("ready", flush=True)
print(json.dumps({"cuda": True, "torch": torch.__version__, "device": torch.cuda.get_device_name(0)}), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "block":  # block SETTLE K
        timed(int(cmd[1]))
        print(json.dumps({"times": timed(int(cmd[2]))}), flush=True)
    elif cmd[0] == "graph":  # graph K: capture once (after warm-up on a side stream), replay K times
        try:
            if graph is None:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
            times = []
            for _ in range(int(cmd[1])):
                t0 = time.perf_counter()
                graph.replay()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            print(json.dumps({"times": times}), flush=True)
        except Exception as e:
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
'''


def query(pid, sql):
    """On a connection of its own: the agent closes one left idle while a block runs."""
    conn = AgentConnection(pid, timeout=60)
    try:
        status, body = conn.request("POST", "/query", {"sql": sql})
    finally:
        conn.close()
    assert status == 200, (status, body[:300])
    return json.loads(body)


def rows(pid, sql):
    reply = query(pid, sql)
    return [dict(zip(reply["columns"], r)) for r in reply["rows"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per block")
    args = parser.parse_args()
    paths = build_paths(args.build)
    with StdinTarget(TARGET, env={"LD_PRELOAD": paths["library"]}) as t:
        info = json.loads(t.proc.stdout.readline())
        if not info["cuda"]:
            print("gpu_check: no CUDA device here: nothing to check (run it on a machine with a GPU)")
            return 0
        wait_for_agent(t.pid)

        def ask(line):
            t.proc.stdin.write(line + "\n")
            t.proc.stdin.flush()
            return json.loads(t.proc.stdout.readline())

        def set_trace(on):
            query(t.pid, "SET torch.trace = %s" % ("on" if on else "off"))
            time.sleep(1.0)  # applied by the agent's torch thread within half a second

        ratios, medians = [], {"off": [], "on": []}
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            block = {}
            for name in order:
                set_trace(name == "on")
                block[name] = statistics.median(ask("block 5 %d" % args.steps)["times"])
                medians[name].append(block[name])
            ratios.append(block["on"] / block["off"])
        set_trace(True)
        before = rows(t.pid, "SELECT max(step) AS s FROM python.torch_trace")[0]["s"] or 0
        graphed = ask("graph %d" % args.steps)
        time.sleep(1.0)
        after = rows(t.pid, "SELECT count(*) AS n FROM python.torch_trace WHERE step > %d" % before)[0]["n"]
        eager = rows(t.pid, "SELECT module, stage, duration, self_duration, allocated FROM python.torch_trace "
                           "WHERE step > (SELECT max(step) - 10 FROM python.torch_trace WHERE step <= %d) "
                           "AND step <= %d" % (before, before))

    checks = []
    def check(name, ok, detail):
        checks.append((name, ok, detail))

    print("gpu_check: %s, torch %s, %d rounds of %d steps" % (info["device"], info["torch"], args.rounds, args.steps))
    print("| setting | median step ms |")
    print("|---|---|")
    for name in ("off", "on"):
        print("| tracing %s | %.3f |" % (name, statistics.median(medians[name]) * 1000))
    overhead = (statistics.median(ratios) - 1) * 100
    print("tracing overhead: %+.2f %% (median of %d rounds' on/off ratios)" % (overhead, len(ratios)))
    check("eager rows timed by CUDA events", bool(eager) and all((r["duration"] or 0) > 0 for r in eager),
          "%d rows" % len(eager))
    forward = [r for r in eager if r["stage"] == "forward"]
    check("self time within duration", all(r["self_duration"] is not None and
                                           r["self_duration"] <= r["duration"] + 1e-9 for r in forward),
          "%d forward rows" % len(forward))
    with_memory = {(r["module"], r["stage"]) for r in eager if r["allocated"] is not None}
    check("allocator read on the top rows only", len(with_memory) == 3, sorted(with_memory))
    check("capture succeeded with tracing on", "times" in graphed, graphed.get("error", "%d replays" % len(graphed.get("times", []))))
    if "times" in graphed:
        print("graph replay: %.3f ms a step" % (statistics.median(graphed["times"]) * 1000))
    check("no row from the captured step", after == 0, "%d rows" % after)
    for name, ok, detail in checks:
        print("%s  %s (%s)" % ("PASS" if ok else "FAIL", name, detail))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
