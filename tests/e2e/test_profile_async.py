"""`probing PID profile --async`: samples of a running asyncio task end in the task and the tasks
that await it, not in the event loop; with --idle, waiting tasks count too. On async_tasks.py,
whose loop always has work: tasks named busy-a and group-child compute, idle-sleeper and
group-sleeper wait, all under main's gather (and grouper's TaskGroup, on 3.11+)."""
import json
import time

import pytest

from conftest import eval_ok, http_request, run_cli


def version_of(interp):
    return tuple(int(x) for x in interp.version.split(".")[:2])


def folded(pid, tmp_path, *flags, seconds=3):
    out = tmp_path / "tasks.folded"
    rc, _, err = run_cli(pid, "profile", "--async", "--seconds", seconds, "-o", out, *flags,
                         timeout=seconds + 30)
    assert rc == 0, (rc, err)
    lines = []
    for line in out.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        lines.append(([f.split(" (")[0] for f in stack.split(";")[1:]], int(count)))  # less the thread
    return lines, err


def weight(lines, test):
    return sum(n for frames, n in lines if test(frames))


def under(frames, *path):
    """Whether `path` runs through the stack in that order, outermost first, one frame after another."""
    for i in range(len(frames) - len(path) + 1):
        if frames[i:i + len(path)] == list(path):
            return True
    return False


def test_running_tasks_end_in_their_tasks(interp, target_factory, tmp_path):
    t = target_factory("async_tasks.py", interp)
    lines, err = folded(t.pid, tmp_path)
    spinning = weight(lines, lambda f: f and f[-1] == "spin")
    assert spinning > 50, (spinning, err)
    # The loop's machinery (run_forever, Handle._run) gives way to the task tree.
    named = weight(lines, lambda f: f and f[-1] == "spin" and under(f, "Task-*", "main", "busy-a", "worker",
                                                                    "crunch", "spin"))
    grouped = weight(lines, lambda f: f and f[-1] == "spin" and under(f, "grouper", "grouped") and
                     under(f, "group-child", "worker", "crunch", "spin"))
    looped = weight(lines, lambda f: "spin" in f and "run_forever" in " ".join(f))
    assert named > 0.25 * spinning, (named, spinning, lines[:5])
    if version_of(interp) >= (3, 11):
        assert grouped > 0.25 * spinning, (grouped, spinning, lines[:5])
    assert named + grouped > 0.8 * spinning, (named, grouped, spinning)
    assert looped < 0.1 * spinning, (looped, spinning)
    assert "(await stack not kept)" not in str(lines)


def test_idle_adds_the_waiting_tasks(interp, target_factory, tmp_path):
    t = target_factory("async_tasks.py", interp)
    lines, err = folded(t.pid, tmp_path, "--idle")
    sleeping = weight(lines, lambda f: under(f, "Task-*", "main", "idle-sleeper", "sleeper", "sleep"))
    # One snapshot every 0.2 s or so, each standing for its interval: about the whole 3 s.
    assert sleeping > 0, (lines, err)
    total = weight(lines, lambda f: True)
    spinning = weight(lines, lambda f: f and f[-1] == "spin")
    assert 0.3 * spinning < sleeping < 3 * spinning, (sleeping, spinning, total)
    if version_of(interp) >= (3, 11):
        assert weight(lines, lambda f: under(f, "grouper", "grouped") and
                      under(f, "group-sleeper", "sleeper", "sleep")) > 0


def test_without_async_stacks_end_in_the_loop(interp, target_factory, tmp_path):
    t = target_factory("async_tasks.py", interp)
    out = tmp_path / "plain.folded"
    rc, _, err = run_cli(t.pid, "profile", "--seconds", "2", "-o", out, timeout=40)
    assert rc == 0, err
    text = out.read_text()
    assert "(<task>)" not in text
    assert "run_forever" in text


def test_a_process_without_asyncio_says_so(interp, target_factory):
    t = target_factory("idle.py", interp)
    rc, out, err = run_cli(t.pid, "profile", "--async", "--idle", "--seconds", "1", timeout=40)
    assert rc == 0, err
    assert "has not imported asyncio" in err, err
    assert "(<task>)" not in out
    assert eval_ok(t.pid, "import sys; 'asyncio' in sys.modules") == "False\n"  # nor did the snapshots


@pytest.mark.parametrize("flags,why", [(("--last", "1m"), "recorder"), (("--native",), "--native")])
def test_refused_where_no_task_can_be_named(interp, target_factory, flags, why):
    t = target_factory("idle.py", interp)
    rc, _, err = run_cli(t.pid, "profile", "--async", *flags, timeout=30)
    assert rc != 0
    assert "--async" in err and why in err, err


def test_the_tasks_are_served_over_http(interp, target_factory):
    # The body of GET /profile?tasks=1: task stacks apart from python.stacks' ids, "<task>" frames.
    t = target_factory("async_tasks.py", interp)
    reply = http_request(t.pid, "POST", "/profile", json.dumps({"hz": 100, "seconds": 1.5, "tasks": True}))
    assert reply.status == 200, reply
    started = reply.json()
    assert started["tasks"] is True
    time.sleep(1.7)
    window = "since=%f&until=%f" % (started["start"], started["start"] + 1.6)
    reply = http_request(t.pid, "GET", "/profile?%s&tasks=1" % window)
    assert reply.status == 200, reply
    body = reply.json()
    assert body["tasks"] is True
    task_stacks = {k: v for k, v in body["stacks"].items() if int(k) >= 1 << 32}
    assert task_stacks, body["notices"]
    assert any(f[1] == "<task>" and f[0] == "busy-a" for s in task_stacks.values() for f in s)
    bad = http_request(t.pid, "POST", "/profile", json.dumps({"hz": 100, "seconds": 1, "tasks": "yes"}))
    assert bad.status == 400
