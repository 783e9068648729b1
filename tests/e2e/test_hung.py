"""Attaching to hung processes: every thread waits (a queue, a lock, a join, the GIL, a stopped
DataLoader). inject must get in within 300 ms, then eval and backtrace --all must answer; when no
thread is safe, it must say why for each thread and leave the target as it was."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import (DEBIAN_PYTHON, INTERPRETERS, LIBPROBING, Target, agent_mapped, clean_env, eval_ok,
                      needs_inject, run_cli, torch_interpreter_params)

pytestmark = needs_inject

INJECT_BUDGET_MS = 300


def _thread_states(pid):
    """{tid: (state, syscall number or None)} from /proc, without stopping anything."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open("/proc/%d/task/%s/syscall" % (pid, tid)) as f:
                first = f.read().split()[0]
        except (OSError, IndexError):
            continue
        out[int(tid)] = (state, int(first) if first.isdigit() else None)
    return out


def _settle(pid, threads, timeout=10.0):
    """Waits until `threads` threads exist and all are blocked in a system call."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _thread_states(pid)
        if len(states) >= threads and all(s == "S" and nr is not None for s, nr in states.values()):
            return states
        time.sleep(0.01)
    raise AssertionError("the target's threads did not settle into their waits: %r" % _thread_states(pid))


def inject_timed(pid):
    """probing PID inject -v; returns (what it borrowed, milliseconds until the agent answered)."""
    rc, out, err = run_cli(pid, "inject", "-v")
    assert rc == 0, (rc, out, err)
    assert out == "Successfully injected probes into process %d\n" % pid
    used = re.search(r"^probing: loaded \S+ using (.*) \(\d+ thread\(s\) examined\)$", err, re.M)
    took = re.search(r"^probing: ([\d.]+) ms from start to the agent answering$", err, re.M)
    assert used and took, err
    return used.group(1), float(took.group(1))


def backtrace_all(pid):
    rc, out, err = run_cli(pid, "backtrace", "--all")
    assert (rc, err) == (0, ""), (rc, out, err)
    return out


# mode: (threads once settled, whether all of them wait on a futex, what backtrace --all shows)
HUNG = {
    "queue": (1, True, [r"Queue\.get \(", r"queue\.Queue\(\)\.get\(\)",
                        r"waiting for a notify on threading\.Condition at 0x[0-9a-f]+\n  Condition\.wait \("]),
    "queue_timeout": (1, True, [r"Queue\.get \(", r"q\.get\(timeout=1\)"]),
    "deadlock": (3, True, [r'waiting for thread \d+ "holds-first" to end',
                           r"waiting for threading\.Lock `theirs` at 0x[0-9a-f]+\n.*\n      with theirs:"]),
    "rlock": (3, True, [r'waiting for threading\.RLock `guard` at 0x[0-9a-f]+ \(held by thread \d+ "rlock-holder"\)']),
    "waits": (3, False, [r'"event-waiter"', r"Event\.wait \(", r'"sleeper"', r"waiting for thread \d+ "
                         r'"event-waiter" to end']),
}


@pytest.mark.parametrize("mode", sorted(HUNG))
def test_inject_into_a_hung_process(interp, target_factory, mode):
    threads, all_futex, shown = HUNG[mode]
    t = target_factory("hung.py", interp, mode="none", args=[mode])
    states = _settle(t.pid, threads)
    futex = 202  # x86_64
    if all_futex and os.uname().machine == "x86_64":
        assert all(nr == futex for _, nr in states.values()), states
    how, ms = inject_timed(t.pid)
    if all_futex:
        assert "blocked in futex (" in how, how  # judged by its whole stack, then borrowed
    assert ms < INJECT_BUDGET_MS, (mode, how, ms)
    assert eval_ok(t.pid, "model") == "{'layers': 3}\n"
    out = backtrace_all(t.pid)
    for pattern in shown:
        assert re.search(pattern, out), (pattern, out)
    if mode == "rlock":
        rc, out, err = run_cli(t.pid, "backtrace", "--all", "--json")
        assert rc == 0, (out, err)
        threads = {th["name"]: th for th in json.loads(out)["threads"]}
        wanted = threads["rlock-wanter"]["waiting_for"]
        assert wanted["kind"] == "threading.RLock" and wanted["expr"] == "guard", wanted
        assert wanted["owner"] == threads["rlock-holder"]["thread_id"] and wanted["owner_name"] == "rlock-holder"
        assert threads["MainThread"]["waiting_for"]["kind"] == "thread_end"
    assert t.alive()


def test_inject_while_one_thread_holds_the_gil(interp, target_factory):
    t = target_factory("hung.py", interp, mode="none", args=["gil"])
    how, ms = inject_timed(t.pid)
    assert ms < INJECT_BUDGET_MS, (how, ms)
    assert eval_ok(t.pid, "model") == "{'layers': 3}\n"  # once the holder's C call lets go
    rc, out, err = run_cli(t.pid, "backtrace", "--all")
    assert rc == 0 and "gil.<locals>.hold (" in out and "gil.<locals>.want (" in out, (out, err)
    # Read without the GIL when the holder was in its C call; a thread named as the holder (the
    # GIL may also have been between holders at the instant of the read) must be that one.
    holders = re.findall(r"^Thread \d+ .*holds the GIL.*\n  (\S+) \(", out, re.M)
    assert holders in ([], ["gil.<locals>.hold"]), out


def test_when_no_thread_is_safe_each_is_listed_and_the_target_is_unchanged(interp, target_factory):
    t = target_factory("hung.py", interp, mode="none", args=["loader_lock"])
    _settle(t.pid, 1)
    maps_before = open("/proc/%d/maps" % t.pid).read()
    rc, out, err = run_cli(t.pid, "inject", "--timeout", "0.5")
    assert rc != 0 and out == "", (rc, out, err)
    assert "no thread was safe to borrow within 500 ms" in err, err
    assert "the target was not changed" in err, err
    assert re.search(r'^  thread %d "[^"]+": the C library\'s dl_iterate_phdr is on its stack' % t.pid, err, re.M), err
    assert agent_mapped(t.pid) == 0
    assert open("/proc/%d/maps" % t.pid).read() == maps_before
    assert _thread_states(t.pid)[t.pid][0] == "S" and t.alive()
    # Stacks still come, read from outside.
    rc, out, err = run_cli(t.pid, "backtrace")
    assert rc == 0 and "(no agent: read from outside)" in out, (rc, out, err)
    assert "loader_lock.<locals>.each_object (" in out, out


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_inject_into_a_dataloader_whose_workers_are_stopped(interp, target_factory):
    t = target_factory("hung.py", interp, mode="none", args=["dataloader"], ready_timeout=60)
    workers = [l for l in t.stdout_lines() if l.startswith("workers ")]
    children = [int(p) for p in workers[0].split()[1:]] if workers else []
    assert len(children) == 2, t.stdout_lines()
    deadline = time.monotonic() + 20
    while any(_thread_states(c)[c][0] != "T" for c in children):
        assert time.monotonic() < deadline, "the workers were not stopped"
        time.sleep(0.01)
    # The main thread waits for a batch that never comes; every other thread is idle.
    main_wait = re.compile(r"_MultiProcessingDataLoaderIter\._(try_)?get_data \(")
    while True:
        states = _thread_states(t.pid)
        if all(s == "S" for s, _ in states.values()):
            rc, out, _ = run_cli(t.pid, "backtrace")
            if rc == 0 and main_wait.search(out):
                break
        assert time.monotonic() < deadline, (states, run_cli(t.pid, "backtrace"))
        time.sleep(0.05)
    how, ms = inject_timed(t.pid)
    assert ms < INJECT_BUDGET_MS, (how, ms)
    assert eval_ok(t.pid, "model") == "{'layers': 3}\n"
    out = backtrace_all(t.pid)
    assert main_wait.search(out), out
    # The tensors too: the main thread waits in the standard library's selector, so the census
    # runs on the agent's thread, which holds the GIL the main thread would need to come back.
    eval_ok(t.pid, "import torch; probe_t = torch.zeros(1000)")
    start = time.monotonic()
    rc, out, err = run_cli(t.pid, "query", "--format", "json", "SELECT names, bytes FROM python.tensors")
    assert rc == 0 and {"names": "probe_t", "bytes": 4000} in json.loads(out), (rc, out, err)
    assert time.monotonic() - start < 3, time.monotonic() - start
    for c in children:  # the workers are as they were: stopped, and not ours to resume
        assert _thread_states(c)[c][0] == "T"
        os.kill(c, signal.SIGCONT)


def test_twenty_fresh_hung_processes():
    """20 hung processes in a row, taking turns between the interpreters and the waits."""
    usable = [it for it in INTERPRETERS if not it.skip_reason]
    if not usable:
        pytest.skip("no interpreter: " + "; ".join(it.skip_reason for it in INTERPRETERS))
    modes = ["queue", "deadlock", "queue_timeout", "rlock"]
    for i in range(20):
        interp, mode = usable[i % len(usable)], modes[i % len(modes)]
        with Target("hung.py", interp, mode="none", args=[mode]) as t:
            _settle(t.pid, HUNG[mode][0])
            how, ms = inject_timed(t.pid)
            assert "blocked in futex (" in how, (i, interp.name, mode, how)
            assert eval_ok(t.pid, "import os; os.getpid()") == "%d\n" % t.pid, (i, interp.name, mode)


def test_a_process_in_its_own_root_and_namespaces(interp, tmp_path):
    """A target chrooted into a copy of the host's mounts, in mount and network namespaces of its
    own, as in a container: its /proc/PID/maps names files that are not at those paths for us, so
    libraries must be read through /proc/PID/map_files, and its agent's abstract socket is in its
    network namespace, so the CLI must make its socket there. inject (whole-stack judgement
    included), the native stack and eval must work as for any other process."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a mount namespace and chroot")
    root = str(tmp_path / "root")
    os.mkdir(root)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets", "hung.py")
    cmd = ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c",
           'mount --rbind / "$0" && exec chroot "$0" "$1" "$2" queue', root, interp.path, script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            pytest.skip("cannot run a chrooted process here: %r %r" % (line, proc.stderr.read()[-300:]))
        _settle(proc.pid, 1)
        rc, out, err = run_cli(proc.pid, "backtrace", "--native")
        assert rc == 0, (out, err)
        assert "end early" not in out and "Queue.get (" in out, out
        assert re.search(r"^  \S+\+0x[0-9a-f]+ \(libc\.so\.6\) \[Native\]$", out, re.M), out  # named from its libc
        how, ms = inject_timed(proc.pid)
        assert "blocked in futex (" in how, how
        assert eval_ok(proc.pid, "model") == "{'layers': 3}\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _child_of(pid, timeout=10.0):
    """The first child of `pid` (unshare --fork's), once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                children = f.read().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("process %d started no child" % pid)


def test_a_process_in_its_own_pid_namespace(interp):
    """As in a Docker or Kubernetes container without the host's pid namespace: the target sees
    itself as pid 1, so its agent's socket is @probing-1 (in its own network namespace) and it
    reads its inject settings from /tmp/probing-1.settings; CPython keeps the thread ids it sees.
    Every command takes the host's pid and must find all of them."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make pid and network namespaces")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets", "hung.py")
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--net", interp.path, script, "queue"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            pytest.skip("cannot make a pid namespace here: %r %r" % (line, proc.stderr.read()[-300:]))
        pid = _child_of(proc.pid)
        with open("/proc/%d/status" % pid) as f:
            assert re.search(r"^NSpid:\s+%d\s+1$" % pid, f.read(), re.M)  # pid 1 in its own namespace
        _settle(pid, 1)
        rc, out, err = run_cli(pid, "inject", "-D", "query.max_rows=777")
        assert rc == 0, (out, err)
        assert eval_ok(pid, "import os; os.getpid()") == "1\n"
        rc, out, err = run_cli(pid, "query", "SELECT value FROM information_schema.df_settings "
                                              "WHERE name = 'query.max_rows'")
        assert rc == 0 and "777" in out, (out, err)  # -D reached the agent
        rc, out, err = run_cli(pid, "backtrace", "--native")
        assert rc == 0 and "Queue.get (" in out, out  # Python frames matched to the host's tids
        rc, out, err = run_cli("list")
        assert re.search(r"^%d\s" % pid, out, re.M), out
        rc, out, err = run_cli("doctor", pid)
        assert rc == 0 and "answers on @probing-1 " in out, out
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_inject_copies_the_agent_where_the_target_can_load_it(tmp_path):
    """The target's mount namespace hides the directory of the agent library (as a container's
    filesystem would lack it): inject copies the library into the target's /tmp and loads that."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a mount namespace")
    hidden = os.path.dirname(LIBPROBING)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets", "hung.py")
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           'mount -t tmpfs none "$0" && exec "$1" "$2" queue', hidden, DEBIAN_PYTHON, script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True,
                            start_new_session=True)
    copies = []
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            pytest.skip("cannot make a mount namespace here: %r %r" % (line, proc.stderr.read()[-300:]))
        assert not os.path.exists("/proc/%d/root%s" % (proc.pid, LIBPROBING))  # hidden from the target
        _settle(proc.pid, 1)
        rc, out, err = run_cli(proc.pid, "inject", "-v")
        assert rc == 0, (out, err)
        copied = re.search(r"is not in the target's filesystem: copied to (/tmp/probing-agent-\S+/libprobing\.so)$",
                           err, re.M)
        assert copied, err
        copies.append(os.path.dirname(copied.group(1)))
        with open("/proc/%d/maps" % proc.pid) as f:
            assert copied.group(1) in f.read()
        assert eval_ok(proc.pid, "model") == "{'layers': 3}\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for d in copies:
            shutil.rmtree(d, ignore_errors=True)
