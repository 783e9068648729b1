"""Shared machinery for the end-to-end tests: the build, the interpreters, target processes, a raw
HTTP client over the agent's abstract unix socket, and a runner for the CLI.

Every target is a real CPython process running a program from tests/e2e/targets/. It prints
`ready` on stdout when it can be probed; we read that from its pipe with a deadline, then wait
for the agent's own readiness (`GET /health` answering with python_status "ready"). Every target
runs in its own session and is killed, with its whole process group, in teardown.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TARGETS = os.path.join(HERE, "targets")

BUILD = os.path.abspath(os.environ.get("PROBING_BUILD") or os.path.join(REPO, "build"))
PROBING = os.path.join(BUILD, "bin", "probing")
LIBPROBING = os.path.join(BUILD, "lib", "probing", "libprobing.so")
PYPKG = os.path.join(BUILD, "lib", "probing", "python")
PTH = os.path.join(BUILD, "lib", "probing", "probing.pth")

for _path in (PROBING, LIBPROBING, PTH, os.path.join(PYPKG, "probing", "__init__.py")):
    if not os.path.exists(_path):
        pytest.exit("the build is incomplete: %s is missing (build it, or set PROBING_BUILD)" % _path, returncode=4)

# Environment variables that would change how a target gets (or does not get) an agent.
_AGENT_ENV = ("LD_PRELOAD", "PROBE", "PROBING", "PYTHONPATH", "PYTHONUSERBASE", "PYTHONNOUSERSITE",
              "PYTHONSTARTUP", "PYTHONHOME", "PROBING_LIBRARY")


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _AGENT_ENV and not k.startswith("PROBING_")}
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# Interpreters

# Debian's own python3 (3.11 on Debian 12, 3.13 on 13), for which python3-torch is built.
DEBIAN_PYTHON = os.path.realpath("/usr/bin/python3")


def _real_executable(cmd):
    """sys.executable of the interpreter that `cmd` runs (resolves pyenv's shim)."""
    try:
        out = subprocess.run([cmd, "-c", "import sys; print(sys.executable)"], capture_output=True,
                             text=True, timeout=20, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and path and os.path.isfile(path) else None


def _find_pyenv_python():
    """The pyenv CPython 3.11 with a shared libpython. `python3` on PATH is pyenv's shim (a bash
    script), so ask it for sys.executable. PROBING_E2E_PYENV_PYTHON overrides."""
    env = os.environ.get("PROBING_E2E_PYENV_PYTHON")
    if env:
        return (env, None) if os.path.isfile(env) else (None, "PROBING_E2E_PYENV_PYTHON=%s does not exist" % env)
    candidates = []
    on_path = shutil.which("python3")
    if on_path:
        real = _real_executable(on_path)
        if real:
            candidates.append(real)
    candidates.append("/root/.pyenv/versions/3.11.7/bin/python3")
    for c in candidates:
        if os.path.realpath(c).startswith("/usr/bin/"):
            continue
        if os.path.isfile(c):
            return c, None
    return None, ("no python3 besides Debian's on PATH (it resolves to %s)"
                  % (candidates[0] if candidates else "nothing"))


def _probe_interpreter(path):
    """(version 'X.Y', shared-libpython?, sys.executable) or None if it does not run."""
    try:
        out = subprocess.run([path, "-c", "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); "
                              "print(sysconfig.get_config_var('Py_ENABLE_SHARED')); print(sys.executable)"],
                             capture_output=True, text=True, timeout=20, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    lines = out.stdout.split("\n")
    return lines[0], lines[1] == "1", lines[2]


class Interpreter:
    def __init__(self, name, path, skip_reason=None):
        self.name = name
        self.path = path
        self.skip_reason = skip_reason
        self.version = None
        # What the target itself reports as sys.executable and argv[0]: `path` for an interpreter
        # of this host, the path inside the chroot for the version matrix's wrappers.
        self.executable = path
        if path and not skip_reason:
            info = _probe_interpreter(path)
            if info is None:
                self.skip_reason = "%s does not run" % path
            else:
                self.version = info[0]
                self.executable = info[2] or path

    def __repr__(self):
        return "Interpreter(%s, %s)" % (self.name, self.path)


def _interpreters():
    """The interpreters the suite runs each target under: Debian's python3 and the pyenv one,
    or those PROBING_E2E_INTERPRETERS names (NAME=PATH,...: the version matrix's chroots)."""
    listed = os.environ.get("PROBING_E2E_INTERPRETERS")
    if listed:
        out = []
        for item in listed.split(","):
            name, _, path = item.partition("=")
            out.append(Interpreter(name, path) if os.path.isfile(path) else
                       Interpreter(name, None, "%s does not exist" % path))
        return out
    out = []
    if os.path.isfile(DEBIAN_PYTHON):
        out.append(Interpreter("debian", DEBIAN_PYTHON))
    else:
        out.append(Interpreter("debian", None, "%s is absent" % DEBIAN_PYTHON))
    pyenv, why = _find_pyenv_python()
    out.append(Interpreter("pyenv", pyenv, why))
    return out


INTERPRETERS = _interpreters()


_TORCH_IMPORTS = {}


def torch_importable(interpreter):
    """Whether `import torch` works under this interpreter (asked once)."""
    if interpreter.path not in _TORCH_IMPORTS:
        try:
            p = subprocess.run([interpreter.path, "-c", "import torch"], capture_output=True, timeout=120,
                               env=clean_env())
            _TORCH_IMPORTS[interpreter.path] = p.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _TORCH_IMPORTS[interpreter.path] = False
    return _TORCH_IMPORTS[interpreter.path]


def torch_interpreter_params():
    """pytest.param for each interpreter, skipped (saying why) where torch does not import."""
    params = []
    for it in INTERPRETERS:
        if it.skip_reason:
            marks = [pytest.mark.skip(reason=it.skip_reason)]
        elif not torch_importable(it):
            marks = [pytest.mark.skip(reason="torch is not importable in %s" % it.path)]
        else:
            marks = []
        params.append(pytest.param(it, id=it.name, marks=marks))
    return params


def interpreter_params(only=None):
    """pytest.param for each interpreter, skipped with the reason when absent."""
    params = []
    for it in INTERPRETERS:
        if only and it.name not in only:
            continue
        marks = [pytest.mark.skip(reason=it.skip_reason)] if it.skip_reason else []
        params.append(pytest.param(it, id=it.name, marks=marks))
    return params


# ---------------------------------------------------------------------------------------------
# CLI

def run_cli(*args, input=None, timeout=30, env=None):
    """Runs build/bin/probing ARGS. Returns (rc, stdout, stderr) as text."""
    try:
        p = subprocess.run([PROBING, *[str(a) for a in args]], input=input, capture_output=True, text=True,
                           timeout=timeout, env=clean_env(env), stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail("probing %s did not return within %s s (stdout %r, stderr %r)"
                    % (" ".join(map(str, args)), timeout, e.stdout, e.stderr))
    return p.returncode, p.stdout, p.stderr


def _has_command(name):
    rc, out, _ = run_cli("--help", timeout=10)
    return rc == 0 and re.search(r"^\s+%s\s" % re.escape(name), out, re.M) is not None


INJECT_BUILT = _has_command("inject")
needs_inject = pytest.mark.skipif(not INJECT_BUILT, reason="inject command not built yet")


# ---------------------------------------------------------------------------------------------
# Raw HTTP over the abstract unix socket

class HttpReply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "HttpReply(%d, %r)" % (self.status, self.body[:300])


def agent_address(pid):
    return "\0probing-%d" % pid


def connect_agent(pid, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(agent_address(pid))
    except BaseException:
        s.close()
        raise
    return s


def read_http_reply(sock):
    """Reads one HTTP/1.1 response (Content-Length or to EOF) from sock."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head (got %r)" % data[:200])
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise ValueError("not an HTTP status line: %r" % lines[0])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed after %d of %d body bytes" % (len(rest), n))
            rest += chunk
        body = rest[:n]
    else:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest
    return HttpReply(int(m.group(1)), headers, body)


def http_request(pid, method, path, body=None, timeout=10.0, content_type="application/json"):
    """One request on a fresh connection to @probing-PID. body: bytes, str, or a JSON-able object."""
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: probing\r\nConnection: close\r\n" % (method, path)
    if body is not None:
        head += "Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(payload))
    with connect_agent(pid, timeout) as s:
        s.sendall(head.encode() + b"\r\n" + payload)
        return read_http_reply(s)


def agent_listening(pid):
    """True if something accepts connections on @probing-PID."""
    try:
        connect_agent(pid, 1.0).close()
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False


def wait_for_health(pid, timeout=10.0, proc=None):
    """Polls GET /health (the agent's own readiness) until python_status is "ready"."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("target %d exited with %s while waiting for its agent" % (pid, proc.returncode))
        try:
            r = http_request(pid, "GET", "/health", timeout=2.0)
            if r.status == 200 and r.json().get("python_status") == "ready":
                return r.json()
            last = r
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.02)
    raise AssertionError("agent of %d did not become ready within %s s (last: %r)" % (pid, timeout, last))


def agent_mapped(pid):
    """How many distinct libprobing.so files /proc/PID/maps shows."""
    with open("/proc/%d/maps" % pid) as f:
        return len({line.split()[-1] for line in f if line.rstrip().endswith("/libprobing.so")})


# ---------------------------------------------------------------------------------------------
# Targets

class _LineReader:
    """Collects the lines of one pipe on a thread; lines carry their arrival time."""

    def __init__(self, stream, name):
        self.lines = []  # (monotonic time, text without the newline)
        self.closed = False
        self._cond = threading.Condition()
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name="reader-" + name, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for raw in iter(self._stream.readline, b""):
                with self._cond:
                    self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))
                    self._cond.notify_all()
        except (ValueError, OSError):
            pass  # Target.kill() closed the pipe while a read was in progress: its end, as EOF is
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, predicate, timeout, start=0):
        """Waits for a line (at index >= start) that satisfies predicate; returns its index."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    if predicate(self.lines[i][1]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self._cond.wait(left)

    def wait_closed(self, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        self._thread.join(timeout)
        return True

    def text(self):
        with self._cond:
            return [t for _, t in self.lines]

    def timed(self):
        with self._cond:
            return list(self.lines)


# How the agent arrives in a target:
#   launch   probing launch -- PY script
#   preload  LD_PRELOAD=libprobing.so PY script
#   probe    PROBE=1 through probing.pth in a user site dir
#   probing  PROBING=1 through the same hook
#   pth_off  the .pth hook installed but no PROBE: no agent
#   import   the script calls probing.init() (PYTHONPATH = the build's package dir)
#   none     plain interpreter, no agent (for inject)
MODES = ("launch", "preload", "probe", "probing", "pth_off", "import", "none")
AGENT_MODES = ("launch", "preload", "probe", "probing", "import")


def make_user_site(python, root):
    """Makes `root` a user base whose site-packages holds probing.pth. Returns the site dir."""
    out = subprocess.run([python, "-c", "import site; print(site.getusersitepackages())"], capture_output=True,
                         text=True, timeout=20, env=clean_env({"PYTHONUSERBASE": root}))
    site_dir = out.stdout.strip()
    assert out.returncode == 0 and site_dir.startswith(root), (out.stdout, out.stderr)
    assert re.fullmatch(re.escape(os.path.join(root, "lib")) + r"/python3\.\d+/site-packages", site_dir), site_dir
    os.makedirs(site_dir, exist_ok=True)
    shutil.copy(PTH, os.path.join(site_dir, "probing.pth"))
    return site_dir


class Target:
    """A target program from tests/e2e/targets/ under one interpreter, with the agent arriving in
    one of MODES. Use as a context manager, or call start()/kill()."""

    def __init__(self, script, interpreter, mode="preload", args=(), env=None, ready_timeout=30.0,
                 health_timeout=10.0, wait_health=None, launch_args=()):
        assert mode in MODES, mode
        self.script = script
        self.python = interpreter.path if isinstance(interpreter, Interpreter) else interpreter
        self.mode = mode
        self.args = [str(a) for a in args]
        self.launch_args = [str(a) for a in launch_args]  # e.g. ["-D", "k=v"] for probing launch
        self.extra_env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.health_timeout = health_timeout
        self.wait_health = mode in AGENT_MODES if wait_health is None else wait_health
        self.proc = None
        self.pid = None
        self.health = None
        self._tmp = None

    @property
    def script_path(self):
        return self.script if os.path.isabs(self.script) else os.path.join(TARGETS, self.script)

    def command(self):
        cmd = [self.python, self.script_path, *self.args]
        return [PROBING, "launch", *self.launch_args, "--", *cmd] if self.mode == "launch" else cmd

    def _env(self):
        env = clean_env({"PYTHONDONTWRITEBYTECODE": "1"})
        if self.mode == "preload":
            env["LD_PRELOAD"] = LIBPROBING
        elif self.mode in ("probe", "probing", "pth_off"):
            self._tmp = tempfile.mkdtemp(prefix="probing-e2e-site-")
            make_user_site(self.python, self._tmp)
            env["PYTHONUSERBASE"] = self._tmp
            if self.mode == "probe":
                env["PROBE"] = "1"
            elif self.mode == "probing":
                env["PROBING"] = "1"
        elif self.mode == "import":
            env["PYTHONPATH"] = PYPKG
        env.update(self.extra_env)
        return env

    def start(self):
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self._env(), start_new_session=True)
        self.pid = self.proc.pid
        self.out = _LineReader(self.proc.stdout, "stdout")
        self.err = _LineReader(self.proc.stderr, "stderr")
        try:
            if self.out.wait_for(lambda l: l == "ready", self.ready_timeout) is None:
                raise AssertionError("target %s (%s) did not print 'ready' within %s s; rc %s; stdout %r; stderr %r"
                                     % (self.script, self.mode, self.ready_timeout, self.proc.poll(),
                                        self.out.text()[-20:], self.err.text()[-20:]))
            if self.wait_health:
                try:
                    self.health = wait_for_health(self.pid, self.health_timeout, self.proc)
                except AssertionError as e:
                    raise AssertionError("%s; target %s (%s) stderr %r" % (e, self.script, self.mode,
                                                                          self.err.text()[-20:])) from None
        except BaseException:
            self.kill()
            raise
        return self

    def alive(self):
        return self.proc.poll() is None

    def write(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_line(self, predicate, timeout=10.0, start=0):
        """Index of the first stdout line at or after `start` satisfying predicate (a str matches
        exactly); fails the test on timeout."""
        pred = (lambda l: l == predicate) if isinstance(predicate, str) else predicate
        i = self.out.wait_for(pred, timeout, start)
        if i is None:
            pytest.fail("target %d never printed the expected line within %s s; stdout tail %r; stderr tail %r"
                        % (self.pid, timeout, self.out.text()[-10:], self.err.text()[-10:]))
        return i

    def stdout_lines(self):
        return self.out.text()

    def stderr_lines(self):
        return self.err.text()

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


@pytest.fixture
def target_factory():
    """Starts targets on demand; all of them are killed at teardown."""
    started = []

    def make(*args, **kwargs):
        t = Target(*args, **kwargs)
        started.append(t)
        return t.start()

    yield make
    for t in started:
        t.kill()


def run_as_nobody(args, timeout=20):
    """Runs ARGS as uid/gid 65534 from /, for tests of refused peers. Skips (saying why) when not
    root, or when uid 65534 cannot run Debian's python here (a root directory closed to others,
    as in a chroot)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as uid 65534")
    as_nobody = dict(user=65534, group=65534, extra_groups=[], cwd="/")
    try:
        probe = subprocess.run(["/usr/bin/python3", "-c", "pass"], capture_output=True, text=True, timeout=timeout,
                               **as_nobody)
    except PermissionError as e:
        pytest.skip("uid 65534 cannot run /usr/bin/python3 here (%s): a root directory closed to others" % e)
    if probe.returncode != 0:
        pytest.skip("uid 65534 cannot run /usr/bin/python3 here (%s)" % probe.stderr.strip()[:200])
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **as_nobody)


def marker_line(script, marker):
    """The line number of the first line of targets/SCRIPT that contains MARKER."""
    with open(os.path.join(TARGETS, script), encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if marker in line:
                return i
    raise AssertionError("no %s in %s" % (marker, script))


def eval_ok(pid, code, timeout=15):
    """Runs `probing PID eval CODE`, requires rc 0 and no stderr, returns stdout."""
    rc, out, err = run_cli(pid, "eval", code, timeout=timeout)
    assert (rc, err) == (0, ""), (rc, out, err)
    return out


@pytest.fixture(scope="module", params=interpreter_params())
def interp(request):
    """Each interpreter on the machine (a test may parametrize `interp` itself to narrow it)."""
    return request.param


def eval_while_gil_held(t):
    """Makes a gil_holder.py target take the GIL, then runs `probing PID eval 1` against it.
    Returns (holder tid, rc, stdout, stderr, seconds the eval took)."""
    t.write("hold\n")
    i = t.wait_line(lambda l: l.startswith("holding "))
    holder = int(t.stdout_lines()[i].split()[1])
    t0 = time.monotonic()
    rc, out, err = run_cli(t.pid, "eval", "--timeout", "30", "1", timeout=20)
    return holder, rc, out, err, time.monotonic() - t0


BROWSER_DIR = os.path.join(REPO, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def browser_missing(*packages):
    """What is missing for the browser checks: node, Chromium, or one of these npm packages of
    tests/browser; None when nothing is."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not os.path.exists(CHROMIUM):
        return "%s is not installed" % CHROMIUM
    for package in packages:
        if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", package)):
            return "npm package %s is missing (npm ci --prefix tests/browser)" % package
    return None


def require_browser(*packages):
    """Skips, saying what is missing, unless the browser checks can run; fails instead under
    PROBING_BROWSER_REQUIRED=1 (`make test` installs what they need)."""
    why = browser_missing(*packages)
    if why is None:
        return
    if os.environ.get("PROBING_BROWSER_REQUIRED") == "1":
        pytest.fail("the browser checks cannot run: " + why)
    pytest.skip(why)


def start_ui(*args):
    """`probing ARGS` (a `ui` command) in the background, and the URL it printed."""
    p = subprocess.Popen([PROBING, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env())
    url = p.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        p.kill()
        raise AssertionError("probing %s printed no URL: %r %s" % (" ".join(map(str, args)), url, p.stderr.read()))
    return p, url


def ui_check(url, out_dir, *flags, timeout=150):
    """What the web page at URL showed, page by page (tests/browser/ui_check.mjs in Chromium)."""
    p = subprocess.run(["node", os.path.join(BROWSER_DIR, "ui_check.mjs"), url, str(out_dir), *flags],
                       capture_output=True, text=True, timeout=timeout, env=clean_env({"CHROMIUM": CHROMIUM}))
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])
