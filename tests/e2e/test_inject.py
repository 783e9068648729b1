"""probing PID inject: attaching the agent to running processes with ptrace."""
import os
import subprocess
import time

import pytest

from conftest import (INTERPRETERS, Target, agent_mapped, clean_env, eval_ok, eval_while_gil_held, http_request,
                      needs_inject, run_cli, torch_interpreter_params)

pytestmark = needs_inject

INJECTED = "Successfully injected probes into process %d\n"


def inject(pid, *args, timeout=30):
    return run_cli(pid, "inject", *args, timeout=timeout)


def inject_ok(t, *args):
    assert agent_mapped(t.pid) == 0
    t0 = time.monotonic()
    rc, out, err = inject(t.pid, *args)
    elapsed = time.monotonic() - t0
    assert (rc, err) == (0, ""), (rc, out, err)
    assert out == INJECTED % t.pid
    # inject returns when the agent answers: no polling needed now.
    r = http_request(t.pid, "GET", "/health", timeout=5)
    assert r.status == 200 and r.json()["pid"] == t.pid
    assert agent_mapped(t.pid) == 1
    assert t.alive()
    return elapsed


def _proc_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _tracer(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------------------------------------
# Target kinds

def test_inject_sleeping(interp, target_factory):
    t = target_factory("idle.py", interp, mode="none")
    inject_ok(t)
    assert eval_ok(t.pid, "print(model)") == "{'layers': 3}\n"
    assert eval_ok(t.pid, "import os; os.getpid()") == "%d\n" % t.pid
    c1 = int(eval_ok(t.pid, "counter"))
    t.wait_line(lambda l: l.startswith("tick"), start=len(t.stdout_lines()))
    t.wait_line(lambda l: l.startswith("tick"), start=len(t.stdout_lines()))
    assert int(eval_ok(t.pid, "counter")) > c1  # the target's main loop goes on
    assert t.stderr_lines() == []


def test_inject_spinning(interp, target_factory):
    t = target_factory("spin.py", interp, mode="none")
    inject_ok(t)
    assert eval_ok(t.pid, "print(model)") == "{'layers': 3}\n"
    s1 = int(eval_ok(t.pid, "spins"))
    s2 = int(eval_ok(t.pid, "import time; time.sleep(0.2); spins"))
    assert s2 > s1 > 0, "the spinner made no progress: %d then %d" % (s1, s2)
    assert eval_ok(t.pid, "import threading; sorted(t.name for t in threading.enumerate())") == \
        "['MainThread', 'spinner']\n"


def test_inject_stdin_blocked(interp, target_factory):
    t = target_factory("stdin_reader.py", interp, mode="none")
    t.write("3\n")
    t.wait_line("echo 3 squared 9")
    inject_ok(t)
    assert eval_ok(t.pid, "counter") == "1\n"
    assert eval_ok(t.pid, "print(model)") == "{'layers': 3}\n"
    # The interrupted read() goes on: what is written afterwards is still read and echoed.
    t.write("12\n")
    t.wait_line("echo 12 squared 144")
    t.write("hello\n")
    t.wait_line("echo hello")
    assert eval_ok(t.pid, "counter") == "3\n"
    assert t.stdout_lines() == ["ready", "echo 3 squared 9", "echo 12 squared 144", "echo hello"]
    t.proc.stdin.close()
    t.wait_line("eof")
    assert t.wait_exit(10) == 0
    assert t.stderr_lines() == []


def test_inject_100_threads(interp, target_factory):
    t = target_factory("threads100.py", interp, mode="none")
    inject_ok(t)
    assert eval_ok(t.pid, "import threading; sum(t.name.startswith('worker-') for t in threading.enumerate())") == "100\n"
    assert eval_ok(t.pid, "print(model)") == "{'layers': 3}\n"
    assert len(os.listdir("/proc/%d/task" % t.pid)) >= 101


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_inject_torch_training_loop(interp, target_factory):
    t = target_factory("torch_train.py", interp, mode="none", ready_timeout=60)
    inject_ok(t)
    assert eval_ok(t.pid, "type(model).__name__") == "'Linear'\n"
    assert eval_ok(t.pid, "tuple(model.weight.shape)") == "(4, 16)\n"
    s1 = int(eval_ok(t.pid, "step"))
    out = eval_ok(t.pid, "import time; time.sleep(0.2); step")
    assert int(out) > s1 > 0  # training went on while the agent served
    assert float(eval_ok(t.pid, "loss_value")) > 0
    assert t.alive()


# ---------------------------------------------------------------------------------------------
# Repetition, idempotence, transparency

def test_twenty_fresh_processes():
    """20 fresh processes in a row, taking turns between the interpreters: each injected and
    evaluated, with no failure."""
    usable = [it for it in INTERPRETERS if not it.skip_reason]
    if not usable:
        pytest.skip("no interpreter: " + "; ".join(it.skip_reason for it in INTERPRETERS))
    for i in range(20):
        interp = usable[i % len(usable)]
        with Target("idle.py", interp, mode="none") as t:
            inject_ok(t)
            assert eval_ok(t.pid, "import os; (os.getpid(), model['layers'])") == "(%d, 3)\n" % t.pid, \
                "process #%d (%s)" % (i, interp.name)


def test_second_inject_is_a_no_op(interp, target_factory):
    t = target_factory("idle.py", interp, mode="none")
    inject_ok(t)
    rc, out, err = inject(t.pid)
    assert rc == 0, (out, err)
    assert "already" in out, out
    assert "Successfully injected" not in out
    assert agent_mapped(t.pid) == 1
    assert eval_ok(t.pid, "1 + 1") == "2\n"


def test_inject_into_launched_process_is_a_no_op(interp, target_factory):
    t = target_factory("idle.py", interp, mode="launch")
    rc, out, err = inject(t.pid)
    assert rc == 0 and "already" in out, (out, err)
    assert agent_mapped(t.pid) == 1


def test_output_identical_with_inject_in_the_middle(interp):
    """deterministic.py prints the same with and without an inject (and evals) in the middle. Both
    runs go at once, to keep the suite fast."""
    plain = Target("deterministic.py", interp, mode="none")
    probed = Target("deterministic.py", interp, mode="none")
    try:
        plain.start()
        probed.start()
        probed.wait_line("step 10")
        rc, out, err = inject(probed.pid)
        assert (rc, out, err) == (0, INJECTED % probed.pid, "")
        assert eval_ok(probed.pid, "print(model); total > 0") == "{'layers': 3}\nTrue\n"
        for t in (plain, probed):
            t.wait_line("done", timeout=30)
            assert t.wait_exit(10) == 0
            assert t.out.wait_closed(10) and t.err.wait_closed(10)
        assert "done" not in probed.stdout_lines()[:12], "inject came too late to be in the middle"
        assert len(plain.stdout_lines()) == 43
        assert probed.stdout_lines() == plain.stdout_lines()
        assert probed.stderr_lines() == plain.stderr_lines() == []
    finally:
        plain.kill()
        probed.kill()


# ---------------------------------------------------------------------------------------------
# -D settings

def test_define_gil_timeout(interp, target_factory):
    t = target_factory("gil_holder.py", interp, mode="none", args=[20])
    inject_ok(t, "-D", "gil.timeout_s=1", "-D", "eval.timeout_s=2")
    # eval.timeout_s applies to a request that names no timeout.
    t0 = time.monotonic()
    r = http_request(t.pid, "POST", "/eval", {"code": "while True: pass"}, timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert 1.9 <= elapsed < 4, elapsed
    # gil.timeout_s: with the GIL held, the answer comes after about 1 s, not the default 5 s.
    holder, rc, out, err, elapsed = eval_while_gil_held(t)
    assert rc == 1 and "GIL" in err and "tid %d" % holder in err, (out, err)
    assert 0.9 <= elapsed < 2.5, "GIL error after %.2f s with -D gil.timeout_s=1" % elapsed


def test_define_bad_key(interp, target_factory):
    t = target_factory("idle.py", interp, mode="none")
    rc, out, err = inject(t.pid, "-D", "no.such_setting=1")
    assert rc != 0
    assert "no.such_setting" in err, err
    assert agent_mapped(t.pid) == 0 and t.alive()
    rc, out, err = inject(t.pid, "-D", "gil.timeout_s=abc")
    assert rc != 0 and "gil.timeout_s" in err, err
    assert agent_mapped(t.pid) == 0 and t.alive()


def test_define_on_already_attached(interp, target_factory):
    t = target_factory("idle.py", interp, mode="launch")
    rc, out, err = inject(t.pid, "-D", "eval.timeout_s=3")
    assert rc == 0 and "already" in out, (out, err)


# ---------------------------------------------------------------------------------------------
# Errors

def test_inject_dead_pid(interp):
    p = subprocess.Popen([interp.path, "-c", "pass"], env=clean_env())
    p.wait()
    rc, out, err = inject(p.pid)
    assert rc == 1 and out == ""
    assert "no process %d" % p.pid in err, err


def test_inject_non_python_process():
    p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # Popen returns once exec succeeded: the process is sleep(1) now.
        assert os.path.basename(os.path.realpath("/proc/%d/exe" % p.pid)) == "sleep"
        rc, out, err = inject(p.pid)
        assert rc == 1, (out, err)
        assert "not a Python process" in err, err
        assert p.poll() is None, "the process died"
        assert _proc_state(p.pid) in ("S", "R"), "left stopped or traced"
        assert _tracer(p.pid) == 0
        assert agent_mapped(p.pid) == 0
    finally:
        p.kill()
        p.wait()


def test_inject_zombie(interp):
    p = subprocess.Popen([interp.path, "-c", "print('ready', flush=True)"], stdout=subprocess.PIPE, env=clean_env())
    try:
        assert p.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while _proc_state(p.pid) != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        rc, out, err = inject(p.pid)
        assert rc == 1, (out, err)
        assert "zombie" in err, err
        assert _proc_state(p.pid) == "Z"
    finally:
        p.wait()


def test_inject_stopped_process(interp, target_factory):
    """A stopped (SIGSTOP) target: a clear error, left stopped and untraced."""
    t = target_factory("idle.py", interp, mode="none")
    os.kill(t.pid, 19)  # SIGSTOP
    try:
        deadline = time.monotonic() + 10
        while _proc_state(t.pid) != "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rc, out, err = inject(t.pid, timeout=20)
        assert rc == 1, (out, err)
        assert "stopped" in err, err
        assert _proc_state(t.pid) == "T" and _tracer(t.pid) == 0
    finally:
        os.kill(t.pid, 18)  # SIGCONT
    assert agent_mapped(t.pid) == 0
    inject_ok(t)
    assert eval_ok(t.pid, "model['layers']") == "3\n"


def test_inject_needs_a_pid():
    rc, out, err = run_cli("inject")
    assert rc != 0
    assert "pid" in err, err
