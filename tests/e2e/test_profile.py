"""`probing PID profile`, `top`, the flight recorder and the hang detector, on real targets: a
workload whose functions take known shares of the time (shares.py), one whose thread holds the GIL
in a C call (gil_holder.py), and one that stops on a queue after some steps."""
import ast
import json
import os
import pty
import select
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import PROBING, clean_env, eval_ok, http_request, interpreter_params, run_cli

SHARES = {"busy_a": 50.0, "busy_b": 30.0, "wait_c": 20.0}


def version_of(interp):
    return tuple(int(x) for x in interp.version.split(".")[:2])


def speedscope(pid, tmp_path, *flags, seconds=6):
    out = tmp_path / "run.json"
    rc, _, err = run_cli(pid, "profile", "--seconds", seconds, "-o", out, *flags, timeout=seconds + 30)
    assert rc == 0, (rc, err)
    assert "wrote %s (speedscope)" % out in err, err
    return json.loads(out.read_text())


class TrueShares:
    """The shares shares.py measured itself over a with-block: the truth to compare a profile of
    that time with (a sleep ends late on a busy machine, so 20 % of wait_c becomes 22 %)."""

    def __init__(self, pid):
        self.pid = pid
        self.shares = None

    def _read(self):
        return ast.literal_eval(eval_ok(self.pid, "print(spent())").strip())

    def __enter__(self):
        self.before = self._read()
        return self

    def __exit__(self, *exc):
        after = self._read()
        # (SPENT grows once a round: its rounds are the time to share, not the wall clock's)
        spent = {n: after[n] - self.before[n] for n in SHARES}
        self.shares = {n: 100.0 * v / sum(spent.values()) for n, v in spent.items()}

    def __getitem__(self, name):
        return self.shares[name]


def main_profile(doc):
    mains = [p for p in doc["profiles"] if p["name"].startswith("MainThread")]
    assert len(mains) == 1, [p["name"] for p in doc["profiles"]]
    return mains[0]


def shares_of(doc, names):
    """Percent of the main thread's sampled time spent under each of `names`."""
    frames = doc["shared"]["frames"]
    main = main_profile(doc)
    total = sum(main["weights"])
    assert total > 0
    under = {n: 0.0 for n in names}
    for stack, weight in zip(main["samples"], main["weights"]):
        funcs = {frames[i]["name"] for i in stack}
        for n in names:
            if n in funcs:
                under[n] += weight
    return {n: 100.0 * w / total for n, w in under.items()}, len(main["samples"])


def gecko_shares(doc, names):
    """Percent of the main thread's weight under each of `names`, read back through the Firefox
    Profiler's tables: sample -> stack -> (frame, prefix) ... -> func -> name."""
    strings = doc["shared"]["stringArray"]
    mains = [t for t in doc["threads"] if t["isMainThread"]]
    assert len(mains) == 1, [t["name"] for t in doc["threads"]]
    t = mains[0]
    for table in ("samples", "stackTable", "frameTable", "funcTable"):
        lengths = {k: len(v) for k, v in t[table].items() if isinstance(v, list)}
        assert set(lengths.values()) == {t[table]["length"]}, (table, lengths)
    under, total = {n: 0 for n in names}, 0
    for stack, weight in zip(t["samples"]["stack"], t["samples"]["weight"]):
        funcs = set()
        while stack is not None:
            frame = t["stackTable"]["frame"][stack]
            funcs.add(strings[t["funcTable"]["name"][t["frameTable"]["func"][frame]]])
            stack = t["stackTable"]["prefix"][stack]
        total += weight
        for n in names:
            under[n] += weight if n in funcs else 0
    assert total >= 300, total
    return {n: 100.0 * w / total for n, w in under.items()}


@pytest.mark.parametrize("interp", interpreter_params())
def test_measured_shares_are_within_three_points(interp, target_factory, tmp_path):
    t = target_factory("shares.py", interp)
    with TrueShares(t.pid) as truth:
        doc = speedscope(t.pid, tmp_path, "--idle", "--hz", "200")
    shares, n = shares_of(doc, SHARES)
    assert n >= 600, n  # 6 s at 200 Hz, with room for a busy machine
    for name in SHARES:
        assert abs(shares[name] - truth[name]) <= 3, (name, shares, truth.shares)
    # The idle worker is there with --idle, waiting in the queue.
    assert any(p["name"] != main_profile(doc)["name"] for p in doc["profiles"]), doc["profiles"]


@pytest.mark.parametrize("interp", interpreter_params())
def test_modes_keep_what_they_say(interp, target_factory, tmp_path):
    t = target_factory("shares.py", interp)
    wall = speedscope(t.pid, tmp_path, seconds=3)
    # Without --idle the worker that only waits is left out, and so is the main thread's sleep.
    assert [p["name"] for p in wall["profiles"]] == [main_profile(wall)["name"]]
    gil = speedscope(t.pid, tmp_path, "--gil", seconds=3)
    shares, _ = shares_of(gil, SHARES)
    # time.sleep releases the GIL. A few points remain on a loaded machine: the thread retakes the
    # GIL as the sleep ends and may wait for a CPU while holding it. Were the mode ignored, wait_c
    # would keep its wall-clock share of 20.
    assert shares["wait_c"] <= 8, shares
    if version_of(interp) >= (3, 11):  # on-CPU needs the kernel thread id, which 3.11+ keeps
        cpu = speedscope(t.pid, tmp_path, "--mode", "cpu", seconds=3)
        shares, _ = shares_of(cpu, SHARES)
        assert shares["wait_c"] <= 5, shares
        assert abs(shares["busy_a"] - 62.5) <= 6, shares  # 50 of the 80 on-CPU points


@pytest.mark.parametrize("interp", interpreter_params())
def test_every_format_holds_the_samples(interp, target_factory, tmp_path):
    t = target_factory("shares.py", interp)
    svg = tmp_path / "run.svg"
    rc, _, err = run_cli(t.pid, "profile", "--seconds", "2", "-o", svg, timeout=40)
    assert rc == 0, err
    root = ET.parse(svg).getroot()  # well-formed XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    total = int(root.get("data-total"))
    titles = [g.find("s:title", ns).text for g in root.iter("{http://www.w3.org/2000/svg}g")]
    assert total >= 100 and any(x.startswith("spin_for (") for x in titles), (total, titles[:5])
    assert root.find("s:script", ns) is not None
    assert "http://" not in svg.read_text().replace("http://www.w3.org/2000/svg", "")

    folded = tmp_path / "run.folded"
    rc, _, err = run_cli(t.pid, "profile", "--last", "20s", "-o", folded, timeout=30)
    assert rc == 0, err
    lines = folded.read_text().splitlines()
    assert lines and all(l.rsplit(" ", 1)[1].isdigit() for l in lines), lines[:3]
    assert any("busy_a (" in l and l.startswith("MainThread") for l in lines), lines[:3]

    trace = tmp_path / "run.trace.json"
    rc, _, err = run_cli(t.pid, "profile", "--seconds", "2", "--format", "perfetto", "-o", trace, timeout=40)
    assert rc == 0, err
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert {"step", "busy_a", "busy_b", "spin_for"} <= {e["name"] for e in slices}, slices[:3]
    assert all(e["dur"] > 0 for e in slices)
    assert any(e["ph"] == "M" and e["args"]["name"].startswith("MainThread") for e in events)

    gecko = tmp_path / "run.gecko.json"
    with TrueShares(t.pid) as truth:
        rc, _, err = run_cli(t.pid, "profile", "--seconds", "3", "--hz", "200", "--idle", "-o", gecko,
                             timeout=40)
    assert rc == 0 and "(gecko)" in err, err
    shares = gecko_shares(json.loads(gecko.read_text()), SHARES)
    for name in SHARES:
        assert abs(shares[name] - truth[name]) <= 5, (name, shares, truth.shares)

    rc, out, err = run_cli(t.pid, "profile", "--seconds", "1", timeout=30)  # no -o: a table
    assert rc == 0 and "%OWN %TOTAL" in out and "spin_for (" in out, (out, err)


def test_a_profile_outlasts_the_agents_idle_timeout(interp, target_factory):
    # The agent closes a connection left idle for server.request_timeout_s; a profile longer than
    # that still gets its samples.
    t = target_factory("shares.py", interp, env={"PROBING_SERVER_REQUEST_TIMEOUT_S": "1"})
    rc, out, err = run_cli(t.pid, "profile", "--seconds", "2.5", timeout=40)
    assert rc == 0 and "spin_for (" in out, (rc, out, err)


def sampler_cpu_s(pid):
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() == "probing-sampler":
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    raise AssertionError("no probing-sampler thread")


def test_the_sampler_takes_at_most_a_quarter_of_a_core(interp, target_factory):
    # 101 threads at 1 kHz cannot be read in time: the sampler slows down rather than take a
    # core, and each sample stands for the time it covers.
    t = target_factory("threads100.py", interp)
    cpu0, t0 = sampler_cpu_s(t.pid), time.monotonic()
    rc, out, err = run_cli(t.pid, "profile", "--seconds", "3", "--hz", "1000", "--idle", "--format", "speedscope",
                           timeout=60)
    assert rc == 0, err
    share = (sampler_cpu_s(t.pid) - cpu0) / (time.monotonic() - t0)
    assert share <= 0.35, share
    doc = json.loads(out)
    main = main_profile(doc)
    covered = sum(main["weights"])
    assert 2.0 <= covered <= 4.5, covered  # ~3 s of the main thread, whatever the real rate


def test_a_profile_starts_at_once_with_the_recorder_off(interp, target_factory):
    t = target_factory("shares.py", interp, env={"PROBING_PROFILE_RECORDER_HZ": "0"})
    rc, out, err = run_cli(t.pid, "profile", "--seconds", "1", "--idle", "--format", "speedscope", timeout=30)
    assert rc == 0, err
    assert len(main_profile(json.loads(out))["samples"]) >= 70, out[:300]


@pytest.mark.parametrize("interp", interpreter_params())
def test_samples_are_sql(interp, target_factory):
    t = target_factory("shares.py", interp)
    time.sleep(1.5)  # the recorder samples at 10 Hz from the start
    rc, out, err = run_cli(t.pid, "query", "--format", "json",
                           "SELECT s.func, count(*) AS n FROM python.samples p JOIN python.stacks s "
                           "ON s.stack_id = p.stack_id AND s.depth = 0 GROUP BY 1 ORDER BY 2 DESC")
    assert rc == 0, err
    funcs = {r["func"]: r["n"] for r in json.loads(out)}
    assert "spin_for" in funcs, funcs
    if version_of(interp) >= (3, 11):
        # probing's own threads are never sampled.
        rc, out, err = run_cli(t.pid, "query", "--format", "csv",
                               "SELECT count(*) FROM python.samples p JOIN process.threads t "
                               "ON t.tid = p.native_thread_id WHERE t.name LIKE 'probing-%'")
        assert rc == 0 and out.splitlines()[1] == "0", (out, err)


def test_samples_while_a_thread_holds_the_gil(interp, target_factory, tmp_path):
    # The sampler needs no GIL: a thread that holds it in a C call does not stop the profile,
    # and shows there, holding it.
    t = target_factory("gil_holder.py", interp, args=["20"])
    t.write("hold\n")
    t.wait_line(lambda l: l.startswith("holding "))
    t0 = time.monotonic()
    doc = speedscope(t.pid, tmp_path, "--gil", seconds=2)
    assert time.monotonic() - t0 < 10
    names = [p["name"] for p in doc["profiles"]]
    assert len(names) == 1, names  # only the holder holds the GIL
    frames = doc["shared"]["frames"]
    assert any(frames[s[-1]]["name"] == "hold" for s in doc["profiles"][0]["samples"]), doc["profiles"][0]["samples"][:3]


@pytest.mark.parametrize("interp", interpreter_params())
def test_hang_is_detected_recorded_and_closed(interp, target_factory, tmp_path):
    t = target_factory("shares.py", interp, args=["hang", "40"],
                       env={"PROBING_HANG_AFTER_S": "2", "PROBING_LOG": "info"})
    t.wait_line(lambda l: l == "hung", timeout=30)
    deadline = time.monotonic() + 20
    while True:
        rc, out, err = run_cli(t.pid, "query", "--format", "json", "SELECT * FROM python.hangs")
        assert rc == 0, err
        rows = json.loads(out)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(rows) == 1, rows
    h = rows[0]
    assert h["ended"] is None and h["duration_s"] >= 2, (h, [l for l in t.stderr_lines() if "moved" in l])
    assert h["stack"].splitlines()[-2].startswith("main ("), h["stack"]  # innermost first: <module> last
    assert "get (" in h["stack"], h["stack"]
    assert "step (" in h["before"] and "samples:" in h["before"], h["before"]
    assert "idle_worker (" in h["threads"], h["threads"]
    # The recorder shows the steps before the hang.
    folded = tmp_path / "before.folded"
    rc, _, err = run_cli(t.pid, "profile", "--last", "60s", "--idle", "-o", folded)
    assert rc == 0, err
    assert "busy_a (" in folded.read_text() and "HANG" not in folded.read_text()
    # Moving again closes it.
    rc, out, err = run_cli(t.pid, "eval", "import __main__; __main__.HANG.put(1)")
    assert rc == 0, err
    t.wait_line(lambda l: l == "moving")
    deadline = time.monotonic() + 10
    while True:
        rc, out, err = run_cli(t.pid, "query", "--format", "json", "SELECT ended, duration_s FROM python.hangs")
        rows = json.loads(out)
        if rows[0]["ended"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert rows[0]["ended"] is not None and rows[0]["duration_s"] >= 2, rows
    # The log says what ended it, and where the main thread went (written just after the row closed).
    deadline = time.monotonic() + 5
    while not (moved := [l for l in t.stderr_lines() if "the main thread moved again" in l]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(moved) == 1 and "(python.hangs id 1): the main thread is now in " in moved[0], moved


@pytest.mark.parametrize("interp", interpreter_params())
def test_top_prints_once_to_a_pipe(interp, target_factory):
    t = target_factory("shares.py", interp)
    rc, out, err = run_cli(t.pid, "top", "--seconds", "1", timeout=30)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("probing top: pid %d: " % t.pid), lines[:2]
    assert "%OWN %TOTAL" in lines[1] and "spin_for (" in lines[2], lines[:4]
    assert "\x1b[" not in out  # no terminal codes in a pipe


def pool_with_agents(t):
    """Has tree.py (pool_later, under launch) make its pool once the after-fork hook is in, and
    waits until both workers answer; returns their pids."""
    deadline = time.monotonic() + 30
    while http_request(t.pid, "GET", "/health").json()["subprocesses"] != "on":
        assert time.monotonic() < deadline, "the after-fork hook never went in"
        time.sleep(0.1)
    t.write("\n")
    i = t.wait_line(lambda l: l.startswith("children "))
    workers = [int(p) for p in t.stdout_lines()[i].split()[1:]]
    deadline = time.monotonic() + 30
    while True:
        rc, out, _ = run_cli(t.pid, "children", "--json")
        agents = {p["pid"]: p["agent"] for p in json.loads(out)} if rc == 0 else {}
        if all(agents.get(w) == "yes" for w in workers):
            break
        assert time.monotonic() < deadline, agents
        time.sleep(0.2)
    return workers


def test_subprocesses_profiles_the_workers_too(interp, target_factory, tmp_path):
    # A pool's forked workers get agents under `launch`; --subprocesses puts their threads beside
    # the parent's, each labelled with its process.
    t = target_factory("tree.py", interp, mode="launch", args=["pool_later"])
    workers = pool_with_agents(t)
    trace = tmp_path / "tree.trace.json"
    rc, _, err = run_cli(t.pid, "profile", "--subprocesses", "--idle", "--seconds", "1", "-o", trace, timeout=60)
    assert rc == 0, err
    events = json.loads(trace.read_text())["traceEvents"]
    pids = {e["pid"] for e in events if e["ph"] == "X"}
    assert pids == {t.pid, *workers}, (pids, t.pid, workers)
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names[workers[0]] == "pid %d (fork of %d)" % (workers[0], t.pid), names
    assert any(e["name"] == "slow_task" and e["pid"] == workers[0] for e in events if e["ph"] == "X")
    rc, _, err = run_cli(t.pid, "profile", "--subprocesses", "--last", "30s", "--idle", "-o", tmp_path / "t.folded")
    assert rc == 0, err
    assert "slow_task (" in (tmp_path / "t.folded").read_text()
    # top too: the workers' functions among the parent's, each thread labelled with its process.
    rc, out, err = run_cli(t.pid, "top", "--subprocesses", "--idle", "--seconds", "1", "--rows", "200", timeout=60)
    assert rc == 0, err
    assert "slow_task (" in out and "threads" in out.splitlines()[0], out


def test_subprocesses_profile_outlives_a_worker_that_ends(interp, target_factory, tmp_path):
    # A DataLoader makes new workers each epoch: one that ends mid-profile is left out with a note,
    # and the profile of the others is written.
    t = target_factory("tree.py", interp, mode="launch", args=["pool_later"])
    workers = pool_with_agents(t)
    trace = tmp_path / "tree.trace.json"
    proc = subprocess.Popen([PROBING, str(t.pid), "profile", "--subprocesses", "--idle", "--seconds", "3", "-o",
                             str(trace)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "pid %d (fork of %d) ended while it was profiled" % (workers[0], t.pid) in err, err
    pids = {e["pid"] for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"}
    assert t.pid in pids and workers[1] in pids and workers[0] not in pids, (pids, workers)


def test_top_redraws_in_place_on_a_terminal(interp, target_factory):
    # On a terminal, top redraws the same screen each second (home, lines cleared to their end)
    # until --seconds, then leaves.
    t = target_factory("shares.py", interp)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(PROBING, [PROBING, str(t.pid), "top", "--seconds", "3"], clean_env({"TERM": "xterm"}))
        finally:
            os._exit(127)
    screen = b""
    sessions = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        sessions.add(http_request(t.pid, "GET", "/health").json()["sampler"]["sessions"])
        if not r:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: top ended and closed the terminal
            break
        if not data:
            break
        screen += data
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, screen[-2000:]
    frames = screen.split(b"\x1b[H")
    assert len(frames) >= 3, screen[-2000:]  # the first screen, then a redraw a second
    last = frames[-1].decode("utf-8", "replace")
    assert "probing top: pid %d" % t.pid in last and "%OWN %TOTAL" in last and "spin_for (" in last, last
    assert "\x1b[K" in last and "\x1b[J" in last  # each line, then the rest, cleared: no flicker
    # One session, extended every second: a top holds one of the agent's 16, however long it runs.
    assert max(sessions) == 1, sessions


def test_bad_input_is_refused_clearly(interp, target_factory, tmp_path):
    t = target_factory("shares.py", interp)
    for args, message in [(["--hz", "5000"], "--hz must be above 0 and at most 1000"),
                          (["--seconds", "0"], "--seconds must be above 0"),
                          (["--last", "5x"], "'5x' is not a duration"),
                          (["--last", "5m", "--hz", "10"], "--seconds and --hz do not apply"),
                          (["--format", "pdf"], "unknown format 'pdf'"),
                          (["--mode", "fast"], "--mode is wall, cpu or gil"),
                          (["-o", tmp_path / "run.bin"], "cannot tell the format"),
                          (["--seconds", "1", "-o", tmp_path / "no" / "such" / "dir.svg"], "cannot write")]:
        rc, out, err = run_cli(t.pid, "profile", *args, timeout=30)
        assert rc != 0 and message in err, (args, rc, err)
    # The agent bounds what a client asks for, whatever the client.
    r = http_request(t.pid, "POST", "/profile", {"hz": 100000, "seconds": 1})
    assert r.status == 400 and "at most 1000 Hz" in r.json()["error"]["message"], r
    r = http_request(t.pid, "POST", "/profile", {"hz": 100, "seconds": 1e9})
    assert r.status == 400, r
    r = http_request(t.pid, "GET", "/profile?since=10&until=5")
    assert r.status == 400 and "empty" in r.json()["error"]["message"], r
    r = http_request(t.pid, "GET", "/profile?last=1&mode=fast")
    assert r.status == 400 and "unknown mode" in r.json()["error"]["message"], r
    health = http_request(t.pid, "GET", "/health").json()
    assert health["sampler"]["running"] is True and health["sampler"]["recorder_hz"] == 10, health


LIBC_SLEEPS = {"clock_nanosleep", "__clock_nanosleep", "__nanosleep", "nanosleep", "select", "__select"}


def folded_lines(path):
    out = []
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        out.append((stack.split(";"), int(count)))
    return out


@pytest.mark.parametrize("interp", interpreter_params())
def test_native_frames_are_merged_into_the_profile(interp, target_factory, tmp_path):
    # --native reads each thread from outside (ptrace, libdw): its Python frames in place among
    # the native ones, at its own rate, with shares as true as the agent's.
    t = target_factory("shares.py", interp)
    out = tmp_path / "native.folded"
    with TrueShares(t.pid) as truth:
        rc, _, err = run_cli(t.pid, "profile", "--native", "--idle", "--hz", "100", "--seconds", "4", "-o", out,
                             timeout=60)
    assert rc == 0, err
    assert "stopped for" in err and "ms on average" in err, err
    lines = folded_lines(out)
    assert not any(s[0].startswith("probing-") for s, _ in lines), {s[0] for s, _ in lines}  # the agent's own
    main = [(s, n) for s, n in lines if s[0].startswith("MainThread")]
    total = sum(n for _, n in main)
    assert total >= 200, total  # 4 s at 100 Hz, with room for a busy machine
    for name in SHARES:
        share = 100.0 * sum(n for s, n in main if any(f.startswith(name + " (") for f in s)) / total
        assert abs(share - truth[name]) <= 6, (name, share, truth.shares)
    # time.sleep in wait_c ends in libc's sleep: a native frame inside the Python one (most of
    # the time: a sample may catch the thread on its way in or out).
    in_wait = [(s, n) for s, n in main if any(f.startswith("wait_c (") for f in s)]
    asleep = []
    for stack, n in in_wait:
        funcs = [f.split(" (", 1)[0] for f in stack]
        sleeps = [i for i, f in enumerate(funcs) if f in LIBC_SLEEPS and stack[i].endswith("(libc.so.6)")]
        if sleeps and funcs.index("wait_c") < min(sleeps):
            asleep.append(n)
    assert sum(asleep) >= 0.8 * sum(n for _, n in in_wait), in_wait[:3]


@pytest.mark.parametrize("interp", interpreter_params())
def test_native_gil_mode_keeps_the_holder_asleep_in_c(interp, target_factory, tmp_path):
    # A thread holding the GIL in a C sleep is not on a CPU: --native --gil still stops and reads
    # it (the GIL is read first, without stopping anything), and only it.
    t = target_factory("gil_holder.py", interp, args=["20"])
    t.write("hold\n")
    t.wait_line(lambda l: l.startswith("holding "))
    holder = next(l for l in t.stdout_lines() if l.startswith("holding ")).split()[1]
    out = tmp_path / "gil.folded"
    rc, _, err = run_cli(t.pid, "profile", "--native", "--gil", "--seconds", "2", "-o", out, timeout=40)
    assert rc == 0, err
    lines = folded_lines(out)
    # (The thread started with the GIL held: the agent could not learn its name; the kernel's is used.)
    assert {s[0].split(" (tid ")[1] for s, _ in lines} == {holder + ")"}, lines[:3]
    funcs = [f.split(" (", 1)[0] for f in lines[0][0]]
    assert "hold" in funcs and set(funcs) & LIBC_SLEEPS, funcs


@pytest.mark.parametrize("interp", interpreter_params())
def test_native_needs_no_agent_and_says_what_it_cannot_do(interp, target_factory, tmp_path):
    t = target_factory("shares.py", interp, mode="none")
    rc, out, err = run_cli(t.pid, "profile", "--native", "--seconds", "1", timeout=30)
    assert rc == 0, err
    assert "spin_for (" in out and "no agent answered" in err, (out, err)
    for args, says in ((["--last", "1m"], "recorder keeps Python frames only"),
                       (["--subprocesses"], "not with --subprocesses"),
                       (["--hz", "500"], "at most 100")):
        rc, _, err = run_cli(t.pid, "profile", "--native", *args, timeout=30)
        assert rc == 2 and says in err, (args, rc, err)
    rc, _, err = run_cli("-t", "127.0.0.1:1", "profile", "--native", "--seconds", "1", timeout=30)
    assert rc == 2 and "give its pid" in err, err
