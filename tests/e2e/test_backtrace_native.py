"""`probing PID backtrace --native` on real processes: native frames read from outside with
ptrace and libdw, merged with the Python frames each _PyEval_EvalFrameDefault call runs."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import DEBIAN_PYTHON, PYPKG, TARGETS, Target, agent_mapped, interpreter_params, marker_line, run_cli

sys.path.insert(0, PYPKG)
import probing  # noqa: E402  (the build's package)
from test_backtrace import backtrace_json, main_thread

PARAMS = interpreter_params()
LIBC_WAITS = {"read", "__libc_read", "__GI___libc_read", "clock_nanosleep", "__clock_nanosleep", "__nanosleep",
              "nanosleep", "sleep", "select", "__select", "poll", "__poll", "epoll_wait", "pthread_cond_wait",
              "pthread_cond_timedwait", "__futex_abstimed_wait_common", "__GI___futex_abstimed_wait_cancelable64"}


def kinds(frames):
    return [f["frame_type"] for f in frames]


def python_frames(frames):
    return [(f["func"], f["lineno"]) for f in frames if f["frame_type"] == "Python"]


def wait_for_native(pid, predicate, *flags, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        j = backtrace_json(pid, "--native", *flags)
        if predicate(j) or time.monotonic() > deadline:
            return j


@pytest.mark.parametrize("py", PARAMS)
def test_native_frames_merged_in_place(py):
    inner = marker_line("bt_nested.py", "BT_INNER_LINE")
    script = os.path.join(TARGETS, "bt_nested.py")
    with Target("bt_nested.py", py, mode="launch") as t:
        j = wait_for_native(t.pid, lambda j: python_frames(main_thread(j)["frames"])[:1] == [("inner", inner)])
        assert j["native"] is True and j["python"].startswith("3."), j
        main = main_thread(j)
        assert main["native_thread_id"] == t.proc.pid and main["name"] == "MainThread", main
        assert main["python"] is True and main["thread_id"] > 0
        frames = main["frames"]
        assert [f["depth"] for f in frames] == list(range(len(frames)))
        # Python frames in their order, with their source lines...
        assert python_frames(frames) == [
            ("inner", inner),
            ("middle", marker_line("bt_nested.py", "BT_MIDDLE_LINE")),
            ("outer", marker_line("bt_nested.py", "BT_OUTER_LINE")),
            ("<module>", marker_line("bt_nested.py", "BT_MODULE_LINE")),
        ], frames
        first_py = kinds(frames).index("Python")
        assert frames[first_py]["file"] == script
        assert frames[first_py]["source"] == "sys.stdin.readline()  # BT_INNER_LINE"
        names = [f["func"] for f in frames]
        # ...inside native ones: the innermost frame is libc's read, under the C code that reads
        # stdin; the outermost is the interpreter's start-up. In a stripped 3.14+, whose eval loop
        # has no symbol, the eval calls are found by the shim frames on their stacks.
        assert first_py > 0, frames
        assert kinds(frames)[first_py:first_py + 5] == ["Python"] * 4 + ["Native"], frames
        assert "note" not in main, main
        assert frames[0]["frame_type"] == "Native" and frames[0]["library"].startswith("libc.so"), frames[0]
        # (glibc 2.41+ makes the call in an internal function, unnamed without libc's debug symbols.)
        assert frames[0]["func"] in LIBC_WAITS or frames[0]["func"] == "??", frames[0]
        assert frames[0]["address"] > 0
        assert frames[-1]["frame_type"] == "Native", frames[-1]
        assert "Py_RunMain" in names or "Py_BytesMain" in names or "main" in names, names
        assert "_PyEval_EvalFrameDefault" not in names[:names.index("inner")], names  # replaced by Python frames
        assert main["stopped_ms"] < 200, main["stopped_ms"]

        # The text form: native frames say so, with their library.
        rc, out, err = run_cli(t.pid, "backtrace", "--native")
        assert rc == 0, (rc, out, err)
        lines = out.splitlines()
        assert lines[0].startswith('Thread %d "MainThread" (tid %d' % (main["thread_id"], t.proc.pid)), lines[0]
        assert lines[1].startswith("  %s" % frames[0]["func"]) and "(libc.so" in lines[1] and lines[1].endswith("[Native]")
        assert "  inner (%s:%d)" % (script, inner) in lines
        assert "      sys.stdin.readline()  # BT_INNER_LINE" in lines

        # The target was held only while it was read: it goes on, and answers as before.
        t.write("\n")
        assert backtrace_json(t.pid)["threads"][0]["frames"]
        assert t.alive()


@pytest.mark.parametrize("py", PARAMS)
def test_native_all_threads_and_the_gil_holder(py):
    hold = marker_line("bt_gil.py", "BT_HOLD_LINE")
    with Target("bt_gil.py", py, mode="launch", args=["60"]) as t:
        backtrace_json(t.pid, "--all")  # records the thread names for the GIL-free answer
        t.write("hold\n")
        t.wait_line("holding")

        def holder_in_sleep(j):
            held = [th for th in j["threads"] if th["holds_gil"]]
            return len(held) == 1 and python_frames(held[0]["frames"])[:1] == [("hold", hold)]

        start = time.monotonic()
        wait_for_native(t.pid, holder_in_sleep, "--all")
        assert time.monotonic() - start < 10
        # The agent may start a thread while the stacks are read (a Python worker for a request
        # that waits on the GIL held): every thread there both before and after the read is in it,
        # and none that was there neither before nor after.
        before = {int(x) for x in os.listdir("/proc/%d/task" % t.pid)}
        j = backtrace_json(t.pid, "--native", "--all")
        after = {int(x) for x in os.listdir("/proc/%d/task" % t.pid)}
        assert holder_in_sleep(j), j
        holder = [th for th in j["threads"] if th["holds_gil"]]
        assert len(holder) == 1 and holder[0]["name"] == "gil-holder", [(th["name"], th["holds_gil"]) for th in j["threads"]]
        frames = holder[0]["frames"]
        at_hold = [f["func"] for f in frames].index("hold")
        native_inner = [f["func"] for f in frames[:at_hold] if f["frame_type"] == "Native"]
        assert set(native_inner) & {"sleep", "clock_nanosleep", "__nanosleep", "nanosleep"}, native_inner
        assert "ffi_call" in native_inner, native_inner  # ctypes' call into libc, between the two
        # every thread of the process, the agent's own (no Python) included, main thread first
        assert j["threads"][0]["is_main"] is True
        tids = {th["native_thread_id"] for th in j["threads"]}
        assert before & after <= tids <= before | after, (sorted(tids), sorted(before), sorted(after))
        natives = [th for th in j["threads"] if not th["python"]]
        assert natives and all(th["thread_id"] is None for th in natives)
        assert all(f["frame_type"] == "Native" for th in natives for f in th["frames"])
        # answers quickly while the GIL is held
        start = time.monotonic()
        rc, out, err = run_cli(t.pid, "backtrace", "--native", "--all")
        assert rc == 0 and time.monotonic() - start < 2.0, (rc, err, time.monotonic() - start)
        assert "holds the GIL" in out and "not a Python thread" in out
        assert t.alive()


@pytest.mark.parametrize("py", PARAMS)
def test_native_python_called_back_from_c(py):
    # Each eval call's Python frames go where that call runs, even where the eval loop has no
    # symbol (a stripped 3.14+): sorted()'s C code sits between key() and sort().
    expected = [(name, marker_line("bt_reentered.py", marker)) for name, marker in
                (("key", "BT_KEY_LINE"), ("sort", "BT_SORT_LINE"), ("<module>", "BT_MODULE_LINE"))]
    with Target("bt_reentered.py", py, mode="launch") as t:
        j = wait_for_native(t.pid, lambda j: python_frames(main_thread(j)["frames"])[:1] == expected[:1])
        main = main_thread(j)
        frames = main["frames"]
        assert python_frames(frames) == expected, frames
        at = {f["func"]: f["depth"] for f in frames if f["frame_type"] == "Python"}
        assert at["key"] > 0 and frames[at["key"] - 1]["frame_type"] == "Native", frames
        between = kinds(frames)[at["key"] + 1:at["sort"]]
        assert between and set(between) == {"Native"}, frames  # sorted() and the call into key()
        assert at["<module>"] == at["sort"] + 1 and frames[at["<module>"] + 1]["frame_type"] == "Native", frames
        assert "note" not in main, main


@pytest.mark.parametrize("py", PARAMS)
def test_native_one_thread_by_ident_or_tid(py):
    with Target("bt_nested.py", py, mode="launch") as t:
        by_name = {th["name"]: th for th in backtrace_json(t.pid, "--all")["threads"]}
        worker = by_name["worker-2"]
        for key in (worker["thread_id"], worker["native_thread_id"]):
            j = backtrace_json(t.pid, "--native", "--thread", key)
            assert [th["native_thread_id"] for th in j["threads"]] == [worker["native_thread_id"]]
            assert j["threads"][0]["name"] == "worker-2"
            assert [f for f, _ in python_frames(j["threads"][0]["frames"])][:2] == ["Condition.wait", "Event.wait"]
        rc, out, err = run_cli(t.pid, "backtrace", "--native", "--thread", "999999999")
        assert rc == 1 and "has no thread 999999999" in err, (rc, out, err)


def test_native_without_an_agent():
    # Read from outside, --native needs no agent; threads are then named by the kernel.
    with Target("bt_nested.py", DEBIAN_PYTHON, mode="none") as t:
        j = wait_for_native(t.pid, lambda j: python_frames(j["threads"][0]["frames"])[:1]
                            == [("inner", marker_line("bt_nested.py", "BT_INNER_LINE"))])
        assert [f for f, _ in python_frames(j["threads"][0]["frames"])] == ["inner", "middle", "outer", "<module>"]
        assert any("no agent answered" in n for n in j["notes"]), j["notes"]
        assert t.alive()


@pytest.mark.parametrize("py", PARAMS)
def test_plain_backtrace_without_an_agent_reads_from_outside(py):
    # No agent, and none attached: `backtrace` still answers, with the Python stacks read from
    # outside (ptrace), and says so; without an agent there are no locals, and it says that too.
    with Target("bt_nested.py", py, mode="none") as t:
        want = ("inner", marker_line("bt_nested.py", "BT_INNER_LINE"))
        deadline = time.monotonic() + 10
        while True:
            rc, out, err = run_cli(t.pid, "backtrace", "--json")
            j = json.loads(out) if rc == 0 else {}
            frames = j["threads"][0]["frames"] if j else []
            if (frames and (frames[0]["func"], frames[0]["lineno"]) == want) or time.monotonic() > deadline:
                break
        assert rc == 0, err
        assert j["from_outside"] is True and j["native"] is False
        assert [f["frame_type"] for f in frames] == ["Python"] * 4
        assert [f["func"] for f in frames] == ["inner", "middle", "outer", "<module>"]
        assert any("has no agent" in n and "inject" in n for n in j["notes"]), j["notes"]
        rc, out, err = run_cli(t.pid, "backtrace", "--locals")
        assert rc == 0 and out.startswith("(no agent: read from outside)\n") and "inner" in out, (out, err)
        assert "without locals (they need the agent)" in err, err
        rc, out, err = run_cli(t.pid, "backtrace", "--tasks")
        assert rc == 0 and out.startswith("(no agent: read from outside)\n") and "inner" in out, (out, err)
        assert "without locals or asyncio tasks (they need the agent)" in err, err
        assert agent_mapped(t.pid) == 0 and t.alive()
    # A process with no CPython is told so, and pointed at --native, not at inject (which would
    # refuse it too).
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        rc, out, err = run_cli(sleeper.pid, "backtrace")
        assert rc == 1 and "is not a Python process" in err and "--native" in err and "inject" not in err, (rc, err)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_native_refusals():
    with Target("idle.py", DEBIAN_PYTHON, mode="launch") as t:
        rc, out, err = run_cli(t.pid, "backtrace", "--native", "--locals")
        assert rc != 0 and "--locals cannot be combined with --native" in err, (rc, err)
        # The agent cannot stop its own process's threads: over HTTP it points at the CLI.
        with pytest.raises(probing.RemoteError) as info:
            probing.connect(pid=t.pid)._call("GET", "/backtrace?native=1")
        assert info.value.status == 501 and "backtrace --native" in info.value.message, info.value
    rc, out, err = run_cli("127.0.0.1:1", "backtrace", "--native")
    assert rc != 0 and "give its pid" in err, (rc, err)


def test_native_thread_held_by_another_tracer():
    # Another tracer holds the main thread: that thread gets a note, the command fails (nothing
    # could be read), and the target is untouched.
    seize = ("import ctypes, sys, time\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "assert libc.ptrace(0x4206, int(sys.argv[1]), None, None) == 0, ctypes.get_errno()\n"
             "print('seized', flush=True)\n"
             "time.sleep(60)\n")
    with Target("bt_nested.py", DEBIAN_PYTHON, mode="none") as t:
        tracer = subprocess.Popen([DEBIAN_PYTHON, "-c", seize, str(t.pid)], stdout=subprocess.PIPE, text=True)
        try:
            assert tracer.stdout.readline().strip() == "seized"
            rc, out, err = run_cli(t.pid, "backtrace", "--native")
            assert rc == 1, (rc, out, err)
            assert "already traced by pid %d" % tracer.pid in out, out
        finally:
            tracer.kill()
            tracer.wait()
        t.write("\n")  # the target was never stopped: it reads its line and goes on
        j = wait_for_native(t.pid, lambda j: j["threads"][0]["frames"])
        assert j["threads"][0]["frames"], j


@pytest.mark.parametrize("py", PARAMS)
def test_native_of_a_stopped_process_fails_and_says_how_to_resume_it(py):
    import signal
    with Target("bt_nested.py", py, mode="none") as t:
        os.kill(t.pid, signal.SIGSTOP)
        # The stop reaches each thread in its own time: wait until every one is stopped.
        deadline = time.monotonic() + 10
        task = "/proc/%d/task" % t.pid
        while any(open("%s/%s/stat" % (task, tid)).read().rsplit(")", 1)[1].split()[0] != "T"
                  for tid in os.listdir(task)):
            assert time.monotonic() < deadline, "process %d did not stop" % t.pid
            time.sleep(0.01)
        try:
            rc, out, err = run_cli(t.pid, "backtrace", "--native")
        finally:
            os.kill(t.pid, signal.SIGCONT)
        assert rc == 1, (rc, out, err)
        assert "the process is stopped (SIGSTOP, SIGTSTP or Ctrl-Z); resume it with: kill -CONT %d" % t.pid in out, out
