"""The crash site in native code (crash.capture): a fatal signal leaves /var/tmp/probing-PID.crash
with the native stack of the thread that crashed and every thread's Python stack, `probing
crash-report` prints it with the native frames named, and the process still dies by its signal,
after any handler that was there before (faulthandler's) has run."""
import json
import os
import signal
import time

import pytest

from conftest import TARGETS, Target, interpreter_params, marker_line, run_cli, torch_interpreter_params

PARAMS = interpreter_params()
CRASH_LINE = marker_line("crashes.py", "CRASH_LINE")
SCRIPT = os.path.join(TARGETS, "crashes.py")


class Reports:
    """Where a target and its children write their crash reports (under the chroot's root for the
    version matrix), read with `probing crash-report --root`; those asked for are removed at the
    end."""

    def __init__(self, pid):
        self.root = os.readlink("/proc/%d/root" % pid)  # "/" here
        self.pids = set()

    def path(self, pid):
        self.pids.add(int(pid))
        return os.path.join(self.root, "var/tmp/probing-%d.crash" % int(pid))

    def read(self, pid, *args):
        self.path(pid)
        rc, out, err = run_cli("crash-report", "--root", self.root, pid, *args)
        assert rc == 0, (out, err)
        return json.loads(out) if "--json" in args else out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for pid in self.pids:
            if os.path.exists(self.path(pid)):
                os.unlink(self.path(pid))


def version_of(py):
    return tuple(int(x) for x in py.version.split(".")[:2])


def crashed_thread(report, py):
    """The Python stack of the thread that crashed: marked so from 3.11 (which records each thread's
    kernel tid), else the main thread's (the one that crashes in these tests)."""
    threads = report["python"]
    if version_of(py) >= (3, 11):
        crashed = [t for t in threads if t["crashed"]]
        assert len(crashed) == 1, threads
        assert crashed[0]["native_thread_id"] == int(report["thread"].split()[0]), (crashed, report["thread"])
        return crashed[0]
    return next(t for t in threads if t["frames"] and t["frames"][-1]["func"] == "<module>")


@pytest.mark.parametrize("py", PARAMS)
def test_a_segfault_in_native_code_leaves_a_report(py):
    with Target("crashes.py", py) as t, Reports(t.pid) as reports:
        t.write("segv\n")
        assert t.wait_exit(30) == -signal.SIGSEGV, t.stderr_lines()[-10:]
        assert "probing: SIGSEGV in thread %d: crash report in /var/tmp/probing-%d.crash" % (t.pid, t.pid) \
            in "\n".join(t.stderr_lines()), t.stderr_lines()[-10:]
        assert os.stat(reports.path(t.pid)).st_mode & 0o777 == 0o600
        r = reports.read(t.pid, "--json")
        assert r["complete"] and r["notes"] == [], r
        assert (r["pid"], r["signal"], r["address"]) == (str(t.pid), "11 SIGSEGV", "0x%016x" % 0), r
        assert r["code"] == "1 address not mapped", r
        assert r["command"].split()[-1] == SCRIPT, r["command"]
        # The native stack starts where the fault was, in the C library (its internal functions
        # are named only where the library keeps its symbol table); the frames of the handler
        # are not in it, and the interpreter's entry point is, by name.
        native = r["native"]
        assert native and os.path.basename(native[0]["library"]).startswith("libc"), native[:3]
        assert not any("probing" in f["library"] for f in native), native
        assert any(f["func"] == "Py_BytesMain" for f in native), native
        # Every Python thread, and the line that called into native code.
        crashed = crashed_thread(r, py)
        frames = [(f["func"], f["file"], f["lineno"]) for f in crashed["frames"]]
        assert ("read_null", SCRIPT, CRASH_LINE) in frames, frames
        assert frames[-1][0] == "<module>", frames
        assert len(r["python"]) == 2, r["python"]
        idle = next(th for th in r["python"] if th is not crashed)
        assert idle["frames"][0]["func"] == "idle", idle
        # The same report as text.
        out = reports.read(t.pid)
        assert "SIGSEGV (address not mapped) at address 0x%016x" % 0 in out, out
        assert "read_null (%s:%d)\n      return ctypes.string_at(0)" % (SCRIPT, CRASH_LINE) in out, out
        assert "[Native]" in out and "Traceback" not in out, out


@pytest.mark.parametrize("py", PARAMS)
def test_an_abort_runs_faulthandler_too_and_dies_by_sigabrt(py):
    # faulthandler and the agent install their handlers at about the same time at start: in either
    # order, both run and the status is the signal's.
    with Target("crashes.py", py, env={"PYTHONFAULTHANDLER": "1"}) as t, Reports(t.pid) as reports:
        t.write("abort\n")
        assert t.wait_exit(30) == -signal.SIGABRT, t.stderr_lines()[-10:]
        err = "\n".join(t.stderr_lines())
        assert "Fatal Python error: Aborted" in err, err
        assert "crash report in /var/tmp/probing-%d.crash" % t.pid in err, err
        r = reports.read(t.pid, "--json")
        assert r["complete"] and r["signal"] == "6 SIGABRT", r
        assert r["sender"] == str(t.pid), r
        assert any(f["func"] == "abort" for f in r["native"]), r["native"]
        assert [f["func"] for f in crashed_thread(r, py)["frames"]][-1] == "<module>", r["python"]


@pytest.mark.parametrize("py", PARAMS)
def test_faulthandler_enabled_later_calls_the_agents_handler_once(py):
    # faulthandler.enable() after the agent puts its handler in front of the agent's and calls it
    # in turn; switching crash.capture off and on again must not put the agent's in front of it
    # again (the two would call each other until the stack ran out).
    with Target("crashes.py", py) as t, Reports(t.pid) as reports:
        t.write("faulthandler\n")
        t.wait_line("enabled", timeout=20)
        for value in ("off", "on", "on"):
            rc, out, err = run_cli(t.pid, "config", "crash.capture=" + value)
            assert rc == 0, err
        t.write("segv\n")
        assert t.wait_exit(30) == -signal.SIGSEGV, t.stderr_lines()[-10:]
        err = "\n".join(t.stderr_lines())
        assert err.count("Fatal Python error: Segmentation fault") == 1, err
        assert err.count("crash report in /var/tmp/probing-%d.crash" % t.pid) == 1, err
        assert reports.read(t.pid, "--json")["complete"]


@pytest.mark.parametrize("py", PARAMS)
def test_a_forked_child_writes_its_own_report_and_the_parent_goes_on(py):
    with Target("crashes.py", py) as t, Reports(t.pid) as reports:
        t.write("fork-segv\n")
        i = t.wait_line(lambda l: l.startswith("child "), timeout=30)
        _, child, _, status = t.stdout_lines()[i].split()
        assert os.WIFSIGNALED(int(status)) and os.WTERMSIG(int(status)) == signal.SIGSEGV, status
        assert t.alive()
        r = reports.read(child, "--json")
        assert r["complete"] and r["pid"] == child and r["signal"] == "11 SIGSEGV", r
        # The child runs the one thread that forked.
        assert len(r["python"]) == 1, r["python"]
        assert [f["func"] for f in r["python"][0]["frames"]][:2] == ["string_at", "read_null"], r["python"]
        assert not os.path.exists(reports.path(t.pid))


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize("py", torch_interpreter_params())
def test_a_dataloader_worker_that_segfaults_leaves_its_report(py, start):
    """PyTorch sets its own handlers in each worker; the agent's go back in front of them: in a
    forked worker through torch tracing's wrapper of the call that sets them, in one that spawn
    (or a forkserver) starts at its own agent's next check."""
    with Target("crashes.py", py, args=["torch"], ready_timeout=60) as t, Reports(t.pid) as reports:
        if start == "fork":
            deadline = time.monotonic() + 30
            wrapped = "from torch.utils.data._utils import signal_handling as s; " \
                      "print(type(s._set_worker_signal_handlers).__name__)"
            while run_cli(t.pid, "eval", wrapped)[1].strip() != "function":  # torch tracing is on
                assert time.monotonic() < deadline, run_cli(t.pid, "eval", wrapped)
                time.sleep(0.2)
        t.write("loader-segv\n" if start == "fork" else "loader-segv-spawn\n")
        i = t.wait_line(lambda l: l.startswith("loader failed "), timeout=90)
        worker = int(t.stdout_lines()[i].split()[2])
        err = "\n".join(t.stderr_lines())
        assert "Unexpected segmentation fault encountered in worker" in err, err  # PyTorch's ran too
        assert "crash report in /var/tmp/probing-%d.crash" % worker in err, err
        r = reports.read(worker, "--json")
        assert r["complete"] and r["signal"] == "11 SIGSEGV", r
        frames = [(f["func"], f["lineno"]) for f in crashed_thread(r, py)["frames"]]
        assert ("read_null", CRASH_LINE) in frames, frames
        getitem = "Items.__getitem__" if version_of(py) >= (3, 11) else "__getitem__"  # co_qualname
        assert (getitem, marker_line("crashes.py", "WORKER_LINE")) in frames, frames
        # (The parent may die later of PyTorch's SIGCHLD handler, which raises the worker's failure
        # again in whatever its main thread runs then: not the agent's doing.)


@pytest.mark.parametrize("py", PARAMS[:1])
def test_crash_capture_off_leaves_the_signal_alone(py):
    with Target("crashes.py", py) as t, Reports(t.pid) as reports:
        rc, out, err = run_cli(t.pid, "config", "crash.capture=off")
        assert rc == 0, err
        t.write("segv\n")
        assert t.wait_exit(30) == -signal.SIGSEGV
        assert not os.path.exists(reports.path(t.pid))
        assert not any("crash report" in line for line in t.stderr_lines()), t.stderr_lines()


def test_crash_report_says_what_is_missing(tmp_path):
    rc, out, err = run_cli("crash-report", "999999999")
    assert rc == 1 and "no crash report at /var/tmp/probing-999999999.crash" in err, (rc, out, err)
    bad = tmp_path / "x.crash"
    bad.write_text("hello\n")
    rc, out, err = run_cli("crash-report", str(bad))
    assert rc == 1 and "is not a probing crash report" in err, (rc, out, err)
