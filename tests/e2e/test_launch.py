"""The ways the agent arrives at start, each under each interpreter: probing launch (LD_PRELOAD),
LD_PRELOAD by hand, PROBE=1 / PROBING=1 through probing.pth, and import probing; probing.init()."""
import os
import subprocess
import time

import pytest

from conftest import (BUILD, DEBIAN_PYTHON, LIBPROBING, PYPKG, REPO, agent_listening, agent_mapped, clean_env,
                      eval_ok, http_request, make_user_site, run_cli, wait_for_health)


def _check_agent(t, interp):
    """The agent in t answers, is this process's, runs Python in its __main__, and is loaded once."""
    h = t.health
    assert h["pid"] == t.pid
    assert h["python_status"] == "ready"
    assert h["python"].startswith(interp.version + "."), h["python"]
    assert h["cmdline"] == [interp.executable, t.script_path]
    assert eval_ok(t.pid, "print(model)") == "{'layers': 3}\n"
    assert eval_ok(t.pid, "import os; os.getpid()") == "%d\n" % t.pid
    assert eval_ok(t.pid, "import sys; sys.executable") == repr(interp.executable) + "\n"
    assert agent_mapped(t.pid) == 1


@pytest.mark.parametrize("mode", ["launch", "preload", "probe", "probing"])
def test_agent_at_start(interp, mode, target_factory):
    t = target_factory("idle.py", interp, mode=mode)
    _check_agent(t, interp)


def test_import_probing_init(interp, target_factory):
    t = target_factory("imports_probing.py", interp, mode="import")
    assert "agent at @probing-%d" % t.pid in t.stdout_lines()
    _check_agent(t, interp)
    # init() is idempotent and names the socket.
    assert eval_ok(t.pid, "import probing; probing.init()") == "'@probing-%d'\n" % t.pid
    assert agent_mapped(t.pid) == 1


def test_import_probing_init_under_launch(interp, target_factory):
    """probing.init() in a process that already has the preloaded agent: still one agent."""
    t = target_factory("imports_probing.py", interp, mode="launch", env={"PYTHONPATH": PYPKG})
    assert "agent at @probing-%d" % t.pid in t.stdout_lines()
    _check_agent(t, interp)


def test_probe_env_under_launch_one_agent(interp, target_factory):
    """PROBE=1 with the .pth hook and LD_PRELOAD at once: one agent, not two."""
    t = target_factory("idle.py", interp, mode="probe", env={"LD_PRELOAD": LIBPROBING})
    _check_agent(t, interp)


def test_pth_without_probe_starts_no_agent(interp, target_factory, tmp_path):
    t = target_factory("idle.py", interp, mode="pth_off")
    # probing.init() would have loaded the library before the script's first line ran.
    assert agent_mapped(t.pid) == 0
    assert not agent_listening(t.pid)
    rc, out, err = run_cli(t.pid, "eval", "1")
    assert rc == 1 and "has no probing agent" in err, err
    # ...and the hook was live in that setup: site processed the .pth (its path line is on sys.path).
    root = str(tmp_path)
    make_user_site(interp.path, root)
    p = subprocess.run([interp.path, "-c", "import sys; print(%r in sys.path)" % PYPKG], capture_output=True,
                       text=True, timeout=20, env=clean_env({"PYTHONUSERBASE": root}))
    assert p.stdout == "True\n", (p.stdout, p.stderr)


def test_make_install_recipe_hooks_a_venv(interp, tmp_path):
    """`make install`'s two steps (cmake --install, then scripts/install-pth.sh) into a prefix, with
    a venv of the interpreter as PYTHONS: PROBE=1 then starts the installed agent there, and only
    with PROBE=1."""
    if not os.path.exists(os.path.join(BUILD, "cmake_install.cmake")):
        pytest.skip("%s is not a CMake build tree (a release stage): make install does not apply" % BUILD)
    if not os.path.exists(interp.executable):
        pytest.skip("%s runs in a chroot (the version matrix): a venv of it is that root's, not this host's"
                    % interp.executable)
    prefix, venv = tmp_path / "prefix", tmp_path / "venv"
    for cmd in (["cmake", "--install", BUILD, "--prefix", str(prefix)],
                [interp.path, "-m", "venv", "--without-pip", str(venv)],
                [os.path.join(REPO, "scripts", "install-pth.sh"), BUILD, str(prefix), str(venv / "bin/python")]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean_env())
        assert p.returncode == 0, (cmd, p.stdout, p.stderr)
    assert "PROBE=1 starts the agent with: %s" % (venv / "bin/python") in p.stdout, p.stdout
    probe = ("import os; print(os.environ.get('PROBE'), "
             "sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libprobing' in l}))")
    for value, library in (("1", [str(prefix / "lib" / "probing" / "libprobing.so")]), ("0", [])):
        p = subprocess.run([str(venv / "bin/python"), "-c", probe], capture_output=True, text=True,
                           timeout=30, env=clean_env({"PROBE": value}))
        assert p.returncode == 0 and p.stdout == "%s %r\n" % (value, library), (p.stdout, p.stderr)


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_probe_off_values_start_no_agent(interp, target_factory, value):
    t = target_factory("idle.py", interp, mode="pth_off", env={"PROBE": value})
    assert agent_mapped(t.pid) == 0
    assert not agent_listening(t.pid)


def test_launch_define_reaches_agent(interp, target_factory):
    """-D eval.timeout_s=1 applies to an eval whose request names no timeout."""
    t = target_factory("idle.py", interp, mode="launch", launch_args=["-D", "eval.timeout_s=1"])
    t0 = time.monotonic()
    r = http_request(t.pid, "POST", "/eval", {"code": "while True: pass"}, timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert "timeout" in r.json()["error"]["message"], r
    assert 0.9 <= elapsed < 3, elapsed
    assert eval_ok(t.pid, "1 + 1") == "2\n"


def test_launch_bad_define(interp, tmp_path):
    script = tmp_path / "ran.py"
    script.write_text("print('ran')\n")
    rc, out, err = run_cli("launch", "-D", "no.such_setting=1", "--", interp.path, str(script))
    assert rc != 0
    assert "ran" not in out
    assert "no.such_setting" in err, err
    rc, out, err = run_cli("launch", "-D", "eval.timeout_s=-3", "--", interp.path, str(script))
    assert rc != 0 and "ran" not in out
    assert "eval.timeout_s" in err, err


def test_launch_define_then_command_with_options(interp):
    """After --, everything is the command's, even with -D before it: `-c` and `--flag` belong to
    the command, not to probing."""
    rc, out, err = run_cli("launch", "-D", "eval.timeout_s=7", "--", interp.path, "-c",
                           "import os, sys; print(sys.argv[1:], os.environ.get('PROBING_EVAL_TIMEOUT_S'))", "--flag")
    assert (rc, out, err) == (0, "['--flag'] 7\n", "")


def test_launch_missing_command():
    rc, out, err = run_cli("launch", "--", "/nonexistent/e2e-program")
    assert rc == 1
    assert "/nonexistent/e2e-program" in err, err


def test_launch_passes_exit_code_and_args(interp):
    rc, out, err = run_cli("launch", "--", interp.path, "-c", "import sys; print(sys.argv[1:]); sys.exit(7)", "a b", "c")
    assert (rc, out) == (7, "['a b', 'c']\n"), err


def test_launch_child_python_gets_agent(interp, target_factory, tmp_path):
    """Every Python process the launched command starts gets an agent."""
    parent = tmp_path / "parent.py"
    parent.write_text("import subprocess, sys\nmodel = {'layers': 3}\n"
                      "subprocess.run([sys.executable, %r])\n" % os.path.join(os.path.dirname(__file__), "targets", "idle.py"))
    t = target_factory(str(parent), interp, mode="launch")  # 'ready' comes from the child
    with open("/proc/%d/task/%d/children" % (t.pid, t.pid)) as f:
        children = [int(c) for c in f.read().split()]
    assert len(children) == 1, children
    child = children[0]
    wait_for_health(child, 10)
    assert eval_ok(child, "print(model)") == "{'layers': 3}\n"
    assert eval_ok(child, "import os; os.getppid()") == "%d\n" % t.pid


def _threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test_no_handler_threads_until_a_request(interp, target_factory):
    # An agent that has served nothing runs its I/O thread, three watchers (probing-metrics,
    # probing-torch, probing-exc), the sampler, and the Python worker the exception hooks' watcher
    # installs them with (idle between its checks: it holds no lock), and nothing else: no handler
    # thread holds a lock when the host forks. (The sampler's locks are its own tables', which no
    # child touches.)
    plain = target_factory("idle.py", interp, mode="none")
    agent = target_factory("idle.py", interp, mode="preload")
    expected = _threads(plain.pid) + 6
    deadline = time.monotonic() + 5  # the bootstrap thread ends just after the agent answers
    while _threads(agent.pid) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _threads(agent.pid) == expected
    # A child forked from an eval (handler pool and worker running) exits as it would without.
    # (3.12+ warn about fork() in any process with threads: not the agent's to silence.)
    out = eval_ok(agent.pid, "import os, warnings\nwarnings.simplefilter('ignore', DeprecationWarning)\n"
                             "pid = os.fork()\nif pid == 0:\n    os._exit(sum(range(10)) - 42)\n"
                             "os.waitpid(pid, 0)[1] >> 8")
    assert out == "3\n", out
    assert _threads(agent.pid) > expected  # the eval started the handler pool and a Python worker


def test_free_threaded_build_is_refused_at_start(target_factory, tmp_path):
    # A free-threaded CPython (3.13t) exports _Py_MergeZeroLocalRefcount; none is installed here,
    # so a library that exports it stands in for one. The agent must say so at start and refuse
    # every Python request, never reading objects laid out for another build.
    src = tmp_path / "ft.c"
    src.write_text("void _Py_MergeZeroLocalRefcount(void *op) { (void)op; }\n")
    lib = tmp_path / "libft.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    t = target_factory("idle.py", DEBIAN_PYTHON, mode="none", wait_health=False,
                       env={"LD_PRELOAD": "%s:%s" % (lib, LIBPROBING)})
    i = t.err.wait_for(lambda l: "free-threaded build" in l, 10)
    assert i is not None, t.stderr_lines()
    assert "not support" in t.stderr_lines()[i]
    rc, out, err = run_cli(t.pid, "eval", "1")
    assert rc == 1 and "free-threaded build (no GIL)" in err, (rc, out, err)
    assert "free-threaded" in http_request(t.pid, "GET", "/health").json()["python_status"]
    rc, out, err = run_cli(t.pid, "backtrace")
    assert rc == 1 and "free-threaded" in err, (rc, out, err)
    assert t.alive()


def test_forked_child_exits_as_without_the_agent(interp, target_factory):
    # A child inherits the agent's exit handler but not its threads: leaving through sys.exit, it
    # must neither touch the parent's server nor wait for it.
    t = target_factory("fork_exit.py", interp, mode="preload")
    assert eval_ok(t.pid, "1 + 1") == "2\n"  # the agent has served: its pool and workers run
    start = 0
    for _ in range(3):
        t.write("fork\n")
        start = t.wait_line(lambda l: l.startswith("child "), 30, start) + 1
    children = [l for l in t.stdout_lines() if l.startswith("child ")]
    assert len(children) == 3, t.stdout_lines()
    assert [l.split()[1] for l in children] == ["7"] * 3, children
    # The agent's 200 ms exit wait must not apply here. It would apply to every child alike, so the
    # quickest one tells; the others may have waited for a CPU on a loaded machine.
    assert min(float(l.split()[2]) for l in children) < 0.15, children
    assert eval_ok(t.pid, "2 + 2") == "4\n"
