"""`probing PID backtrace --tasks` on a stuck asyncio program (targets/async_stuck.py): each event
loop's tasks, where each waits, which awaits which, a deadlock of two tasks, a loop in a thread of
its own, and a task that blocks its loop; then what is said when tasks cannot be read."""
import json
import os
import time

import pytest

from conftest import TARGETS, Target, interpreter_params, marker_line, run_cli

PARAMS = interpreter_params()
SCRIPT = os.path.join(TARGETS, "async_stuck.py")


def tasks_of(j, thread_name):
    """The tasks of the loop run by the thread named thread_name, by name."""
    idents = [t["thread_id"] for t in j["threads"] if t["name"] == thread_name]
    assert len(idents) == 1, j["threads"]
    loops = [loop for loop in j["tasks"]["loops"] if loop["thread"] == idents[0]]
    assert len(loops) == 1, j["tasks"]
    return {row[2]: row for row in loops[0]["tasks"]}


@pytest.mark.parametrize("py", PARAMS)
def test_tasks_of_a_stuck_server(py):
    conn_line = marker_line("async_stuck.py", "TASKS_CONN_LINE")
    with Target("async_stuck.py", py, mode="launch") as t:
        rc, out, err = run_cli(t.pid, "backtrace", "--json", "--tasks")
        assert rc == 0, err
        j = json.loads(out)
        # The main thread's stack and that of the thread running the other loop, none else.
        assert sorted(th["name"] for th in j["threads"]) == ["MainThread", "side-loop"], j["threads"]
        main = tasks_of(j, "MainThread")
        assert len(main) == 44, sorted(main)
        by_id = {row[0]: name for name, row in main.items()}
        # [id, coroutine, name, running, [awaited by], [[func, file, line, source], ...] innermost first]
        conn = main["conn-7"]
        assert conn[3] is False and [by_id[p] for p in conn[4]] == ["Task-1"], conn
        assert conn[5][0][0] == "Lock.acquire", conn[5]
        assert conn[5][-1] == ["handle", SCRIPT, conn_line, "async with lock:  # TASKS_CONN_LINE"], conn[5]
        assert [by_id[p] for p in main["ping"][4]] == ["pong"] and [by_id[p] for p in main["pong"][4]] == ["ping"]
        assert main["lock-holder"][5][-1][:3] == ["holder", SCRIPT, marker_line("async_stuck.py", "TASKS_HOLDER_LINE")]
        side = tasks_of(j, "side-loop")
        assert len(side) == 2 and "side-sleeper" in side, sorted(side)
        (runner,) = [row for name, row in side.items() if name != "side-sleeper"]
        assert side["side-sleeper"][4] == [runner[0]] and runner[5][0][0] == "side_loop.<locals>.side", side

        rc, out, err = run_cli(t.pid, "backtrace", "--tasks")
        assert rc == 0 and err == "", (out, err)
        lines = out.splitlines()
        main_ident = [th["thread_id"] for th in j["threads"] if th["name"] == "MainThread"][0]
        at = lines.index('asyncio event loop in thread %d "MainThread": 44 tasks' % main_ident)
        block = lines[at:]
        assert block[1].startswith('  Task "Task-1", waiting:'), block[:3]
        # The 40 handlers waiting on the lock, once, with the place they wait.
        group = block.index('    awaits 40 tasks ("conn-0", "conn-1", "conn-2", ...), waiting:')
        assert block[group + 1].startswith("        Lock.acquire ("), block[group:group + 3]
        assert "        handle (%s:%d)" % (SCRIPT, conn_line) in block[group + 1:group + 8], block[group:group + 8]
        assert '    awaits Task "lock-holder", waiting:' in block
        # The deadlock: both tasks, each under the other.
        cycle = block.index("  tasks that await each other (a cycle: none of them can finish):")
        first, second = ("ping", "pong") if block[cycle + 1] == '  Task "ping", waiting:' else ("pong", "ping")
        assert block[cycle + 1] == '  Task "%s", waiting:' % first, block[cycle:]
        assert '    awaits Task "%s", waiting:' % second in block[cycle:]
        assert '      awaits Task "%s" (shown above)' % first in block[cycle:]
        assert any(l.startswith('asyncio event loop in thread ') and l.endswith('"side-loop": 2 tasks') for l in lines)
        assert t.alive()


@pytest.mark.parametrize("py", PARAMS)
def test_a_task_blocking_its_loop(py):
    with Target("async_stuck.py", py, mode="launch", env={"BLOCK": "1"}) as t:
        block_line = marker_line("async_stuck.py", "TASKS_BLOCK_LINE")
        deadline = time.monotonic() + 10
        while True:
            rc, out, err = run_cli(t.pid, "backtrace", "--tasks")
            assert rc == 0, err
            if "  blocker (%s:%d)" % (SCRIPT, block_line) in out or time.monotonic() > deadline:
                break
        lines = out.splitlines()
        # The main thread sleeps in the task; the task is the one running, and said to be there.
        assert lines[1] == "  blocker (%s:%d)" % (SCRIPT, block_line), out
        main = [l for l in lines if l.startswith("Thread ") and '"MainThread"' in l][0]
        ident = main.split()[1]
        assert '  Task "blocker", running: the stack of thread %s "MainThread" shows where' % ident in lines, out
        assert "asyncio event loop in thread %s \"MainThread\": 45 tasks, 1 running" % ident in lines, out


@pytest.mark.parametrize("py", PARAMS)
def test_no_asyncio_no_loop_and_bad_combinations(py):
    with Target("idle.py", py, mode="launch") as t:
        rc, out, err = run_cli(t.pid, "backtrace", "--tasks")
        assert rc == 0 and out.startswith("Thread "), (out, err)
        assert "asyncio" not in out and "no asyncio tasks: the process has not imported asyncio" in err, err
        rc, out, err = run_cli(t.pid, "eval", "import asyncio")
        assert rc == 0, err
        rc, out, err = run_cli(t.pid, "backtrace", "--tasks")
        assert rc == 0 and "no asyncio tasks: no thread is running an event loop" in err, err
        rc, out, err = run_cli(t.pid, "backtrace", "--tasks", "--native")
        assert rc == 2 and "--tasks cannot be combined with --native" in err, (rc, err)
