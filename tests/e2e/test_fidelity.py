"""What a stack dumper must get right, as py-spy's own integration tests describe it: a long
sleep, a busy loop, threads that come and go, recursion, non-ASCII file and function names and
values, line tables that step back, nested class names. Each is checked both ways probing
reads a stack: from the agent (with the GIL) and from outside (no agent, the GIL-free reader)."""
import json
import time

import pytest

from conftest import Target, interpreter_params, marker_line, run_cli

PARAMS = interpreter_params()
UNICODE = "unicode_кириллица_💩.py"


def stacks(pid, *flags):
    rc, out, err = run_cli(pid, "backtrace", "--json", *flags)
    assert rc == 0, (rc, out, err)
    return json.loads(out)


def main_frames(j):
    main = [t for t in j["threads"] if t.get("is_main") or t.get("name") == "MainThread"][0]
    return main, [(f["func"], f["lineno"]) for f in main["frames"] if f["frame_type"] == "Python"]


def settled(pid, top, *flags, timeout=10):
    """The stacks once the main thread's innermost Python frame is `top` (or at the deadline):
    'ready' is printed just before the wait, so the first reads may find the thread on its way."""
    deadline = time.monotonic() + timeout
    while True:
        j = stacks(pid, *flags)
        if main_frames(j)[1][:1] == [top] or time.monotonic() > deadline:
            return j


def both_ways(py, script, args=()):
    """The target once with an agent, once without: (target, read from outside?)."""
    for mode in ("launch", "none"):
        with Target(script, py, mode=mode, args=args) as t:
            yield t, mode == "none"


@pytest.mark.parametrize("py", PARAMS)
def test_a_long_sleep(py):
    for t, outside in both_ways(py, "fidelity.py", ["sleep"]):
        # 'ready' is printed just before the sleep: the first reads may find the thread on its way
        # (and the frames and the kernel's state are read a moment apart: both must have arrived).
        deadline = time.monotonic() + 10
        while True:
            j = stacks(t.pid)
            main, frames = main_frames(j)
            asleep = main.get("state") == "sleeping in clock_nanosleep" and frames[:1] == [
                ("nap", marker_line("fidelity.py", "FID_NAP_LINE"))]
            if asleep or time.monotonic() > deadline:
                break
        assert j.get("from_outside", False) is outside, j
        main, frames = main_frames(j)
        assert frames == [("nap", marker_line("fidelity.py", "FID_NAP_LINE")),
                          ("main", marker_line("fidelity.py", "FID_NAP_CALL_LINE")),
                          ("<module>", marker_line("fidelity.py", "FID_MAIN_LINE"))], (outside, frames)
        assert main["holds_gil"] is False, main
        assert main["state"] == "sleeping in clock_nanosleep", main


@pytest.mark.parametrize("py", PARAMS)
def test_a_busy_loop_is_running(py):
    with Target("fidelity.py", py, mode="none", args=["busy"]) as t:
        deadline = time.monotonic() + 10
        while True:  # 'ready' comes just before the loop
            main, frames = main_frames(stacks(t.pid))
            if frames[0][0] == "spin_forever" or time.monotonic() > deadline:
                break
        assert frames[0][0] == "spin_forever", frames
        assert main["state"] == "running", main


@pytest.mark.parametrize("py", PARAMS)
def test_threads_that_come_and_go(py):
    # Threads end between listing and reading them: the read goes on, and a thread that ended
    # in between is no error.
    for t, outside in both_ways(py, "fidelity.py", ["reuse"]):
        failures = []
        for _ in range(25):
            rc, out, err = run_cli(t.pid, "backtrace", "--all", "--json", *(["--native"] if outside else []))
            if rc != 0:
                failures.append(err)
                continue
            names = [th["name"] for th in json.loads(out)["threads"]]
            assert "MainThread" in names, names
        assert len(failures) <= 1, failures
        assert t.alive()


@pytest.mark.parametrize("py", PARAMS)
def test_recursion_read_while_it_runs(py):
    recurse_line = marker_line("fidelity.py", "FID_RECURSE_LINE")
    for t, outside in both_ways(py, "fidelity.py", ["recurse"]):
        for _ in range(20):
            main, frames = main_frames(stacks(t.pid))
            assert frames[-1] == ("<module>", marker_line("fidelity.py", "FID_MAIN_LINE")), frames
            loop = {marker_line("fidelity.py", m) for m in ("FID_RECURSE_LOOP_LINE", "FID_RECURSE_CALL_LINE")}
            assert frames[-3][0] == "recurse_forever" and frames[-3][1] in loop, frames
            inner = frames[:-3]
            assert len(inner) <= 22, frames
            # Every frame above is recurse() (or, for a moment, the loop's own line): never a stale
            # or foreign frame in between.
            assert all(name == "recurse" for name, _ in inner), frames
            assert all(line == recurse_line for _, line in inner[1:]), frames


@pytest.mark.parametrize("py", PARAMS)
def test_non_ascii_names_and_values(py):
    for t, outside in both_ways(py, UNICODE):
        main, frames = main_frames(settled(t.pid, ("кириллица", marker_line(UNICODE, "UNI_WAIT_LINE"))))
        assert frames == [("кириллица", marker_line(UNICODE, "UNI_WAIT_LINE")),
                          ("函数", marker_line(UNICODE, "UNI_CALL_LINE")),
                          ("<module>", marker_line(UNICODE, "UNI_MODULE_LINE"))], (outside, frames)
        assert all(f["file"].endswith("/" + UNICODE) for f in main["frames"] if f["frame_type"] == "Python")
        rc, out, err = run_cli(t.pid, "backtrace")
        assert rc == 0 and "кириллица (" in out and UNICODE in out, (rc, out, err)
        if not outside:
            main, _ = main_frames(stacks(t.pid, "--locals"))
            local = {l["name"]: l for l in main["frames"][0]["locals"]}
            assert [l["name"] for l in main["frames"][0]["locals"]] == ["значение", "参数", "测试", "empty"]
            assert local["значение"]["value"] == "'текст'" and local["значение"]["kind"] == "argument", local
            assert local["测试"]["value"] == "'测试1 — ünïcödé 💩'", local
            assert local["empty"]["value"] == "''", local


@pytest.mark.parametrize("py", PARAMS)
def test_a_call_whose_arguments_come_later(py):
    # The call instruction runs after its arguments, on the call's first line: the line table
    # steps back there.
    for t, outside in both_ways(py, "fidelity.py", ["lines"]):
        _, frames = main_frames(settled(t.pid, ("wait_with", marker_line("fidelity.py", "FID_WAIT_LINE"))))
        assert frames[:2] == [("wait_with", marker_line("fidelity.py", "FID_WAIT_LINE")),
                              ("lines", marker_line("fidelity.py", "FID_CALL_LINE"))], (outside, frames)


@pytest.mark.parametrize("py", PARAMS)
def test_nested_class_names(py):
    for t, outside in both_ways(py, "fidelity.py", ["classes"]):
        want = "Outer.Inner.method" if tuple(map(int, py.version.split("."))) >= (3, 11) else "method"
        _, frames = main_frames(settled(t.pid, (want, marker_line("fidelity.py", "FID_METHOD_LINE"))))
        assert frames[0] == (want, marker_line("fidelity.py", "FID_METHOD_LINE")), (outside, frames)
