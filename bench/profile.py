#!/usr/bin/env python3
"""What the sampling profiler costs a training loop, in one target process (the agent preloaded,
torch.set_num_threads(1), CPU, torch tracing off so that only the sampler differs), and how
close its shares are to the truth.

Cost. The small transformer of bench/torch_overhead.py trains; each round runs one block of K
timed steps per setting, the order reversed every other round:
- none: profile.recorder_hz 0, no profile: the sampler sleeps;
- recorder: the flight recorder alone at 10 Hz (the default, always on);
- profile 100 Hz and profile 1000 Hz: a `POST /profile` session over the block;
- native 20 Hz and native 100 Hz: `probing PID profile --native` over the block, reading every
  thread from outside (its "sampler CPU" is the CLI's).
A setting's overhead is its block's median step time against the `none` block of the same round,
median over rounds. The sampler thread's CPU time per second of each block is given too: on a
machine with a spare core it is what the profiler costs, whatever the step time says.

Accuracy. A workload whose main thread spends 50 % / 30 % / 20 % of each 100 ms round in three
functions (two computing, one asleep) is profiled at 100 Hz with --idle; the shares measured are
compared with the truth.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import PYTHON, TRANSFORMER, AgentConnection, build_paths, wait_for_agent

TARGET = TRANSFORMER + r'''
model = Transformer()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randint(0, VOCAB, (BATCH, SEQ))
y = torch.randint(0, VOCAB, (BATCH, SEQ))

def step():
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
    loss.backward()
    opt.step()

for _ in range(20):
    step()
print("ready", flush=True)
for line in sys.stdin:
    k = int(line)
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
'''

SETTINGS = ("none", "recorder", "profile 100 Hz", "profile 1000 Hz", "native 20 Hz", "native 100 Hz")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sampler_cpu_s(pid):
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() != "probing-sampler":
                    continue
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return 0.0


class Bench:
    def __init__(self, proc, probing):
        self.proc = proc
        self.probing = probing
        self.conn = AgentConnection(proc.pid)

    def sql(self, sql):
        status, reply = self.conn.request("POST", "/query", {"sql": sql})
        assert status == 200, reply[:300]

    def block(self, setting, k, step_s):
        self.sql("SET profile.recorder_hz = %d" % (0 if setting == "none" else 10))
        if setting.startswith("profile"):
            hz = int(setting.split()[1])
            status, reply = self.conn.request("POST", "/profile", {"hz": hz, "seconds": k * step_s * 3 + 2})
            assert status == 200, reply
        native = None
        if setting.startswith("native"):  # the CLI samples from outside, stopping each thread it reads
            native = subprocess.Popen([self.probing, str(self.proc.pid), "profile", "--native", "--hz",
                                       setting.split()[1], "--seconds", "3600", "--format", "folded", "-o",
                                       os.devnull], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.6 if native is None else 1.5)  # the sampler reads its settings every 0.5 s
        sampler = (lambda: cpu_s(native.pid)) if native else (lambda: sampler_cpu_s(self.proc.pid))
        cpu0, t0 = sampler(), time.monotonic()
        self.proc.stdin.write("%d\n" % k)
        self.proc.stdin.flush()
        times = json.loads(self.proc.stdout.readline())
        cpu = (sampler() - cpu0) / (time.monotonic() - t0)
        if native is not None:
            native.send_signal(signal.SIGINT)  # stops early, writes its file and leaves
            native.wait(30)
        # A session cannot be cut short: wait it out, at the recorder's rate meanwhile.
        if setting.startswith("profile"):
            self.sql("SET profile.recorder_hz = 0")
        return statistics.median(times), cpu


def cost(build, rounds, k):
    lib = build_paths(build)["library"]
    env = dict(os.environ, LD_PRELOAD=lib, PROBING_TORCH="off")
    proc = subprocess.Popen([PYTHON, "-u", "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        wait_for_agent(proc.pid)
        b = Bench(proc, build_paths(build)["probing"])
        step_s, _ = b.block("none", k, 0.05)
        res = {s: [] for s in SETTINGS}
        cpu = {s: [] for s in SETTINGS}
        for r in range(rounds):
            order = SETTINGS if r % 2 == 0 else tuple(reversed(SETTINGS))
            for s in order:
                med, c = b.block(s, k, step_s)
                res[s].append(med)
                cpu[s].append(c)
                if s.startswith("profile"):
                    time.sleep(k * step_s * 3 + 2.5)  # let the session end before the next block
        print("cost: the small transformer (torch 1.13, 1 thread), %d rounds of %d steps, step %.1f ms"
              % (rounds, k, 1e3 * statistics.median(res["none"])))
        print("  %-16s %10s %10s %16s" % ("setting", "step ms", "overhead", "sampler CPU"))
        out = {}
        for s in SETTINGS:
            ovh = statistics.median(100.0 * (a / n - 1) for a, n in zip(res[s], res["none"]))
            out[s] = ovh
            print("  %-16s %10.2f %+9.2f%% %14.2f%%" % (s, 1e3 * statistics.median(res[s]), ovh,
                                                        100 * statistics.median(cpu[s])))
        return out
    finally:
        proc.kill()
        proc.wait()


def accuracy(build):
    probing = build_paths(build)["probing"]
    target = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "e2e", "targets",
                          "shares.py")
    env = dict(os.environ, LD_PRELOAD=build_paths(build)["library"])
    proc = subprocess.Popen([PYTHON, target], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pid = proc.pid
        wait_for_agent(pid)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run.json")
            r = subprocess.run([probing, str(pid), "profile", "--seconds", "10", "--hz", "100", "--idle", "-o", out],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError("probing profile failed: " + r.stderr)
            doc = json.load(open(out))
        frames = doc["shared"]["frames"]
        main = [p for p in doc["profiles"] if p["name"].startswith("MainThread")][0]
        total = sum(main["weights"])
        print("accuracy: shares.py profiled 10 s at 100 Hz with --idle (%d samples of the main thread)"
              % len(main["samples"]))
        worst = 0.0
        for name, truth in (("busy_a", 50.0), ("busy_b", 30.0), ("wait_c", 20.0)):
            got = 100.0 * sum(w for s, w in zip(main["samples"], main["weights"])
                              if name in {frames[i]["name"] for i in s}) / total
            worst = max(worst, abs(got - truth))
            print("  %-8s truth %5.1f %%  measured %5.1f %%  (%+.1f points)" % (name, truth, got, got - truth))
        return worst
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--k", type=int, default=60, help="timed steps per block")
    args = ap.parse_args()
    print("machine: %d CPUs, load %.2f; python %s" % (os.cpu_count(), os.getloadavg()[0], PYTHON))
    worst = accuracy(args.build)
    ovh = cost(args.build, args.rounds, args.k)
    ok = worst <= 3 and ovh["profile 100 Hz"] <= 1 and ovh["recorder"] <= 0.2
    print("targets: shares within 3 points (%.1f); profile 100 Hz <= 1 %% (%+.2f %%); recorder <= 0.2 %% (%+.2f %%): %s"
          % (worst, ovh["profile 100 Hz"], ovh["recorder"], "PASS" if ok else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
