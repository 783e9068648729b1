"""`probing PID children` and `probing PID backtrace --subprocesses` on real process trees: a
multiprocessing pool, a DataLoader's workers, a zombie; and `inject` into a forked child whose
inherited agent runs none of its threads."""
import json
import os
import time

import pytest

from conftest import Target, eval_ok, http_request, interpreter_params, marker_line, run_cli, torch_interpreter_params


def children_of(t):
    line = [l for l in t.stdout_lines() if l.startswith("children ")][0]
    return [int(p) for p in line.split()[1:]]


def tree_json(pid):
    rc, out, err = run_cli(pid, "children", "--json")
    assert rc == 0, (rc, out, err)
    return {p["pid"]: p for p in json.loads(out)}


def subprocess_stacks(pid, *flags):
    rc, out, err = run_cli(pid, "backtrace", "--subprocesses", "--json", *flags, timeout=60)
    assert rc == 0, (rc, out, err)
    return {p["pid"]: p for p in json.loads(out)["processes"]}


def python_funcs(process):
    return [f["func"] for t in process["backtrace"]["threads"] for f in t["frames"] if f["frame_type"] == "Python"]


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def agents_of(pid, workers):
    tree = tree_json(pid)
    return tree if all(tree[w]["agent"] == "yes" for w in workers) else None


@pytest.mark.parametrize("interp", interpreter_params())
def test_a_pool_under_launch_gets_agents(interp, target_factory):
    # Under `probing launch` (subprocesses on), each forked worker loads an agent of its own.
    t = target_factory("tree.py", interp, mode="launch", args=["pool_later"])
    # Forks made before the agent's hook is in (its first moments) get none: /health says when.
    wait_for(lambda: http_request(t.pid, "GET", "/health").json()["subprocesses"] == "on", "the hook never went in")
    t.write("\n")
    t.wait_line(lambda l: l.startswith("children "))
    workers = children_of(t)
    tree = wait_for(lambda: agents_of(t.pid, workers), "the workers never got agents")
    assert tree[t.pid]["role"] == "root" and tree[t.pid]["agent"] == "yes" and tree[t.pid]["depth"] == 0, tree
    for w in workers:
        assert tree[w]["ppid"] == t.pid and tree[w]["depth"] == 1 and tree[w]["role"] == "fork", tree[w]
        assert tree[w]["python"] == tree[t.pid]["python"] and tree[w]["python"].startswith("3."), tree[w]
        assert eval_ok(w, "import os; os.getpid(), os.getppid()") == "(%d, %d)\n" % (w, t.pid)
    stacks = wait_for(lambda: (lambda s: s if all("slow_task" in python_funcs(s[w]) for w in workers) else None)(
        subprocess_stacks(t.pid)), "the workers never ran slow_task")
    for w in workers:  # from each worker's agent: with the GIL, locals on request
        assert stacks[w]["backtrace"].get("from_outside", False) is False, stacks[w]
        frame = [f for th in stacks[w]["backtrace"]["threads"] for f in th["frames"] if f["func"] == "slow_task"][0]
        assert frame["lineno"] == marker_line("tree.py", "TREE_TASK_LINE"), frame
    assert "pool" in python_funcs(stacks[t.pid]), stacks[t.pid]
    rc, out, err = run_cli(t.pid, "backtrace", "--subprocesses", "--locals", timeout=60)
    assert rc == 0 and "Process %d (fork of %d, agent: yes) " % (workers[0], t.pid) in out, (rc, out, err)
    assert "          i = 0   (argument)" in out or "          i = 1   (argument)" in out, out
    assert eval_ok(t.pid, "import os; os.getpid()") == "%d\n" % t.pid  # the parent's agent is untouched


@pytest.mark.parametrize("interp", interpreter_params())
def test_subprocesses_turned_on_at_run_time(interp, target_factory):
    t = target_factory("tree.py", interp, mode="preload", args=["pool_later"])  # preloaded: off
    assert http_request(t.pid, "GET", "/health").json()["subprocesses"] == "off"
    rc, out, err = run_cli(t.pid, "config", "subprocesses=on")
    assert rc == 0, (rc, out, err)
    wait_for(lambda: http_request(t.pid, "GET", "/health").json()["subprocesses"] == "on", "the hook never went in")
    t.write("\n")
    t.wait_line(lambda l: l.startswith("children "))
    workers = children_of(t)
    wait_for(lambda: agents_of(t.pid, workers), "the workers never got agents")


@pytest.mark.parametrize("interp", interpreter_params())
def test_inject_into_a_fork_that_inherited_the_agent(interp, target_factory):
    t = target_factory("tree.py", interp, mode="launch", args=["pool"], launch_args=["-D", "subprocesses=off"])
    workers = children_of(t)
    tree = tree_json(t.pid)
    for w in workers:  # forks: the agent library is mapped, none of its threads run
        assert (tree[w]["role"], tree[w]["agent"]) == ("fork", "inherited") and tree[w]["state"] in "RS", tree[w]
    # Their stacks are read from outside meanwhile.
    stacks = wait_for(lambda: (lambda s: s if all("slow_task" in python_funcs(s[w]) for w in workers) else None)(
        subprocess_stacks(t.pid)), "the workers never ran slow_task")
    assert all(stacks[w]["backtrace"]["from_outside"] for w in workers), stacks
    # The parent's agent reads its whole tree in SQL, without the GIL, forks without agents included.
    rc, out, err = run_cli(t.pid, "query", "--format", "json",
                           "SELECT pid, ppid, lineno FROM python.backtrace_tree WHERE func = 'slow_task'")
    assert rc == 0, (rc, out, err)
    rows = {r["pid"]: r for r in json.loads(out)}
    assert set(rows) == set(workers), (rows, workers)
    assert all(r["ppid"] == t.pid and r["lineno"] == marker_line("tree.py", "TREE_TASK_LINE") for r in rows.values())
    rc, out, err = run_cli(t.pid, "backtrace", "--subprocesses", timeout=60)
    assert rc == 0 and "Process %d (fork of %d, agent: inherited) " % (workers[1], t.pid) in out, out
    rc, out, err = run_cli(workers[0], "doctor")
    assert rc == 1 and "none of the agent's threads run" in out and "%d inject` starts" % workers[0] in out, out
    # A worker gets an agent of its own: a second copy of the library, since it maps the first.
    rc, out, err = run_cli(workers[0], "inject", "-v")
    assert rc == 0 and "a fork of a process with an agent" in err, (rc, out, err)
    assert eval_ok(workers[0], "import os; os.getpid(), os.getppid()") == "(%d, %d)\n" % (workers[0], t.pid)
    rc, out, err = run_cli(workers[0], "backtrace")
    assert rc == 0 and "slow_task (" in out and "read from outside" not in out, (rc, out, err)
    tree = tree_json(t.pid)
    assert tree[workers[0]]["agent"] == "yes" and tree[workers[1]]["agent"] == "inherited", tree


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_dataloader_workers_without_any_agent(interp, target_factory):
    t = target_factory("tree.py", interp, mode="none", args=["dataloader"], ready_timeout=60)
    workers = children_of(t)
    tree = tree_json(t.pid)
    assert set(workers) <= set(tree), tree  # children, or grandchildren under 3.14's forkserver
    assert all(p["agent"] == "no" for p in tree.values()), tree
    line = marker_line("tree.py", "TREE_GETITEM_LINE")

    def in_getitem():
        stacks = subprocess_stacks(t.pid)
        return stacks if all(any(f["func"] == "Slow.__getitem__" and f["lineno"] == line
                                 for th in stacks[w]["backtrace"]["threads"] for f in th["frames"])
                             for w in workers) else None

    stacks = wait_for(in_getitem, "the workers never reached __getitem__")
    assert all(stacks[w]["backtrace"]["from_outside"] for w in workers), stacks


@pytest.mark.parametrize("interp", interpreter_params())
def test_a_zombie_child_is_listed_not_read(interp, target_factory):
    t = target_factory("tree.py", interp, mode="none", args=["zombie"])
    gone, sleeper = children_of(t)
    # Just forked, the sleeper may still be running its way to time.sleep: wait for both states.
    tree = wait_for(lambda: (lambda tr: tr if (tr.get(gone, {}).get("state"), tr.get(sleeper, {}).get("state"))
                             == ("Z", "S") else None)(tree_json(t.pid)),
                    "the first child never became a zombie, or the second never slept")
    assert (tree[gone]["role"], tree[gone]["python"], tree[gone]["cmdline"]) == ("zombie", None, []), tree[gone]
    assert tree[sleeper]["role"] == "fork", tree[sleeper]
    rc, out, err = run_cli(t.pid, "children")
    assert rc == 0 and "zombie" in out, (rc, out, err)
    stacks = subprocess_stacks(t.pid)
    assert "zombie" in stacks[gone]["error"] and "backtrace" not in stacks[gone], stacks[gone]
    assert "backtrace" in stacks[sleeper], stacks[sleeper]


def test_children_of_a_pid_that_does_not_exist():
    rc, out, err = run_cli(4194300, "children")
    assert rc == 1 and "no process 4194300" in err, (rc, out, err)
    rc, out, err = run_cli("127.0.0.1:9", "children")
    assert rc == 2 and "give a local pid" in err, (rc, out, err)
