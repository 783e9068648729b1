# Python half of the agent: compiled once into a private namespace of the target (never put in
# sys.modules) the first time the agent needs Python. Everything here runs on agent threads with
# the GIL held, called from src/python/eval.cpp. It must not change what the target computes:
# it imports only standard modules, and touches sys.stdout/sys.stderr only while an eval runs.
# It never imports threading: imported first on an agent thread, threading would take that
# thread for the target's main thread (threading.main_thread(), and interpreter shutdown).
import ast
import codeop
import json
import linecache
import sys
import traceback
from _thread import allocate_lock as _allocate_lock  # not threading: see above
from _thread import get_ident as _get_ident
_REPR_LIMIT = 100_000


class ProbingTimeout(BaseException):
    """Raised asynchronously in an eval that ran past its deadline."""


# Raised asynchronously in an eval that its client interrupted (POST /interrupt, Ctrl-C in
# `probing PID repl`): the user's code sees what Ctrl-C raises in a local interpreter.
ProbingInterrupt = KeyboardInterrupt


class _Capture:
    """Output of one eval, bounded to `limit` bytes of UTF-8."""

    def __init__(self, limit):
        self.parts = []
        self.size = 0
        self.limit = limit
        self.truncated = False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        room = self.limit - self.size
        if room > 0 and not self.truncated:
            data = text.encode("utf-8", "surrogateescape")
            if len(data) > room:
                data = data[:room]
                self.truncated = True
            self.parts.append(data)
            self.size += len(data)
        elif text:
            self.truncated = True
        return len(text)

    def text(self):
        out = b"".join(self.parts).decode("utf-8", "ignore")  # a cut may split a character
        if self.truncated:
            out += "\n[probing: output cut at %d bytes]\n" % self.limit
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


# Every router ever installed, kept alive for the life of the process. CPython's print() (before
# 3.13) and PyFile_WriteObject hold only a borrowed reference to sys.stdout between their writes,
# and a write can release the GIL: were a router freed when _uninstall puts the original stream
# back, a print that another thread began through it would go on writing through freed memory.
# One router per stream it stands in for, reused by each later eval, so this holds a few objects.
_routers = []


def _router_for(stream):
    for router in _routers:
        if router._probing_target is stream:
            return router
    router = _Router(stream)
    _routers.append(router)
    return router


def _install(name):
    stream = getattr(sys, name, None)
    if stream is not None and not isinstance(stream, _Router):
        setattr(sys, name, _router_for(stream))


def _uninstall(name):
    # Put the original back only if nobody replaced our router meanwhile. The router stays alive
    # (see _routers), and passes writes through to the original for any thread still inside it.
    stream = getattr(sys, name, None)
    if isinstance(stream, _Router):
        setattr(sys, name, stream._probing_target)


# Evals run on several agent threads at once, and the GIL can pass between any two bytecodes:
# installing or removing the routers and changing _captures happen under one lock.
_capture_lock = _allocate_lock()


def _begin_capture(capture):
    with _capture_lock:
        if not _captures:
            _install("stdout")
            _install("stderr")
        _captures[_get_ident()] = capture


def _end_capture():
    with _capture_lock:
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


def _incomplete(code):
    """True when `code` needs more lines, decided as code.InteractiveConsole decides it. Code that
    does not compile is complete: running it reports the SyntaxError."""
    try:
        return codeop.compile_command(code, "<probing>", "single") is None
    except (SyntaxError, OverflowError, ValueError):
        return False


def unfinished(code):
    """JSON true when `code` is an unfinished block; nothing of it runs."""
    return json.dumps(_incomplete(code))


def run_eval(code, limit, interactive=False):
    """Runs `code` in __main__'s namespace and returns a JSON object as text:
    output (what the code printed), value (repr of a final expression, or null), exception
    (type, message, traceback, or null), timed_out, output_truncated. When `interactive`, code
    that is an unfinished block (a REPL wants more lines) is not run: the result has
    "incomplete": true."""
    capture = _Capture(limit)
    result = {"value": None, "exception": None, "timed_out": False}
    try:
        _begin_capture(capture)
        if interactive:
            result["incomplete"] = _incomplete(code)
            if result["incomplete"]:
                return json.dumps(_finish(result, capture))
        # One linecache entry, replaced by each eval, so tracebacks show the eval's source lines.
        # An entry without mtime is never dropped by linecache.checkcache().
        # Every line ends with a newline, as linecache's own entries do: traceback places its
        # carets by that (one column off on a last line without one).
        lines = code.splitlines(True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        linecache.cache["<probing>"] = (len(code), None, lines, "<probing>")
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
    return json.dumps(_finish(result, capture))


def _finish(result, capture):
    result["output"] = capture.text()
    result["output_truncated"] = capture.truncated
    return result


_KEY_CONTEXT = None  # compiled on first use
_KEY_STEP = None


def _resolve_name(name):
    """The object a bare name stands for in __main__, else in builtins. KeyError when neither."""
    namespace = sys.modules["__main__"].__dict__
    if name in namespace:
        return namespace[name]
    import builtins
    if hasattr(builtins, name):
        return getattr(builtins, name)
    raise KeyError(name)


def _key_matches(line):
    """Keys for `name.attr[0]["key"]["pre` at the end of `line`: the str keys that start with
    `pre` of the mapping that path names, each closed with its quote and `]`. The path is followed
    with getattr and, on lists, tuples and dicts only, their own indexing: nothing is evaluated.
    None when the line does not end inside a subscript's string."""
    global _KEY_CONTEXT, _KEY_STEP
    if _KEY_CONTEXT is None:
        import re
        step = r"""\.\s*[A-Za-z_]\w*|\[\s*(?:-?\d+|'[^'\\]*'|"[^"\\]*")\s*\]"""
        _KEY_CONTEXT = re.compile(r"([A-Za-z_]\w*)((?:\s*(?:%s))*)\[\s*(['\"])([^'\"]*)$" % step)
        _KEY_STEP = re.compile(r"""\.\s*([A-Za-z_]\w*)|\[\s*(-?\d+|'[^'\\]*'|"[^"\\]*")\s*\]""")
    m = _KEY_CONTEXT.search(line)
    if m is None:
        return None
    try:
        obj = _resolve_name(m.group(1))
    except KeyError:
        return []
    for step in _KEY_STEP.finditer(m.group(2)):
        attr, index = step.groups()
        if attr is not None:
            obj = getattr(obj, attr)
            continue
        key = int(index) if index[0] not in "'\"" else index[1:-1]
        for base in (dict, list, tuple):
            if isinstance(obj, base):
                obj = base.__getitem__(obj, key)
                break
        else:
            return []
    keys = obj.keys() if hasattr(obj, "keys") else ()
    quote, prefix = m.group(3), m.group(4)
    return sorted(k + quote + "]" for k in keys if isinstance(k, str) and k.startswith(prefix))


def _call_paren_fits(match):
    """Whether rlcompleter's `name(` completion is wanted: for functions and classes, not for a
    callable object such as a torch module, whose attributes are what one goes on to type."""
    import inspect
    names = match[:-1].split(".")
    try:
        obj = _resolve_name(names[0])
        for attr in names[1:]:
            obj = getattr(obj, attr)
    except Exception:
        return True
    return inspect.isroutine(obj) or inspect.isclass(obj)


def complete(text, line, limit=1000):
    """Completions of `text`, the word before the cursor, with `line` the input up to the cursor:
    keys of a mapping after `x["`, else rlcompleter's names and attributes of __main__. Returns a
    JSON object as text: {"matches": [...]} (at most `limit`, sorted, unique)."""
    capture = _Capture(10000)  # a property that prints must not write to the target's stdout
    try:
        _begin_capture(capture)
        matches = None
        try:
            matches = _key_matches(line)
        except Exception:
            matches = []
        if matches is None:
            matches = []
            if text.strip():
                completer = _completer_class()(sys.modules["__main__"].__dict__)
                state = 0
                while len(matches) < limit:
                    try:
                        m = completer.complete(text, state)
                    except Exception:
                        break
                    if m is None:
                        break
                    if m.endswith("(") and not _call_paren_fits(m):
                        m = m[:-1]
                    matches.append(m)
                    state += 1
    finally:
        _end_capture()
    return json.dumps({"matches": sorted(set(matches))[:limit]})


_Completer = None


def _completer_class():
    """rlcompleter.Completer from a private copy of rlcompleter whose `import readline` fails:
    imported normally, rlcompleter would install itself as the target's readline completer.
    Nothing in sys.modules changes, so the target's own imports meet nothing unusual."""
    global _Completer
    if _Completer is None:
        import builtins
        import importlib.machinery

        real_import = builtins.__import__

        def no_readline(name, *args, **kwargs):
            if name == "readline":
                raise ImportError("readline is not for probing's completer")
            return real_import(name, *args, **kwargs)

        spec = importlib.machinery.PathFinder.find_spec("rlcompleter")
        ns = {"__name__": "rlcompleter", "__builtins__": dict(vars(builtins), __import__=no_readline)}
        exec(spec.loader.get_code("rlcompleter"), ns)
        _Completer = ns["Completer"]
    return _Completer
