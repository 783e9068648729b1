"""`probing PID repl` driven in a pseudo-terminal: completion from the target, multi-line blocks,
exceptions, Ctrl-C interrupting code in the target, history across sessions, and the target
exiting under it. Also the non-terminal path (stdin piped) with -t and unix: targets."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time

import pytest

from conftest import PROBING, clean_env, eval_ok, http_request, interpreter_params, run_cli

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\x07")


class PtyRepl:
    """One `probing ... repl` in a pseudo-terminal. expect() waits for a regex in the screen text
    (escape sequences and \\r removed) after what earlier expect() calls consumed."""

    def __init__(self, args, home):
        env = clean_env({"HOME": home, "TERM": "xterm", "LC_ALL": "C.UTF-8"})
        pid, fd = pty.fork()
        if pid == 0:  # child: becomes the session leader with the pty as its terminal
            try:
                os.execve(PROBING, [PROBING, *[str(a) for a in args]], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.raw = b""
        self.pos = 0
        self.rc = None

    def text(self):
        return _ANSI.sub(b"", self.raw).replace(b"\r", b"").decode("utf-8", "replace")

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.raw += data
        return True

    def expect(self, pattern, timeout=15.0):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.text(), self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.2)):
                if not rx.search(self.text(), self.pos):
                    pytest.fail("repl never showed %r within %s s; screen after the last match:\n%s"
                                % (pattern, timeout, self.text()[self.pos:][-3000:]))

    def send(self, text):
        os.write(self.fd, text.encode())

    def editing(self):
        """True while the line editor holds the terminal (canonical mode off): a ^D typed now is
        a key it reads. (tcgetattr on the master reads the terminal's modes.)"""
        try:
            return not termios.tcgetattr(self.fd)[3] & termios.ICANON
        except termios.error:
            return False

    def leave(self, timeout=20.0):
        """Ctrl-D at the prompt, once the line editor has the terminal (a ^D typed in cooked mode
        is not a key it reads); sent again each 2 s it has not left. None when it never left; the
        failure then says where the REPL waits (see why_not_left)."""
        deadline = time.monotonic() + timeout
        while not self.editing() and time.monotonic() < deadline:
            self._read(0.05)
        while time.monotonic() < deadline:
            self.send("\x04")
            if self.wait_exit(min(2.0, max(0.1, deadline - time.monotonic()))) is not None:
                return self.rc
        return None

    def why_not_left(self):
        """Where the REPL process is: each thread's state and kernel wait channel, and the
        terminal's mode."""
        out = ["terminal %s" % ("raw (editing)" if self.editing() else "cooked")]
        try:
            for tid in sorted(os.listdir("/proc/%d/task" % self.pid)):
                with open("/proc/%d/task/%s/stat" % (self.pid, tid)) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open("/proc/%d/task/%s/wchan" % (self.pid, tid)) as f:
                    wchan = f.read()
                out.append("thread %s: %s in %s" % (tid, state, wchan or "-"))
        except OSError as e:
            out.append("(%s)" % e)
        return "; ".join(out) + "\nscreen:\n" + self.text()[-1500:]

    def wait_exit(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.rc = os.waitstatus_to_exitcode(status)
                return self.rc
        return None

    def close(self):
        if self.rc is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


@pytest.fixture
def home(tmp_path):
    return str(tmp_path)


@pytest.fixture
def repl_factory(home):
    started = []

    def make(*args):
        r = PtyRepl(args, home)
        started.append(r)
        return r

    yield make
    for r in started:
        r.close()


def audited_evals(pid):
    """The first lines of the evals probing.audit recorded, oldest first."""
    r = http_request(pid, "POST", "/query",
                     {"sql": "SELECT first_line FROM probing.audit WHERE action = 'eval' ORDER BY time"})
    assert r.status == 200, r
    return [row[0] for row in r.json()["rows"]]


PROMPT = r">>> "
MORE = r"\.\.\. "


@pytest.mark.parametrize("interp", interpreter_params())
def test_completion_and_block(target_factory, repl_factory, interp):
    t = target_factory("repl_target.py", interp)
    r = repl_factory(t.pid, "repl")
    r.expect(r"probing repl: Python 3\.\d+")
    r.expect(PROMPT)
    # A name that only the target has.
    r.send("mod\t")
    r.expect(r"model")
    r.send(".trai\t")
    r.expect(r"\.training")
    r.send("\r")
    r.expect(r"\nTrue\n")
    r.expect(PROMPT)
    # Completing left the target's modules as they were: no readline, no rlcompleter.
    assert eval_ok(t.pid, "import sys; 'readline' in sys.modules, 'rlcompleter' in sys.modules") == \
        "(False, False)\n"
    # Keys of a dict after x[", closed with the quote and bracket.
    r.send('settings_table["lea\t')
    r.expect(r'learning_rate"\]')
    r.send('\r')
    r.expect(r"\n0\.01\n")
    r.expect(PROMPT)
    # ... also after attributes and indexes, with either quote.
    r.send("optimizer['param_groups'][0]['l\t")
    r.expect(r"lr'\]")
    r.send('\r')
    r.expect(r"\n0\.01\n")
    r.expect(PROMPT)
    # A three-line block: runs only after the blank line, and is audited once.
    before = audited_evals(t.pid)
    r.send("for name, shape in model.named_parameters():\r")
    r.expect(MORE)
    r.send("    print(name, shape)\r")
    r.expect(MORE)
    r.send("\r")
    r.expect(r"encoder\.weight \(4, 4\)\ndecoder\.bias \(4,\)\n")
    r.expect(PROMPT)
    after = audited_evals(t.pid)
    assert len(after) == len(before) + 1 and after[-1].startswith("for name, shape"), after[-3:]
    # State persists: it is the target's __main__.
    r.send("optimizer['param_groups'][0]['lr'] = 1e-4\r")
    r.expect(PROMPT)
    assert eval_ok(t.pid, "optimizer['param_groups'][0]['lr']") == "0.0001\n"


def test_exception_shows_traceback(target_factory, repl_factory):
    t = target_factory("repl_target.py", interpreter_params()[0].values[0])
    r = repl_factory(t.pid, "repl")
    r.expect(PROMPT)
    r.send("def f():\r")
    r.expect(MORE)
    r.send("    return 1 / 0\r")
    r.expect(MORE)
    r.send("\r")
    r.expect(PROMPT)
    r.send("f()\r")
    r.expect(r"Traceback \(most recent call last\):")
    r.expect(r"in f\n")
    r.expect(r"ZeroDivisionError: division by zero\n")
    r.expect(PROMPT)
    r.send("x = 41\r")
    r.expect(PROMPT)
    r.send("x + 1\r")
    r.expect(r"\n42\n")
    r.expect(PROMPT)
    # A syntax error is an error, not a request for more lines.
    r.send("1 +* 2\r")
    r.expect(r"SyntaxError")
    r.expect(PROMPT)
    assert t.alive()


def test_ctrl_c_interrupts_code_in_target(target_factory, repl_factory):
    t = target_factory("repl_target.py", interpreter_params()[0].values[0])
    r = repl_factory(t.pid, "repl")
    r.expect(PROMPT)
    r.send("while True: pass\r")
    r.expect(MORE)
    r.send("\r")
    time.sleep(1.0)
    sent = time.monotonic()
    r.send("\x03")
    r.expect(r"KeyboardInterrupt\n")
    r.expect(PROMPT)
    assert time.monotonic() - sent < 5
    assert t.alive()
    r.send("counter > 0\r")
    r.expect(r"\nTrue\n")
    r.expect(PROMPT)
    # The target's main loop still runs after the interrupt.
    before = int(eval_ok(t.pid, "counter"))
    time.sleep(0.3)
    assert int(eval_ok(t.pid, "counter")) > before
    # Ctrl-C at the prompt drops the line (it does not run) and the unfinished block.
    r.send("undefined_name_xyz\x03")
    r.expect(r"KeyboardInterrupt\n")
    r.expect(PROMPT)
    r.send("if True:\r")
    r.expect(MORE)
    r.send("\x03")
    r.expect(r"KeyboardInterrupt\n")
    r.expect(PROMPT)
    r.send("'still' + 'here'\r")
    r.expect(r"'stillhere'\n")
    assert "NameError" not in r.text()
    # Ctrl-D at the prompt leaves. (Typed before the prompt is back, the terminal may still be in
    # cooked mode, where ^D is not a character the line editor will read.)
    r.expect(PROMPT)
    assert r.leave() == 0, r.why_not_left()


def test_history_across_sessions(target_factory, repl_factory, home):
    t = target_factory("repl_target.py", interpreter_params()[0].values[0])
    r1 = repl_factory(t.pid, "repl")
    r1.expect(PROMPT)
    r1.send("print('from-history', 6 * 7)\r")
    r1.expect(r"from-history 42\n")
    r1.expect(PROMPT)
    assert r1.leave() == 0, r1.why_not_left()
    assert os.path.exists(os.path.join(home, ".probing_history"))
    r2 = repl_factory(t.pid, "repl")
    r2.expect(PROMPT)
    r2.send("\x1b[A")  # Up arrow
    r2.expect(r"print\('from-history', 6 \* 7\)")
    r2.send("\r")
    r2.expect(r"from-history 42\n")
    r2.expect(PROMPT)


def test_target_exit_ends_repl(target_factory, repl_factory):
    t = target_factory("repl_target.py", interpreter_params()[0].values[0])
    r = repl_factory("-t", t.pid, "repl")
    r.expect(PROMPT)
    r.send("import os; os._exit(3)\r")
    r.expect(r"the target \(process %d\) has exited" % t.pid)
    assert r.wait_exit() == 1
    assert t.wait_exit(5) == 3


@pytest.mark.parametrize("form", ["-t", "unix"])
def test_piped_stdin_and_target_forms(target_factory, form):
    t = target_factory("repl_target.py", interpreter_params()[0].values[0])
    target = str(t.pid) if form == "-t" else "unix:@probing-%d" % t.pid
    script = "y = 5\nfor i in range(2):\n    print('u', i)\n\ny * 2\n1/0\nprint('after')\n"
    rc, out, err = run_cli("-t", target, "repl", input=script, timeout=30)
    assert rc == 0, (rc, out, err)
    assert out == "u 0\nu 1\n10\nafter\n", (out, err)
    assert "ZeroDivisionError" in err


def test_repl_without_agent_fails_clearly(target_factory):
    t = target_factory("repl_target.py", interpreter_params()[0].values[0], mode="none")
    rc, out, err = run_cli(t.pid, "repl", input="", timeout=15)
    assert rc == 1
    assert "no probing agent" in err
