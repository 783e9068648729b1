# Python half of the agent: compiled once into a private namespace of the target (never put in
# sys.modules) the first time the agent needs Python. Everything here runs on agent threads with
# the GIL held, called from src/python/eval.cpp. It must not change what the target computes:
# it imports only standard modules, and touches sys.stdout/sys.stderr only while an eval runs.
import ast
import json
import linecache
import sys
import threading
import traceback

_get_ident = threading.get_ident
_REPR_LIMIT = 100_000


class ProbingTimeout(BaseException):
    """Raised asynchronously in an eval that ran past its deadline."""


class _Capture:
    """Output of one eval, bounded to `limit` characters."""

    def __init__(self, limit):
        self.parts = []
        self.size = 0
        self.limit = limit
        self.truncated = False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        room = self.limit - self.size
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.size += len(piece)
        if len(text) > max(room, 0):
            self.truncated = True
        return len(text)

    def text(self):
        out = "".join(self.parts)
        if self.truncated:
            out += "\n[probing: output cut at %d characters]\n" % self.limit
        return out


# thread ident -> _Capture of the eval running on that thread
_captures = {}


class _Router:
    """Stands in for sys.stdout or sys.stderr while evals run. Writes from a thread that runs an
    eval go to that eval's capture; writes from every other thread go to the stream it replaced,
    so the target's own output is unchanged."""

    def __init__(self, target):
        self._probing_target = target

    def write(self, text):
        capture = _captures.get(_get_ident())
        if capture is None:
            return self._probing_target.write(text)
        return capture.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if _get_ident() not in _captures:
            return self._probing_target.flush()
        return None

    def isatty(self):
        if _get_ident() in _captures:
            return False
        return self._probing_target.isatty()

    def __getattr__(self, name):
        return getattr(self._probing_target, name)


def _install(name):
    stream = getattr(sys, name, None)
    if stream is not None and not isinstance(stream, _Router):
        setattr(sys, name, _Router(stream))


def _uninstall(name):
    # Put the original back only if nobody replaced our router meanwhile.
    stream = getattr(sys, name, None)
    if isinstance(stream, _Router):
        setattr(sys, name, stream._probing_target)


def _begin_capture(capture):
    if not _captures:
        _install("stdout")
        _install("stderr")
    _captures[_get_ident()] = capture


def _end_capture():
    _captures.pop(_get_ident(), None)
    if not _captures:
        _uninstall("stdout")
        _uninstall("stderr")


def _safe_repr(value):
    try:
        text = repr(value)
    except ProbingTimeout:
        raise
    except BaseException as e:  # a repr that raises must not fail the eval
        return "<repr of %s failed: %s: %s>" % (type(value).__name__, type(e).__name__, e)
    if not isinstance(text, str):
        return "<repr of %s returned %s>" % (type(value).__name__, type(text).__name__)
    if len(text) > _REPR_LIMIT:
        text = text[:_REPR_LIMIT] + "...[cut at %d characters]" % _REPR_LIMIT
    return text


def _describe(exc):
    tb = exc.__traceback__
    # Drop the frames of this file: the user's code starts at "<probing>".
    while tb is not None and tb.tb_frame.f_code.co_filename != "<probing>":
        tb = tb.tb_next
    try:
        lines = traceback.format_exception(type(exc), exc, tb)
    except BaseException:
        lines = ["%s: <traceback unavailable>\n" % type(exc).__name__]
    try:
        message = str(exc)
    except BaseException:
        message = "<str() of the exception failed>"
    return {"type": type(exc).__name__, "message": message, "traceback": "".join(lines)}


def run_eval(code, limit):
    """Runs `code` in __main__'s namespace and returns a JSON object as text:
    output (what the code printed), value (repr of a final expression, or null), exception
    (type, message, traceback, or null), timed_out, output_truncated."""
    capture = _Capture(limit)
    result = {"value": None, "exception": None, "timed_out": False}
    _begin_capture(capture)
    try:
        # One linecache entry, replaced by each eval, so tracebacks show the eval's source lines.
        # An entry without mtime is never dropped by linecache.checkcache().
        linecache.cache["<probing>"] = (len(code), None, code.splitlines(True), "<probing>")
        namespace = sys.modules["__main__"].__dict__
        tree = ast.parse(code, "<probing>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<probing>", "exec", dont_inherit=True), namespace)
        if last is not None:
            value = eval(compile(last, "<probing>", "eval", dont_inherit=True), namespace)
            if value is not None:
                result["value"] = _safe_repr(value)
    except ProbingTimeout:
        result["timed_out"] = True
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: reported, not raised
        result["exception"] = _describe(e)
    finally:
        _end_capture()
    result["output"] = capture.text()
    result["output_truncated"] = capture.truncated
    return json.dumps(result)
