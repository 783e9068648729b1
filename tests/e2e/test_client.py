"""probing.connect(): every method against a real target, remote errors with their traceback,
timeouts, a target that exits mid-call; and the IPython magic, with a stand-in shell and in Debian's real
IPython."""
import builtins
import io
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

from conftest import DEBIAN_PYTHON, INTERPRETERS, LIBPROBING, PYPKG, TARGETS, clean_env, interpreter_params

sys.path.insert(0, PYPKG)
import probing  # noqa: E402  (the build's package)
from probing import ipython as probing_ipython  # noqa: E402

DEBIAN = INTERPRETERS[0]


@pytest.fixture
def target(target_factory):
    return target_factory("repl_target.py", DEBIAN)


@pytest.mark.parametrize("interp", interpreter_params())
def test_eval_returns_output_and_value(target_factory, interp):
    t = target_factory("repl_target.py", interp)
    with probing.connect(pid=t.pid) as probe:
        assert probe.health()["pid"] == t.pid
        assert probe.eval("1 + 2") == "3\n"
        assert probe.eval("print(sorted(k for k in globals() if k in ('model', 'optimizer')))") == \
            "['model', 'optimizer']\n"
        assert probe.eval("print('a', end='')\nmodel.training") == "a\nTrue\n"
        assert probe.eval("z = 5") == ""
        assert probe.eval("z * 2") == "10\n"
        assert probe.eval("None") == ""


def test_a_target_in_its_own_pid_and_network_namespaces():
    """As in a container: the agent is @probing-1 in a network namespace of its own; the client,
    given the host's pid, finds it there (NSpid, and a socket made in that namespace)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make pid and network namespaces")
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--net", DEBIAN.path,
           os.path.join(TARGETS, "repl_target.py")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env({"LD_PRELOAD": LIBPROBING}), start_new_session=True)
    try:
        if proc.stdout.readline() != b"ready\n":
            pytest.skip("cannot make pid and network namespaces here: %r" % proc.stderr.read()[-300:])
        with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
            pid = int(f.read().split()[0])
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = probing.connect(pid=pid)
                assert probe.health()["pid"] == 1  # as the target sees itself
                break
            except probing.TargetUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert probe.eval("1 + 2") == "3\n"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_target_forms(target):
    assert probing.connect(target.pid).eval("counter > 0") == "True\n"
    assert probing.connect(str(target.pid)).eval("1") == "1\n"
    assert probing.connect("unix:@probing-%d" % target.pid).eval("2") == "2\n"


def test_remote_exception_carries_traceback(target):
    probe = probing.connect(pid=target.pid)
    with pytest.raises(probing.RemoteError) as info:
        probe.eval("print('before')\ndef f():\n    return {}['missing']\nf()")
    e = info.value
    assert e.type == "KeyError"
    assert e.message == "'missing'"
    assert "Traceback (most recent call last)" in e.traceback
    assert "return {}['missing']" in e.traceback
    assert "in f" in e.traceback
    assert e.output == "before\n"
    assert "Remote traceback" in str(e)
    assert not isinstance(e, builtins.TimeoutError)


def test_timeout(target):
    probe = probing.connect(pid=target.pid)
    start = time.monotonic()
    with pytest.raises(probing.TimeoutError) as info:
        probe.eval("print('spinning')\nwhile True: pass", timeout=1)
    assert time.monotonic() - start < 8
    assert isinstance(info.value, probing.RemoteError)
    assert isinstance(info.value, builtins.TimeoutError)
    assert info.value.output == "spinning\n"
    assert "target keeps running" in info.value.message
    assert target.alive()
    assert probe.eval("counter > 0") == "True\n"


def test_socket_timeout_is_a_timeout_error(target):
    # The client stops waiting before the agent's own deadline: still probing.TimeoutError.
    probe = probing.connect(pid=target.pid, timeout=0.5)
    with pytest.raises(probing.TimeoutError):
        probe._call("POST", "/eval", {"code": "import time; time.sleep(3)", "timeout": 10}, timeout=0.5)


def test_target_exits_mid_call(target):
    probe = probing.connect(pid=target.pid)
    with pytest.raises(probing.ConnectionLost) as info:
        probe.eval("import os, time\ntime.sleep(0.2)\nos._exit(0)")
    assert isinstance(info.value, ConnectionError)
    assert "exited" in str(info.value)
    target.wait_exit(5)
    with pytest.raises(probing.TargetUnavailable, match="no process"):
        probe.eval("1")


def test_unreachable_targets(target_factory):
    t = target_factory("repl_target.py", DEBIAN, mode="none")
    with pytest.raises(probing.TargetUnavailable, match="no probing agent"):
        probing.connect(pid=t.pid)
    with socket.socket() as s:  # a TCP port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(probing.TargetUnavailable, match="cannot connect to 127.0.0.1:%d" % port):
        probing.connect("127.0.0.1:%d" % port, token="secret")
    with pytest.raises(ValueError):
        probing.connect("not a target")
    with pytest.raises(ValueError):
        probing.connect()


def test_backtrace(target):
    probe = probing.connect(pid=target.pid)
    frames = probe.backtrace()
    assert frames and all({"func", "file", "lineno"} <= set(f) for f in frames)
    assert any(f["file"].endswith("repl_target.py") and f["func"] == "<module>" for f in frames)
    threads = probe.backtrace(all=True)
    assert any(t.get("is_main") for t in threads)


def test_query(target):
    probe = probing.connect(pid=target.pid)
    result = probe.query("SELECT 1 AS x, 'a' AS y")
    rows = result.to_dict("records") if hasattr(result, "to_dict") else result
    assert rows == [{"x": 1, "y": "a"}]
    result = probe.query("SELECT pid FROM process.info")
    rows = result.to_dict("records") if hasattr(result, "to_dict") else result
    assert rows == [{"pid": target.pid}]
    with pytest.raises(probing.RemoteError) as e:
        probe.query("SELECT * FROM python.no_such_table")
    assert e.value.type == "SQLError" and "no such table" in e.value.message


def test_close_and_context_manager(target):
    with probing.connect(pid=target.pid) as probe:
        assert probe.eval("1") == "1\n"
    with pytest.raises(ValueError, match="closed"):
        probe.eval("1")
    assert "closed" in repr(probe)


def test_bad_arguments(target):
    probe = probing.connect(pid=target.pid)
    with pytest.raises(TypeError):
        probe.eval(b"1")
    with pytest.raises(ValueError):
        probe.eval("1", timeout=0)


# ---------------------------------------------------------------------------------------------
# IPython extension, with a stand-in for the InteractiveShell


class FakeIPython:
    def __init__(self):
        self.magics = {}

    def register_magic_function(self, func, magic_kind="line", magic_name=None):
        self.magics[(magic_name or func.__name__, magic_kind)] = func


def run_magic(fn, *args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        result = fn(*args)
    return result, out.getvalue(), err.getvalue()


def test_ipython_extension(target):
    ip = FakeIPython()
    probing.load_ipython_extension(ip)
    magic = ip.magics[("probing", "line_cell")]
    try:
        _, out, err = run_magic(magic, "%d eval model.layers['encoder'] + 1" % target.pid)
        assert (out, err) == ("4\n", "")
        _, out, err = run_magic(magic, "%d" % target.pid, "for i in range(2):\n    print('cell', i)\nw = 9\n")
        assert (out, err) == ("cell 0\ncell 1\n", "")
        _, out, _ = run_magic(magic, "%d eval w" % target.pid)
        assert out == "9\n"
        _, out, err = run_magic(magic, "%d eval 1/0" % target.pid)
        assert "ZeroDivisionError: division by zero" in err and "Traceback" in err
        _, out, err = run_magic(magic, "%d backtrace" % target.pid)
        assert "repl_target.py" in out and err == ""
        _, out, err = run_magic(magic, "%d frobnicate" % target.pid)
        assert "usage: %probing" in err
        _, out, err = run_magic(magic, "999999999 eval 1")
        assert "probing: no process 999999999" in err
    finally:
        probing.unload_ipython_extension(ip)


def test_ipython_extension_in_a_real_shell(target):
    # The real IPython (Debian's python3-ipython): %load_ext probing, then the line and cell magics.
    code = r"""
import sys
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "probing")
ip.run_line_magic("probing", "%d eval model.layers['encoder'] * 10")
ip.run_cell_magic("probing", "%d", "print('from a cell', 6 * 7)")
""" % (target.pid, target.pid)
    out = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(clean_env(), PYTHONPATH=PYPKG))
    if "No module named 'IPython'" in out.stderr:
        pytest.skip("IPython is not installed for %s (Debian: python3-ipython)" % DEBIAN_PYTHON)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("30\nfrom a cell 42\n"), out.stdout  # (after IPython's terminal-title codes)


def test_import_probing_stays_light():
    # A target's `import probing` must not pull in the client's modules.
    import subprocess
    out = subprocess.run([DEBIAN.path, "-c", "import sys; sys.path.insert(0, %r); import probing; "
                          "print('http.client' in sys.modules)" % PYPKG],
                         capture_output=True, text=True, timeout=30, env=dict(os.environ))
    assert out.stdout.strip() == "False", out
