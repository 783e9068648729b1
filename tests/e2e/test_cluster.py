"""probing cluster: every rank of a job at once (docs/cluster.md).

An 8-rank DDP job (gloo, CPU) under torchrun, started with `probing launch` so that every rank and
the launcher get an agent, and PROBING_PORT so that rank 0's agent serves the job's registry. One
rank stalls on a queue; `cluster backtrace` must show the 7 and the 1; `cluster query` must answer
for 8 ranks with _rank; a killed rank must be shown dead, not left out. A job of plain processes
with the launcher's variables (no torch) covers the ranks found by their pids alone, and the rights.
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import (PROBING, PYPKG, TARGETS, browser_missing, clean_env, eval_ok, marker_line, run_cli,
                      start_ui, torch_interpreter_params, ui_check)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def free_port_range(n):
    """A base port with the n ports from it free on loopback."""
    for _ in range(50):
        base = random.randrange(20000, 50000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no %d free ports in a row on loopback" % n)


class Job:
    """A process group started with start_new_session; killed whole at the end."""

    def __init__(self, cmd, env, log):
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for(self, predicate, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate(self.text()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        # The ranks' own lines (torchrun prefixes them [defaultN]:) say why they failed.
        ranks = "\n".join(l for l in self.text().splitlines() if l.startswith("[default"))
        pytest.fail("%s: not within %s s (rc %s); the ranks' output:\n%s\nthe log's end:\n%s"
                    % (what, timeout, self.proc.poll(), ranks[-6000:], self.text()[-2000:]))

    def kill(self):
        # PyTorch 2's torchrun starts each rank in a session of its own: killing the group leaves
        # them running (and training, every rank being there). Each process below is killed too.
        below = descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self.log.close()


def children_pids(pid):
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:  # gone
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def descendants(pid):
    out = []
    todo = [pid]
    while todo:
        kids = children_pids(todo.pop())
        out += kids
        todo += kids
    return out


def rank_pids(launcher_pid):
    """rank -> pid of the processes below the launcher with RANK in their environment."""
    out = {}
    for pid in [launcher_pid] + descendants(launcher_pid):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if b"RANK" in env and b"LOCAL_RANK" in env:
            out[int(env[b"RANK"])] = pid
    return out


def table_rows(text):
    """The rows of a printed table as lists of stripped cells."""
    lines = [l for l in text.splitlines() if " | " in l or "-+-" in l]
    return [[c.strip() for c in l.split("|")] for l in lines[2:]] if len(lines) > 2 else []


# scripts/torchrun.py: torchrun for Debian's PyTorch 2 (no libuv); 1.13's torchrun on 3.11 needs
# a redirect other than 0 (its enum of them lost 0).
TORCHRUN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "scripts", "torchrun.py")


def ddp_job(interp, log, env, nproc, master_port, prefix=(), torchrun_args=()):
    """torchrun over targets/ddp_train.py under `probing launch` (after `prefix`), each rank with
    a heartbeat every second."""
    env = clean_env(dict({"PROBING_CLUSTER_HEARTBEAT_S": "1", "PYTHONDONTWRITEBYTECODE": "1",
                          # Debian's torch 2.x has no libuv, which torchrun's store asks for by default.
                          "USE_LIBUV": "0"}, **env))
    cmd = [*prefix, PROBING, "launch", "--", interp.path, TORCHRUN, "--redirects", "1", "--tee", "1",
           *torchrun_args, "--nproc_per_node", str(nproc), "--master_port", str(master_port),
           os.path.join(TARGETS, "ddp_train.py")]
    return Job(cmd, env, log)


def wait_for_steps(job, ranks, what):
    job.wait_for(lambda t: len(set(re.findall(r"rank (\d+) step 1", t))) == ranks, 240, what)


def listed_agents(out):
    """pid -> the fields of its line in `probing list`."""
    return {int(l.split()[0]): l.split() for l in out.splitlines()[1:] if l.split() and l.split()[0].isdigit()}


def check_the_jobs_page(pids, tmp_path):
    """`probing cluster -t RANK ui`: its Cluster page shows the 8 ranks, who answered, and the stalled
    rank apart from the 7 (in Chromium; on the host, which has the browser)."""
    if os.environ.get("PROBING_E2E_INTERPRETERS"):
        return  # the page is the CLI's and the agent's: checked once, on the host
    missing = browser_missing("playwright-core")
    if missing:
        assert os.environ.get("PROBING_BROWSER_REQUIRED") != "1", missing
        print("the job's page not checked: " + missing)
        return
    ui, url = start_ui("cluster", "-t", pids[0], "ui")
    try:
        shown = ui_check(url, tmp_path)
    finally:
        ui.kill()
    c = shown["pages"]["cluster"]
    assert [t["text"].split("running")[0] for t in c["ranks"]] == [str(r) for r in range(8)], c
    assert "8/8 ranks answered" in c["text"], c["text"]
    assert any(g.startswith("ranks 0-2,4-7 (7)") for g in c["groups"]), c["groups"]
    assert any(g.startswith("rank 3 (1)") for g in c["groups"]), c["groups"]
    assert shown["errors"] == [], shown["errors"]


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_ddp_job_of_8_ranks(interp, tmp_path):
    base = free_port_range(9)
    master_port = free_port_range(1)
    stall = tmp_path / "stall"
    job = ddp_job(interp, str(tmp_path / "job.log"),
                  {"PROBING_PORT": str(base), "STALL_FILE": str(stall), "STALL_RANK": "3"}, 8, master_port)
    try:
        wait_for_steps(job, 8, "8 ranks training")
        pids = rank_pids(job.proc.pid)
        assert sorted(pids) == list(range(8)), pids

        # nodes, from a rank's pid: all 8 running, each with its pid.
        rc, out, err = run_cli("cluster", "-t", pids[5], "nodes", timeout=60)
        assert rc == 0, err
        rows = table_rows(out)
        assert [int(r[0]) for r in rows] == list(range(8)), out
        assert all(r[4] == "running" for r in rows), out
        assert [int(r[3]) for r in rows] == [pids[r] for r in range(8)], out
        assert {r[2] for r in rows} == {"unix"}, out  # this host's ranks, over their unix sockets
        assert "8/8 ranks answered" in err

        # The launcher (torchrun's Python) has an agent, but not a rank's port.
        # (`probing launch` runs torchrun in its own process.)
        rc, out, err = run_cli("list")
        listed = listed_agents(out)
        assert job.proc.pid in listed and "torchrun.py" in " ".join(listed[job.proc.pid]), out
        assert listed[job.proc.pid][2] == "-", out
        assert [listed[pids[r]][2] for r in range(8)] == ["127.0.0.1:%d" % (base + r) for r in range(8)], out

        # query over TCP, through the registry (rank 0's agent), from rank 6's address.
        # (A rank's tracer starts a moment after its first step: wait for every rank's rows.)
        deadline = time.time() + 60
        while True:
            rc, out, err = run_cli("cluster", "-t", "127.0.0.1:%d" % (base + 6), "query",
                                   "SELECT _rank, max(step) AS steps FROM python.torch_trace GROUP BY _rank",
                                   timeout=60)
            assert rc == 0, err
            rows = table_rows(out)
            # (Rows before a rank's first optimizer step are step 0.)
            if (len(rows) == 8 and all(int(r[1]) >= 1 for r in rows)) or time.time() > deadline:
                break
            time.sleep(1)
        assert [c.strip() for c in out.splitlines()[0].split("|")] == ["_rank", "steps", "_host"], out
        assert sorted(int(r[0]) for r in rows) == list(range(8)), out
        assert all(int(r[1]) >= 1 for r in rows), out
        assert "8/8 ranks answered" in err

        # Stall rank 3: the others wait for it in the all-reduce.
        stall.write_text("")
        deadline = time.time() + 60
        while True:
            rc, out, err = run_cli("cluster", "-t", pids[0], "backtrace", timeout=60)
            assert rc == 0, err
            if re.search(r"^ranks 0-2,4-7 \(7\)", out, re.M) and re.search(r"^rank 3 \(1\)", out, re.M):
                break
            assert time.time() < deadline, "no 7 + 1 grouping within 60 s:\n" + out
            time.sleep(1)
        one = out[out.index("\nrank 3 (1)"):]
        assert "wait_for_batch" in one and "Queue.get" in one, out
        seven = out[out.index("ranks 0-2,4-7 (7)"):out.index("\nrank 3 (1)")]
        assert "backward" in seven and "wait_for_batch" not in seven, out
        assert re.search(r"read within \d+ ms", out), out
        check_the_jobs_page(pids, tmp_path)
        # --native: the same two groups, with the C++ frames they wait in.
        rc, out, err = run_cli("cluster", "-t", pids[0], "backtrace", "--native", timeout=120)
        assert rc == 0, err
        assert re.search(r"^ranks 0-2,4-7 \(7\)", out, re.M) and re.search(r"^rank 3 \(1\)", out, re.M), out
        assert re.search(r"\(\S*libtorch\S*\.so[.0-9]*\)$", out, re.M), out  # a frame of torch's C++

        # The straggler query runs on each rank; the global ORDER BY ... LIMIT on the merge.
        rc, out, err = run_cli("cluster", "-t", pids[1], "query", "--explain",
                               "SELECT _rank, count(*) AS n FROM python.torch_trace WHERE stage = 'forward' "
                               "GROUP BY _rank ORDER BY n DESC, _rank LIMIT 3", timeout=60)
        assert rc == 0, err
        assert "ran on each rank" in err
        rows = table_rows(out)
        assert len(rows) == 3 and [int(r[1]) for r in rows] == sorted((int(r[1]) for r in rows), reverse=True), out

        # An aggregate over every rank runs here; it equals the sum of the per-rank counts.
        rc, out, err = run_cli("cluster", "-t", pids[1], "query", "--format", "csv",
                               "SELECT _rank, count(*) FROM python.torch_trace WHERE stage = 'step' GROUP BY _rank",
                               timeout=60)
        assert out.splitlines()[0] == "_rank,count(*),_host", out
        per_rank = sum(int(l.split(",")[1]) for l in out.splitlines()[1:])
        rc, out, err = run_cli("cluster", "-t", pids[1], "query", "--format", "csv", "--explain",
                               "SELECT count(*) FROM python.torch_trace WHERE stage = 'step'", timeout=60)
        assert rc == 0, err
        assert "ran here" in err, err
        assert int(out.splitlines()[1]) == per_rank, (out, per_rank)

        # eval on two ranks.
        rc, out, err = run_cli("cluster", "-t", pids[2], "eval", "--ranks", "0,3",
                               "import os; print('rank', os.environ['RANK'])", timeout=60)
        assert rc == 0, err
        assert "== rank 0 (1)\nrank 0\n" in out and "== rank 3 (1)\nrank 3\n" in out, out
        assert "2/2 ranks answered" in err

        # A rank killed (its launcher stopped, so it does not tear the job down first) is dead.
        os.kill(job.proc.pid, signal.SIGSTOP)
        for p in children_pids(job.proc.pid):
            if p not in pids.values():
                os.kill(p, signal.SIGSTOP)  # torchrun's own process
        os.kill(pids[5], signal.SIGKILL)
        time.sleep(0.5)
        rc, out, err = run_cli("cluster", "-t", pids[0], "nodes", timeout=60)
        assert rc == 0, err
        rows = {int(r[0]): r for r in table_rows(out)}
        assert sorted(rows) == list(range(8)), out
        assert rows[5][4] == "dead", out
        assert re.search(r"rank 5 dead: process %d exited" % pids[5], err), err
    finally:
        job.kill()


STORE_ENTRY = """
import json
import torch.distributed as dist
store = dist.distributed_c10d._get_default_store()
while getattr(store, "underlying_store", None) is not None:
    store = store.underlying_store
print(json.loads(store.get("probing/0/rank/%d")))  # attempt 0: torchrun restarted nothing
"""


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_ranks_found_through_the_jobs_store(interp, tmp_path):
    """PROBING_PORT=0: each rank's agent listens on a port of its own choosing, so no rank can
    compute where rank 0's agent (the registry) is. They find it in the job's own torch.distributed
    store, where every rank writes its entry once the process group exists."""
    master_port = free_port_range(1)
    job = ddp_job(interp, str(tmp_path / "job.log"), {"PROBING_PORT": "0"}, 4, master_port)
    try:
        wait_for_steps(job, 4, "4 ranks training")
        pids = rank_pids(job.proc.pid)
        assert sorted(pids) == list(range(4)), pids
        rc, out, err = run_cli("list")
        listed = listed_agents(out)
        address = {r: listed[pids[r]][2] for r in range(4)}
        assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in address.values()), out
        assert len(set(address.values())) == 4, out

        # Over TCP only, from rank 2's address: rank 2 knows the others only through the registry
        # it found in the store (this host's agents are not looked up with --tcp).
        out, err = wait_for_cluster(address[2], 4, timeout=60, tcp=True)
        rows = table_rows(out)
        assert [int(r[0]) for r in rows] == list(range(4)), out
        assert [r[2] for r in rows] == [address[r] for r in range(4)], out
        assert all(r[4] == "running" for r in rows), out

        sys.path.insert(0, PYPKG)
        import probing
        with probing.connect(pid=pids[2]) as probe:
            cluster = probe._call("GET", "/cluster")
        assert cluster["registry"] == address[0], cluster
        assert cluster["registry_from"] == "torch.distributed store", cluster
        assert re.fullmatch(r"[\w.-]+:%d" % master_port, cluster["store"]), cluster

        # The entries are there for any tool of the job: rank 1's, read on rank 3.
        rc, out, err = run_cli("cluster", "-t", pids[0], "eval", "--ranks", "3", STORE_ENTRY % 1, timeout=60)
        assert rc == 0, err
        entry = eval(out.split("\n", 1)[1])
        assert entry["pid"] == pids[1] and "127.0.0.1:%d" % entry["port"] == address[1], out
    finally:
        job.kill()


def start_fake_job(world, base=None, token=None, extra=None, script="idle.py"):
    """`world` plain Python processes with a launcher's variables, under `probing launch`."""
    procs = []
    master_port = free_port_range(1)
    for r in range(world):
        env = {"RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port), "PROBING_CLUSTER_HEARTBEAT_S": "0.5"}
        if base is not None:
            env["PROBING_PORT"] = str(base)
        if token:
            env["PROBING_TOKEN"] = token
        env.update(extra or {})
        procs.append(subprocess.Popen([PROBING, "launch", "--", sys.executable, os.path.join(TARGETS, script)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      env=clean_env(env), start_new_session=True))
    for p in procs:
        assert p.stdout.readline().strip() == b"ready"
    return procs


def wait_for_cluster(target, world, timeout=30, token=None, tcp=False):
    deadline = time.time() + timeout
    args = (["--token", token] if token else []) + ["cluster", "-t", target, "nodes"] + (["--tcp"] if tcp else [])
    while True:
        rc, out, err = run_cli(*args, timeout=60)
        if rc == 0 and ("%d/%d ranks answered" % (world, world)) in err:
            return out, err
        assert time.time() < deadline, (out, err)
        time.sleep(0.3)


def test_ranks_found_by_pid_without_a_port():
    """No PROBING_PORT: the ranks of this host are found by their environment, over unix sockets."""
    procs = start_fake_job(3)
    try:
        out, err = wait_for_cluster(str(procs[1].pid), 3)
        assert [int(r[3]) for r in table_rows(out)] == [p.pid for p in procs], out
        rc, out, err = run_cli("cluster", "-t", procs[2].pid, "query", "--format", "csv",
                               "SELECT DISTINCT _rank, _host FROM process.threads ORDER BY _rank")
        assert rc == 0, err
        assert [int(l.split(",")[0]) for l in out.splitlines()[1:]] == [0, 1, 2], out
        # A process that is not a rank is told apart.
        with subprocess.Popen([PROBING, "launch", "--", sys.executable, os.path.join(TARGETS, "idle.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=clean_env()) as lone:
            assert lone.stdout.readline().strip() == b"ready"
            rc, out, err = run_cli("cluster", "-t", lone.pid, "nodes")
            lone.kill()
        assert rc == 2 and "not a rank of a job" in err, err

        # The same from Python: probing.connect(...).cluster runs the CLI installed beside the
        # package (here the build tree's).
        code = ("import json, probing\n"
                "c = probing.connect(%d).cluster\n"
                "rows = c.query('SELECT _rank, count(*) AS n FROM process.threads GROUP BY _rank')\n"
                "rows = rows.to_dict('records') if hasattr(rows, 'to_dict') else rows\n"
                "groups = c.backtrace()\n"
                "print(json.dumps({'ranks': sorted(r['_rank'] for r in rows), 'coverage': c.coverage,\n"
                "                  'groups': [g['ranks'] for g in groups], 'eval': c.eval('print(7)', ranks=[2]),\n"
                "                  'nodes': [n['state'] for n in c.nodes()]}))\n" % procs[0].pid)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=clean_env({"PYTHONPATH": PYPKG}))
        assert p.returncode == 0, p.stderr
        got = json.loads(p.stdout)
        assert got["ranks"] == [0, 1, 2] and got["coverage"].startswith("3/3 ranks answered"), got
        assert got["groups"] == [[0, 1, 2]], got
        assert got["eval"]["2"]["output"] == "7\n", got  # (JSON made the rank a string)
        assert got["nodes"] == ["running"] * 3, got
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_probes_on_every_rank():
    """cluster probe add|list|remove: the same probe on each rank, answers grouped by rank, hits
    queried with _rank; a place no rank has is refused by each, saying why."""
    procs = start_fake_job(3, script="probes_target.py")
    try:
        target = str(procs[0].pid)
        wait_for_cluster(target, 3)
        line = marker_line("probes_target.py", "PROBE_MAIN_LINE")
        rc, out, err = run_cli("cluster", "-t", target, "probe", "add", "probes_target.py:%d" % line,
                               "--capture", "step", "--limit", "2")
        assert rc == 0 and "3/3 ranks answered" in err, (out, err)
        assert out.startswith("== ranks 0-2 (3)\nprobe 1 at %s:%d (<module>, line): active"
                              % (os.path.join(TARGETS, "probes_target.py"), line)), out
        deadline = time.time() + 10
        while True:
            rc, out, err = run_cli("cluster", "-t", target, "query", "--format", "csv",
                                   "SELECT _rank, count(*) FROM python.probe_hits GROUP BY _rank ORDER BY _rank")
            if [l.rsplit(",", 1)[0] for l in out.splitlines()[1:]] == ["0,2", "1,2", "2,2"] or time.time() > deadline:
                break
            time.sleep(0.2)
        assert [l.rsplit(",", 1)[0] for l in out.splitlines()[1:]] == ["0,2", "1,2", "2,2"], (out, err)
        rc, out, err = run_cli("cluster", "-t", target, "probe", "list")
        assert rc == 0 and out.startswith("== ranks 0-2 (3)\nprobe 1 at ") and "done: 2 hits" in out, out
        rc, out, err = run_cli("cluster", "-t", target, "probe", "add", "probes_target.py:nope")
        assert rc == 1 and "ranks 0-2 error: no function nope in " in err, err
        rc, out, err = run_cli("cluster", "-t", target, "probe", "remove", "all")
        assert rc == 0 and out.count("removed probe 1 at ") == 1 and "3/3 ranks answered" in err, (out, err)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_token_and_rights():
    """Over TCP with a token (--tcp: this host's ranks too): the read token reads, eval needs the
    full one; the registry takes registrations only with the full token."""
    base = free_port_range(3)
    procs = start_fake_job(2, base=base, token="full-secret", extra={"PROBING_READ_TOKEN": "read-secret"})
    try:
        target = "127.0.0.1:%d" % (base + 1)
        rc, out, err = run_cli("cluster", "-t", target, "nodes")
        assert rc == 1 and "token" in err, err
        wait_for_cluster(target, 2, token="read-secret", tcp=True)
        rc, out, err = run_cli("--token", "read-secret", "cluster", "-t", target, "query", "--tcp",
                               "SELECT count(*) AS n FROM process.threads GROUP BY _rank")
        assert rc == 0 and "2/2 ranks answered" in err, err
        rc, out, err = run_cli("--token", "read-secret", "cluster", "-t", target, "eval", "--tcp", "1")
        assert rc == 1 and "refused" in err and "full token" in err, err
        # Over the unix sockets this user has every right, unless it asks for less.
        rc, out, err = run_cli("--read-only", "cluster", "-t", str(procs[0].pid), "eval", "1")
        assert rc == 1 and "refused" in err and "read right only" in err, err
        rc, out, err = run_cli("--token", "full-secret", "cluster", "-t", target, "eval", "--tcp", "print(6 * 7)")
        assert rc == 0 and "== ranks 0,1 (2)\n42\n" in out, (out, err)
        # A read token cannot register a member (a client would send its token there).
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", base, timeout=5)
        c.request("POST", "/cluster/register", body='{"rank": 1, "port": 1}',
                  headers={"Authorization": "Bearer read-secret"})
        assert c.getresponse().status == 403
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_dataloader_workers_take_no_port(interp, target_factory):
    """A rank's forked DataLoader workers inherit PROBING_PORT and RANK: they keep to their unix
    sockets (no bind error on the job's output), and are not taken for the rank."""
    base = free_port_range(2)
    master_port = free_port_range(1)
    t = target_factory("torch_models.py", interp, mode="launch", args=["workers"],
                       env={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(master_port), "PROBING_PORT": str(base)})
    workers = eval_ok(t.pid, "print(workers)").strip()
    assert workers.startswith("[") and len(workers) > 2, workers
    for how in ([], ["--tcp"]):  # found by its pid (the workers have agents and its RANK too), by TCP
        rc, out, err = run_cli("cluster", "-t", t.pid, "nodes", *how)
        assert rc == 0, err
        rows = table_rows(out)
        assert [(int(r[0]), int(r[3]), r[4]) for r in rows] == [(0, t.pid, "running")], (how, out)
    assert "Address already in use" not in "\n".join(t.stderr_lines()), t.stderr_lines()


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: "hosts" 10.201.0.1 and 10.201.0.2."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = "%d" % (os.getpid() % 100000)
    names = ("prb%sa" % tag, "prb%sb" % tag)
    try:
        for n in names:
            _ip("netns", "add", n)
        _ip("link", "add", "v" + names[0], "type", "veth", "peer", "name", "v" + names[1])
        for i, n in enumerate(names):
            _ip("link", "set", "v" + n, "netns", n)
            _ip("-n", n, "addr", "add", "10.201.0.%d/24" % (i + 1), "dev", "v" + n)
            _ip("-n", n, "link", "set", "v" + n, "up")
            _ip("-n", n, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        pytest.skip("cannot make network namespaces here: %s" % getattr(e, "stderr", e))
    yield names
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


def netns_cli(netns, token):
    """Runs the CLI on a "host" of two_hosts, with a token."""
    def cli(*args):
        p = subprocess.run(["ip", "netns", "exec", netns, PROBING, *args], capture_output=True,
                           text=True, timeout=60, env=clean_env({"PROBING_TOKEN": token}))
        return p.returncode, p.stdout, p.stderr
    return cli


def nodes_over_tcp(cli, target, world, timeout):
    """`cluster nodes --tcp` as JSON, once every rank answers."""
    deadline = time.time() + timeout
    while True:
        rc, out, err = cli("cluster", "-t", target, "nodes", "--tcp", "--format", "json")
        if rc == 0 and ("%d/%d ranks answered" % (world, world)) in err:
            return json.loads(out)
        assert time.time() < deadline, (out, err)
        time.sleep(0.5)


def test_ranks_on_two_hosts(two_hosts):
    """Ranks 0-1 on one "host", 2-3 on another (network namespaces: their unix sockets and
    loopbacks are apart), each agent on 0.0.0.0 with a token; the client on the second host
    reaches the first host's ranks at the addresses they registered from."""
    base = 23100 + os.getpid() % 1000
    token = "two-hosts-token"
    procs = []
    try:
        for r in range(4):
            host = two_hosts[0] if r < 2 else two_hosts[1]
            env = {"RANK": str(r), "WORLD_SIZE": "4", "LOCAL_RANK": str(r % 2), "LOCAL_WORLD_SIZE": "2",
                   "MASTER_ADDR": "10.201.0.1", "MASTER_PORT": "29400", "PROBING_PORT": str(base),
                   "PROBING_HOST": "0.0.0.0", "PROBING_TOKEN": token, "PROBING_CLUSTER_HEARTBEAT_S": "0.5"}
            procs.append(subprocess.Popen(["ip", "netns", "exec", host, PROBING, "launch", "--", sys.executable,
                                           os.path.join(TARGETS, "idle.py")],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          env=clean_env(env), start_new_session=True))
        for p in procs:
            assert p.stdout.readline().strip() == b"ready"

        cli = netns_cli(two_hosts[1], token)
        target = "10.201.0.2:%d" % (base + 1)  # rank 3, on the client's host
        nodes = nodes_over_tcp(cli, target, 4, 30)
        assert [n["rank"] for n in nodes] == [0, 1, 2, 3] and {n["state"] for n in nodes} == {"running"}, nodes
        assert [n["address"] for n in nodes] == ["10.201.0.1:%d" % base, "10.201.0.1:%d" % (base + 1),
                                                 "10.201.0.2:%d" % base, "10.201.0.2:%d" % (base + 1)], nodes
        # By default this host's ranks are asked over their unix sockets, the others over TCP.
        rc, out, err = cli("cluster", "-t", target, "query", "--format", "csv",
                           "SELECT _rank, count(*) AS threads FROM process.threads GROUP BY _rank")
        assert rc == 0 and "4/4 ranks answered" in err, err
        assert [l.split(",")[0] for l in out.splitlines()[1:]] == ["0", "1", "2", "3"], out
        # (Each rank's copy of the member list is as of its last heartbeat: let them all renew it.)
        time.sleep(2)
        # Over TCP without the token every rank refuses (the pid target's unix socket still says
        # where they are), and the answer says so.
        p = subprocess.run(["ip", "netns", "exec", two_hosts[1], PROBING, "cluster", "-t", str(procs[3].pid),
                            "backtrace", "--tcp"], capture_output=True, text=True, timeout=60, env=clean_env())
        assert p.returncode == 1, p.stderr
        assert "0/4 ranks answered" in p.stderr and "ranks 0-3 refused" in p.stderr, p.stderr
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_torch_job_on_two_hosts_with_any_ports(interp, two_hosts, tmp_path):
    """A 4-rank job over two "hosts" (two torchrun nodes, gloo over the veth pair), each agent on
    0.0.0.0 and a port of its own choosing (PROBING_PORT=0): the ranks find the registry through the
    job's store, and register the addresses the other host reaches them at."""
    token = "store-token"
    master_port = 29500 + os.getpid() % 400
    jobs = []
    try:
        for node, host in enumerate(two_hosts):
            env = {"PROBING_PORT": "0", "PROBING_HOST": "0.0.0.0", "PROBING_TOKEN": token,
                   "GLOO_SOCKET_IFNAME": "v" + host}
            jobs.append(ddp_job(interp, str(tmp_path / ("node%d.log" % node)), env, 2, master_port,
                                prefix=("ip", "netns", "exec", host),
                                torchrun_args=("--nnodes", "2", "--node_rank", str(node),
                                               "--master_addr", "10.201.0.1")))
        for node, job in enumerate(jobs):
            wait_for_steps(job, 2, "node %d's 2 ranks training" % node)

        cli = netns_cli(two_hosts[1], token)
        pids = rank_pids(jobs[1].proc.pid)
        assert sorted(pids) == [2, 3], pids
        rc, out, err = cli("list")
        port = int(listed_agents(out)[pids[3]][2].rsplit(":", 1)[1])
        nodes = nodes_over_tcp(cli, "10.201.0.2:%d" % port, 4, 60)
        assert [n["rank"] for n in nodes] == [0, 1, 2, 3] and {n["state"] for n in nodes} == {"running"}, nodes
        hosts = [n["address"].rsplit(":", 1)[0] for n in nodes]
        assert hosts == ["10.201.0.1", "10.201.0.1", "10.201.0.2", "10.201.0.2"], nodes
        assert nodes[3]["address"] == "10.201.0.2:%d" % port, nodes
    finally:
        for job in jobs:
            job.kill()


def test_exit_while_the_registry_does_not_answer():
    """A rank exits while its heartbeat waits on a registry that accepted the connection and
    never answers (a wedged rank 0): the exit is neither delayed nor disturbed."""
    base = free_port_range(2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", base))
    silent.listen(16)  # connections complete in the kernel; nothing ever reads or answers them
    try:
        env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": "29401", "PROBING_PORT": str(base), "PROBING_CLUSTER_HEARTBEAT_S": "0.3",
               "PROBING_LOG": "info"}
        code = "import sys, time\nprint('ready', flush=True)\ntime.sleep(2)\nsys.exit(3)\n"
        p = subprocess.Popen([PROBING, "launch", "--", sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=clean_env(env))
        assert p.stdout.readline().strip() == "ready"
        started = time.time()
        out, err = p.communicate(timeout=30)
        elapsed = time.time() - started
        assert p.returncode == 3, (p.returncode, err)
        assert elapsed < 2.8, (elapsed, err)
        assert "Segmentation" not in err and "Aborted" not in err, err
        assert "cannot register with rank 0's agent" in err, err  # the heartbeat was waiting
    finally:
        silent.close()
