#!/usr/bin/env python3
"""SQL over the agent's store, on 1,000,000 rows shaped like torch_trace rows (1,000 steps of
1,000 rows, ~50 modules, three stages), in one target process:
- fill: the cost of `probing.table(...).append(dict)` from Python, against a `list.append` of the
  same dicts in the same run (target <= 2 us per append);
- GROUP BY module, stage over all rows through the store, against the floor: the same rows in a
  plain in-memory table of Python's own sqlite3 module (same SQLite version as the agent's static
  copy), same query, in the same process (target <= 0.33x the floor: the store groups the rows
  itself, without SQLite's sort);
- the last 5 steps (the filter on `step` pushed into the store's scan), with a sub-query and with
  a constant, and max(step) alone, against the same queries on the plain table, which has no
  index (target <= 10 ms);
- time_bucket('1 minute', time) with percentile(duration, 0.99) over all rows (probing's own SQL
  functions: the store alone);
- memory: the target's RSS before and after the fill, what information_schema.tables says the
  table holds (target <= 16 bytes a row: sealed chunks are encoded, docs/tables.md), the RSS after
  the queries, and a second table capped at 100,000 rows filled with 1,000,000.
Values are as the torch tracer records them: durations in whole nanoseconds, memory as bytes / 2^20.
Times in ms are the agent's elapsed_ms (around the SQL) and the client round trip, medians.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from common import AgentConnection, Target, wait_for_agent

STEPS, PER_STEP = 1000, 1000
TABLE, CAPPED = "torch_trace_bench", "torch_trace_capped"

# The target: starts the agent, says ready, then runs each phase when the bench touches
# $BENCH_DIR/<phase>, and prints `<phase> <json>` when it is done. Rows come from a seeded
# random, one step (1,000 dicts) at a time, so the store and the plain table see the same data.
TARGET = r'''
import json, os, random, sys, time
import probing
probing.init()
D = os.environ["BENCH_DIR"]
STEPS, PER_STEP = %(steps)d, %(per_step)d
MODULES = ["transformer.embed", "lm_head"] + [
    "transformer.layers.%%d.%%s" %% (i, part) for i in range(24) for part in ("attn", "mlp")]
COLS = ("step", "seq", "module", "stage", "duration", "allocated", "max_allocated", "time")

def steps(seed=1234):
    rng = random.Random(seed)
    t = 1.7e9
    for step in range(STEPS):
        rows = []
        for seq in range(PER_STEP):
            stage = "forward" if seq < 480 else "backward" if seq < 960 else "step"
            # As the tracer records them: whole nanoseconds, bytes as MiB, unix time as it comes.
            alloc = rng.randrange(200_000, 8_000_000) * 512  # CUDA's allocator rounds to 512 bytes
            t += rng.uniform(0.0, 0.002)
            rows.append({"step": step, "seq": seq, "module": MODULES[rng.randrange(len(MODULES))],
                         "stage": stage, "duration": round(rng.expovariate(1000.0) * 1e9) / 1e9,
                         "allocated": alloc / 1048576, "max_allocated": (alloc + rng.randrange(1 << 21) * 512) / 1048576,
                         "time": t})
        yield rows

def wait(phase):
    while not os.path.exists(os.path.join(D, phase)):
        time.sleep(0.01)

def report(phase, obj):
    print(phase, json.dumps(obj), flush=True)

def fill(table):
    app = table.append
    t_probe = t_list = 0.0
    n = 0
    for i, rows in enumerate(steps()):
        lst = []
        la = lst.append
        # alternate which loop goes first, so neither always gets the warm cache
        for which in ((0, 1) if i %% 2 == 0 else (1, 0)):
            if which == 0:
                t0 = time.perf_counter()
                for r in rows:
                    app(r)
                t_probe += time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                for r in rows:
                    la(r)
                t_list += time.perf_counter() - t0
        n += len(rows)
    return {"n": n, "probe_s": t_probe, "list_s": t_list}

print("ready", flush=True)

wait("fill")
report("fill", fill(probing.table("%(table)s", max_rows=2_000_000, max_bytes=512 << 20)))

wait("floor")
import sqlite3
db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE t(step INTEGER, seq INTEGER, module TEXT, stage TEXT, duration REAL, "
           "allocated REAL, max_allocated REAL, time REAL)")
t0 = time.perf_counter()
for rows in steps():
    db.executemany("INSERT INTO t VALUES (?,?,?,?,?,?,?,?)", [tuple(r[c] for c in COLS) for r in rows])
db.commit()
out = {"sqlite_version": sqlite3.sqlite_version, "insert_s": time.perf_counter() - t0, "queries": {}}
for name, sql in json.loads(os.environ["BENCH_QUERIES"]).items():
    sql = sql.replace("python.%(table)s", "t")
    times, result = [], None
    for _ in range(int(os.environ["BENCH_REPEAT"])):
        t0 = time.perf_counter()
        result = db.execute(sql).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    out["queries"][name] = {"ms": times, "rows": result}
report("floor", out)

wait("cap")
capped = probing.table("%(capped)s", max_rows=100_000, max_bytes=512 << 20)
report("cap", fill(capped))
while True:
    time.sleep(1)
''' % {"steps": STEPS, "per_step": PER_STEP, "table": TABLE, "capped": CAPPED}

QUERIES = {
    "group by, all rows": "SELECT module, stage, avg(duration), count(*) FROM python.%s GROUP BY module, stage" % TABLE,
    "last 5 steps (sub-query)": (
        "SELECT module, stage, avg(duration) AS avg_time FROM python.%s "
        "WHERE step > (SELECT max(step) - 5 FROM python.%s) "
        "GROUP BY module, stage ORDER BY avg_time DESC LIMIT 10" % (TABLE, TABLE)),
    "last 5 steps (step > 994)": (
        "SELECT module, stage, avg(duration) AS avg_time FROM python.%s WHERE step > 994 "
        "GROUP BY module, stage ORDER BY avg_time DESC LIMIT 10" % TABLE),
    "max(step)": "SELECT max(step) FROM python.%s" % TABLE,
}
TARGETS_MS = {"last 5 steps (sub-query)": 10.0}
# probing's own SQL functions, which the plain table's sqlite3 lacks: timed on the store alone.
STORE_ONLY = {
    "time_bucket + percentile": (
        "SELECT time_bucket('1 minute', time) AS t, percentile(duration, 0.99) AS p99, count(*) "
        "FROM python.%s GROUP BY t ORDER BY t" % TABLE),
}


def verdict(value, target):
    return "PASS" if value <= target else "OVER (%.1fx the target)" % (value / target)


class Bench:
    def __init__(self, target, conn, d):
        self.t, self.conn, self.d = target, conn, d

    def query(self, sql):
        try:
            self.conn.request("GET", "/health")
        except OSError:  # the agent closes a keep-alive connection left idle during a long phase
            self.conn.close()
            self.conn = AgentConnection(self.t.pid, timeout=120)
        t0 = time.perf_counter()
        status, body = self.conn.request("POST", "/query", {"sql": sql})
        rt = (time.perf_counter() - t0) * 1000
        reply = json.loads(body)
        assert status == 200, (status, body[:300])
        return reply, rt

    def value(self, sql):
        return self.query(sql)[0]["rows"][0]

    def phase(self, name):
        open(os.path.join(self.d, name), "w").close()
        while True:
            line = self.t.proc.stdout.readline()
            if not line:
                raise RuntimeError("the target died in phase %s" % name)
            head, _, rest = line.partition(" ")
            if head == name:
                return json.loads(rest)

    def table_info(self, name):
        return self.value("SELECT rows, bytes, dropped_rows FROM information_schema.tables "
                          "WHERE table_schema = 'python' AND table_name = '%s'" % name)


def same_rows(a, b):
    if len(a) != len(b):
        return False
    for ra, rb in zip(sorted(map(tuple, a)), sorted(map(tuple, b))):
        for x, y in zip(ra, rb):
            if isinstance(x, float) or isinstance(y, float):
                if abs(x - y) > 1e-9 * max(1.0, abs(x), abs(y)):
                    return False
            elif x != y:
                return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=5, help="runs of each query")
    args = ap.parse_args()
    pydir = os.path.join(os.path.abspath(args.build), "lib", "probing", "python")
    d = tempfile.mkdtemp(prefix="probing-bench-sql-")
    env = {"PYTHONPATH": pydir, "BENCH_DIR": d, "BENCH_QUERIES": json.dumps(QUERIES), "BENCH_REPEAT": str(args.n)}
    try:
        with Target(TARGET, env=env) as t:
            wait_for_agent(t.pid)
            b = Bench(t, AgentConnection(t.pid, timeout=120), d)
            run(b, args.n)
            b.conn.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(b, n):
    rows_total = STEPS * PER_STEP
    agent_version = b.value("SELECT sqlite_version()")[0]
    rss0 = b.value("SELECT rss_mb FROM process.memory")[0]

    t0 = time.perf_counter()
    fill = b.phase("fill")
    fill_wall = time.perf_counter() - t0
    rss1 = b.value("SELECT rss_mb FROM process.memory")[0]
    kept, nbytes, dropped = b.table_info(TABLE)

    store = {}
    for name, sql in list(QUERIES.items()) + list(STORE_ONLY.items()):
        b.query(sql)  # warm up
        agent, rt, rows = [], [], None
        for _ in range(n):
            reply, ms = b.query(sql)
            agent.append(reply["elapsed_ms"])
            rt.append(ms)
            rows = reply["rows"]
            assert not reply.get("truncated"), name
        store[name] = (statistics.median(agent), statistics.median(rt), rows)

    rss_q, peak_q = b.value("SELECT rss_mb, peak_rss_mb FROM process.memory")

    floor = b.phase("floor")
    rss_f = b.value("SELECT rss_mb FROM process.memory")[0]
    cap = b.phase("cap")
    ckept, cbytes, cdropped = b.table_info(CAPPED)
    rss2 = b.value("SELECT rss_mb FROM process.memory")[0]

    us_probe = fill["probe_s"] / fill["n"] * 1e6
    us_list = fill["list_s"] / fill["n"] * 1e6
    print("SQL over the store, %d rows (%d steps x %d), one target (/usr/bin/python3.11), median of %d"
          % (rows_total, STEPS, PER_STEP, n))
    print("SQLite: agent %s, Python's sqlite3 %s%s" % (agent_version, floor["sqlite_version"],
                                                     "" if agent_version == floor["sqlite_version"] else "  (DIFFER)"))
    print()
    print("fill (%d appends, %.1f s wall with row generation)" % (fill["n"], fill_wall))
    print("  %-34s %8.3f us" % ("Table.append", us_probe))
    print("  %-34s %8.3f us   ratio %.1f   target <= 2 us: %s"
          % ("list.append (baseline)", us_list, us_probe / us_list, verdict(us_probe, 2.0)))
    print("  %-34s %8.3f us" % ("floor: sqlite3 executemany, per row", floor["insert_s"] / rows_total * 1e6))
    print()
    print("queries (ms)                  store agent  store trip   plain sqlite   store/plain  target")
    for name, (agent, rt, rows) in store.items():
        if name in STORE_ONLY:
            print("  %-27s %11.2f %11.2f %14s %13s  -  (%d buckets)" % (name, agent, rt, "-", "-", len(rows)))
            continue
        fl = floor["queries"][name]
        fms = statistics.median(fl["ms"])
        if name == "group by, all rows":
            target = verdict(agent / fms, 0.33) + " (<= 0.33x)"
        elif name in TARGETS_MS:
            target = verdict(agent, TARGETS_MS[name]) + " (<= %g ms)" % TARGETS_MS[name]
        else:
            target = "-"
        same = "" if same_rows(rows, fl["rows"]) else "  RESULTS DIFFER from plain sqlite"
        print("  %-27s %11.2f %11.2f %14.2f %13.2f  %s%s" % (name, agent, rt, fms, agent / fms, target, same))
    print()
    print("memory")
    print("  %-34s %8.1f MB" % ("RSS before fill", rss0))
    print("  %-34s %8.1f MB   (+%.1f MB, %.1f bytes/row)" % ("RSS after fill", rss1, rss1 - rss0,
                                                            (rss1 - rss0) * 1048576 / rows_total))
    print("  %-34s %8d rows %.1f MB (%.1f bytes/row), dropped %d   target <= 16 bytes/row: %s"
          % ("python.%s" % TABLE, kept, nbytes / 1048576, nbytes / max(1, kept), dropped,
             verdict(nbytes / max(1, kept), 16.0)))
    print("  %-34s %8.1f MB   (peak so far %.1f MB)" % ("RSS after the store queries", rss_q, peak_q))
    print("  %-34s %8.1f MB   (+%.1f MB)" % ("RSS with the plain sqlite table", rss_f, rss_f - rss_q))
    print("  %-34s %8.1f MB   (+%.1f MB)" % ("RSS with the capped table too", rss2, rss2 - rss_f))
    print("  %-34s %8d rows %.1f MB, dropped %d   kept <= 100000: %s"
          % ("max_rows=100000, 1M appended", ckept, cbytes / 1048576, cdropped,
             "PASS" if ckept <= 100000 and ckept + cdropped == cap["n"] else "FAIL"))
    print("  %-34s %8.3f us" % ("Table.append on the capped table", cap["probe_s"] / cap["n"] * 1e6))


if __name__ == "__main__":
    main()
