# Probes: breakpoints that record and go on (`probing PID probe add FILE:LINE ...`, docs/probes.md).
# Compiled once into a private namespace after brief.py (the build puts that text before this one)
# and called from src/probes/probes.cpp on an agent worker, with the GIL, to add, list and remove
# probes; a probe's hit runs on the program's own thread, in the frame it probes:
#  - CPython 3.12+: sys.monitoring, with events enabled only on the code objects probed
#    (set_local_events), so that all other code runs as fast as without probes;
#  - 3.9-3.11: the agent's native trace function (probes.cpp), set on every thread while probes are
#    active, which calls _hit here only at the probed code's lines.
# A hit evaluates the condition and the captures in the frame, writes a python.probe_hits row with
# brief reprs, and counts its cost. A watch is a probe at every line and the return of one
# function: it evaluates its expression there and writes a row when the value (or the identity of
# a mutable one) differs from what it was at the frame's previous line, naming that line. A probe
# ends at its hit limit, at its expiry, or when its hits have cost more than probes.max_overhead
# of the time since it was added. A tensor watch reads the tensor's version counter instead of its
# value, and summarises it (shape, norm, nan/inf count; never the data) only when that changed. A
# catch (3.12+) is a probe at every raise of the program: sys.monitoring's RAISE event, enabled
# for the whole interpreter while one is active; its rows go to python.exceptions, with the
# stack at the raise. Nothing a probe does raises into the program but KeyboardInterrupt and the
# like, which belong to it.
import _thread

_FunctionType = type(lambda: None)
_CodeType = type((lambda: None).__code__)

_PROBE_REPR_CHARS = 200
_PROBE_CAPTURES = 16
_PROBE_CAPTURED_BYTES = 16384  # most bytes of one row's captured values
_PROBE_MIN_HITS_FOR_COST = 10  # runs (hits, and runs whose condition was false) before the cost rule
_PROBE_COST_WINDOW_S = 1.0  # its first second counts as a second: a burst of first hits is not a rate
_MONITORING_TOOL_IDS = (4, 3)  # sys.monitoring ids no standard tool claims
_WATCH_FRAMES = 256  # most frames a watch remembers its expression's last value in
# Values whose identity says nothing: a new float of the same value is no change.
_PLAIN = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)
_SIZED = (list, dict, set, bytearray, str, bytes, tuple)  # built-in: len() runs no code of the program
_CATCH_TYPES = 256  # exception classes whose answer (caught or not) a catch remembers


class _Probe:
    def __init__(self, pid, spec, event, file, line, function, codes, captures, when, limit, expire_s,
                 watch=None, tensor=False, catch=None):
        self.id = pid
        self.spec = spec
        self.event = event  # "line", "call", "return", "watch" or "raise"
        self.watch = watch  # (text, code object) of a watch's expression
        self.tensor = tensor  # a tensor watch: in-place updates (the version counter) count as changes
        self.catch = catch  # a catch's class names (module.Class or Class); matches: class -> bool
        self.matches = {}
        self.last = (None, None, None)  # a tensor watch's (id, version, summary) at its last change
        self.seen = {}  # a watch's: id(frame) -> ((id, repr, len) of the value, the line it was read at)
        self.file = file
        self.line = line  # the line probed (line probes), else the function's first line
        self.function = function
        self.codes = codes  # the code objects instrumented
        self.captures = captures  # [(text, code object)]
        self.when = when  # (text, code object) or None
        self.limit = limit  # most hits (0: none)
        self.created = time.time()
        self.started = _clock()
        self.expire_s = expire_s
        self.expires = self.started + expire_s if expire_s > 0 else 0.0  # on _clock
        self.hits = 0
        self.runs = 0  # times its code ran there, its condition true or not
        self.errors = 0
        self.cost = 0.0  # seconds spent in its hits
        self.state = "active"


class _Probes:
    by_id = {}  # id -> _Probe (ended ones too, until removed)
    next_id = 1
    append = None  # python.probe_hits' append
    max_overhead = 0.05
    forked = False  # in a child forked from the process the probes were added in: they end there
    at_fork = False  # the after-fork hook is registered
    rank = None
    # 3.12+: sys.monitoring's tool id once claimed; the (code, line) and code -> probes indexes.
    tool = None
    lines = {}  # (code, line) -> [probe]
    calls = {}  # code -> [probe]
    returns = {}  # code -> [probe]
    raises = ()  # the active catches
    exceptions_append = None  # python.exceptions' append (catches)
    native = None  # 3.9-3.11: probes.cpp's set_entries([code, line, kind, probes, ...])
    thread_hook = None  # 3.9-3.11: what threading.settrace was given, while probes are active


_P = _Probes()
_LOCK = _thread.RLock()  # _index and the probes' states: agent workers and the program's threads


class _ProbeRepr(_Repr):
    """_Repr on the program's own thread: a KeyboardInterrupt (or SystemExit from a signal
    handler) raised inside a repr is the program's, and goes on to it."""

    def repr_instance(self, x, level):
        try:
            s = repr(x)
        except Exception as e:
            return "<%s object; repr failed: %s>" % (_type_name(x), type(e).__name__)
        return s if len(s) <= self.maxother else s[: self.maxother - 3] + "..."


_repr = _ProbeRepr(_PROBE_REPR_CHARS)


# ---- where a probe goes ----

def _module_files():
    """(file name, module dict) of every module loaded from a file (nothing imported, no module
    __getattr__ runs)."""
    out = []
    for m in list(sys.modules.values()):
        if type(m) is not _ModuleType:
            continue
        d = _ModuleType.__dict__["__dict__"].__get__(m)
        f = d.get("__file__")
        if type(f) is str:
            out.append((f, d))
    return out


def _matches(filename, wanted):
    if filename == wanted:
        return True
    if wanted.startswith("/"):
        return False
    return filename.endswith("/" + wanted)


def _walk(value, qualname, found, depth=0):
    """Code objects reachable from a module's dict: functions, classes' methods (static, class,
    properties), nested code in co_consts; found[code] = qualified name."""
    if depth > 8:
        return
    t = type(value)
    if t is _FunctionType:
        _add_code(value.__code__, getattr(value, "__qualname__", qualname), found)
    elif t in (staticmethod, classmethod):
        _walk(value.__func__, qualname, found, depth + 1)
    elif t is property:
        for f in (value.fget, value.fset, value.fdel):
            if f is not None:
                _walk(f, qualname, found, depth + 1)
    elif isinstance(value, type):
        d = type.__dict__["__dict__"].__get__(value)
        for k, v in list(d.items()):
            if type(v) in (_FunctionType, staticmethod, classmethod, property) or (
                    isinstance(v, type) and v is not value):
                _walk(v, qualname + "." + k if qualname else k, found, depth + 1)


def _add_code(code, qualname, found):
    if code in found:
        return
    found[code] = getattr(code, "co_qualname", None) or qualname or code.co_name
    for c in code.co_consts:
        if type(c) is _CodeType:
            _add_code(c, found[code] + "." + c.co_name, found)


def _codes_of(wanted):
    """{code: qualname} of the code whose file matches `wanted`: the running frames' (a script's
    module-level loop is only there) and the loaded modules' functions and classes."""
    found = {}
    for frame in sys._current_frames().values():
        while frame is not None:
            if _matches(frame.f_code.co_filename, wanted):
                _add_code(frame.f_code, None, found)
            frame = frame.f_back
    for f, d in _module_files():
        if _matches(f, wanted):
            for k, v in list(d.items()):
                if type(v) is _FunctionType and _matches(v.__code__.co_filename, wanted):
                    _walk(v, k, found)
                elif isinstance(v, type) and d.get("__name__") == getattr(v, "__module__", None):
                    _walk(v, k, found)
    # A class of this file may hold a function from another (assigned to it, or a mixin's).
    return {c: name for c, name in found.items() if _matches(c.co_filename, wanted)}


def _line_starts(code):
    if hasattr(code, "co_lines"):
        return {line for _, _, line in code.co_lines() if line is not None}
    import dis  # 3.9: no co_lines
    return {line for _, line in dis.findlinestarts(code)}


def _resolve(where):
    """(event, file, line, function, [code]) for FILE:LINE, FILE:FUNCTION or FILE:FUNCTION:return;
    a ValueError saying what is wrong otherwise."""
    parts = where.rsplit(":", 2)
    event = "line"
    if len(parts) == 3 and parts[2] in ("return", "call"):
        event = parts[2]
        parts = parts[:2]
    elif len(parts) == 3:
        parts = [parts[0] + ":" + parts[1], parts[2]]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError("a probe goes at FILE:LINE, FILE:FUNCTION or FILE:FUNCTION:return (got %r)" % where)
    wanted, at = parts
    found = _codes_of(wanted)
    if not found:
        raise ValueError("no running frame or loaded module of the program comes from %s "
                         "(a path ending so, or the whole path); is it imported yet?" % wanted)
    files = sorted({c.co_filename for c in found})
    if len(files) > 1:
        raise ValueError("%s names %d files: %s; give more of the path" % (wanted, len(files), ", ".join(files[:5])))
    file = files[0]
    if at.isdigit():
        if event != "line":
            raise ValueError("%s: ':%s' goes after a function's name, not a line number" % (where, event))
        line = int(at)
        codes = [c for c in found if line in _line_starts(c)]
        if not codes:
            near = sorted({l for c in found for l in _line_starts(c)}, key=lambda l: (abs(l - line), l))[:3]
            raise ValueError("line %d of %s has no code (blank, a comment, or not reached by any function "
                             "the program has loaded); lines with code near it: %s"
                             % (line, file, ", ".join(map(str, sorted(near))) or "none"))
        names = sorted({found[c] for c in codes})
        return "line", file, line, names[0], codes
    codes = [c for c, name in found.items() if name == at or (name.endswith("." + at) and "." not in at)]
    if not codes:
        close = sorted(n for n in set(found.values()) if at.split(".")[-1] in n)[:5]
        raise ValueError("no function %s in %s%s" % (at, file, "; did you mean %s?" % ", ".join(close) if close else ""))
    if len({found[c] for c in codes}) > 1:
        raise ValueError("%s names %s in %s; give the class too" % (at, ", ".join(sorted({found[c] for c in codes})), file))
    return ("call" if event == "line" else event), file, codes[0].co_firstlineno, found[codes[0]], codes[:1]


def _compile_list(text):
    """[(text of each expression, its code)] of 'a, b.c(), d[0]' (split where Python's parser does)."""
    import ast
    if not text.strip():
        return []
    try:
        tree = ast.parse("(" + text + ",)", mode="eval")
    except SyntaxError as e:
        raise ValueError("--capture is not a list of Python expressions: %s" % e.msg) from None
    source = "(" + text + ",)"
    out = []
    for node in tree.body.elts[:_PROBE_CAPTURES]:
        expr = ast.get_source_segment(source, node) or ast.dump(node)
        out.append((expr, compile(ast.Expression(node), "<probe capture>", "eval")))
    return out


def _compile_watch(text):
    try:
        return (text, compile(text, "<watch>", "eval"))
    except SyntaxError as e:
        raise ValueError("a watch's expression is not a Python expression: %s" % e.msg) from None


def _compile_when(text):
    if not text.strip():
        return None
    try:
        return (text, compile(text, "<probe condition>", "eval"))
    except SyntaxError as e:
        raise ValueError("--when is not a Python expression: %s" % e.msg) from None


# ---- instrumentation ----

def _index():
    """Rebuilds the (code, line) and code indexes from the active probes, and tells the backend.
    Called on agent workers (add, remove) and on the program's threads (a probe that ends in a
    hit), which the GIL may interleave: under _LOCK."""
    with _LOCK:
        lines, calls, returns = {}, {}, {}
        raises = []
        deadline = 0.0
        for p in list(_P.by_id.values()):
            if p.state != "active":
                continue
            if p.event == "raise":
                raises.append(p)
            if p.expires:
                deadline = min(deadline, p.expires) if deadline else p.expires
            for c in p.codes:
                if p.event == "watch":
                    for line in _line_starts(c):
                        lines.setdefault((c, line), []).append(p)
                    returns.setdefault(c, []).append(p)
                elif p.event == "line":
                    lines.setdefault((c, p.line), []).append(p)
                else:
                    (calls if p.event == "call" else returns).setdefault(c, []).append(p)
        old_lines = _P.lines
        old = set(k[0] for k in old_lines) | set(_P.calls) | set(_P.returns)
        _P.lines, _P.calls, _P.returns, _P.raises = lines, calls, returns, tuple(raises)
        if _P.native is not None:
            flat = []
            for (c, line), ps in lines.items():
                flat += [c, line, 0, tuple(ps)]
            for kind, by_code in ((1, calls), (2, returns)):
                for c, ps in by_code.items():
                    flat += [c, 0, kind, tuple(ps)]
            _thread_hook(_P.native(flat, deadline))
            return
        if _P.tool is None:
            return
        mon = sys.monitoring
        ev = mon.events
        line_codes = set(k[0] for k in lines)
        new = line_codes | set(calls) | set(returns)
        for c in old | new:
            events = (ev.LINE if c in line_codes else 0) | (ev.PY_START if c in calls else 0) | (
                ev.PY_RETURN if c in returns else 0)
            mon.set_local_events(_P.tool, c, events)
        # A line that _on_line turned off (DISABLE) in a code object probed before stays off until
        # restart_events(), which turns every tool's back on: called only when such a code object
        # gains a probed line.
        before = set(k[0] for k in old_lines)
        if any(k[0] in before and k not in old_lines for k in lines):
            mon.restart_events()
        mon.set_events(_P.tool, ev.RAISE if raises else 0)
        if not new and not raises:
            for e in (ev.LINE, ev.PY_START, ev.PY_RETURN, ev.RAISE):
                mon.register_callback(_P.tool, e, None)
            mon.free_tool_id(_P.tool)
            _P.tool = None


def _thread_hook(hook):
    """3.9-3.11: threads started while probes are active get the trace function too, through
    threading.settrace, unless the program set a hook there itself."""
    threading = sys.modules.get("threading")
    if threading is None:
        return
    theirs = getattr(threading, "_trace_hook", None)
    if hook is not None and theirs is None:
        threading.settrace(hook)
        _P.thread_hook = hook
    elif hook is None and _P.thread_hook is not None and theirs is _P.thread_hook:
        threading.settrace(None)
        _P.thread_hook = None


def _claim_tool():
    mon = sys.monitoring
    if _P.tool is not None:
        return
    for t in _MONITORING_TOOL_IDS:
        if mon.get_tool(t) is None:
            mon.use_tool_id(t, "probing")
            _P.tool = t
            break
    else:
        raise ValueError("sys.monitoring's tool ids %s are both taken (by %s): no probe can be added"
                         % (_MONITORING_TOOL_IDS, ", ".join(str(mon.get_tool(t)) for t in _MONITORING_TOOL_IDS)))
    ev = mon.events
    mon.register_callback(_P.tool, ev.LINE, _on_line)
    mon.register_callback(_P.tool, ev.PY_START, _on_start)
    mon.register_callback(_P.tool, ev.PY_RETURN, _on_return)
    mon.register_callback(_P.tool, ev.RAISE, _on_raise)


# sys.monitoring's callbacks (3.12+). An Exception here would be raised in the program: none gets
# out; KeyboardInterrupt and the like are the program's and do.
def _on_line(code, line):
    ps = _P.lines.get((code, line))
    if ps is None:
        return sys.monitoring.DISABLE  # not probed: this line of this code is never reported again
    try:
        _hit_all(ps, sys._getframe(1), _MISSING_RETURN)
    except Exception:
        pass


def _on_start(code, offset):
    ps = _P.calls.get(code)
    if ps:
        try:
            _hit_all(ps, sys._getframe(1), _MISSING_RETURN)
        except Exception:
            pass


def _on_return(code, offset, value):
    ps = _P.returns.get(code)
    if ps:
        try:
            _hit_all(ps, sys._getframe(1), value)
        except Exception:
            pass


def _on_raise(code, offset, exc):
    """Every raise while a catch is active; also each frame an exception propagates into, whose
    traceback has then more than one entry: recorded once, where it was raised."""
    ps = _P.raises
    tb = exc.__traceback__
    if not ps or tb is None or tb.tb_next is not None:
        return
    try:
        t = type(exc)
        for p in ps:
            caught = p.matches.get(t)
            if caught is None:
                if len(p.matches) >= _CATCH_TYPES:
                    p.matches.clear()
                caught = p.matches[t] = any(
                    _exception_type(k) in p.catch or getattr(k, "__name__", None) in p.catch for k in t.__mro__)
            if caught:
                _hit(p, tb.tb_frame, exc)
    except Exception:
        pass


_MISSING_RETURN = object()
_clock = time.monotonic  # _brief's deadlines are on it too


# ---- a hit ----

def _hit_all(ps, frame, retval):
    """3.9-3.11: probes.cpp's trace function at a probed line, call or return."""
    for p in ps:
        _hit(p, frame, retval)


def _thread_name():
    threading = sys.modules.get("threading")
    if threading is None:
        return None
    t = threading._active.get(_thread.get_ident())  # never makes a _DummyThread
    return t.name if t is not None else None


def _error_text(where, e):
    try:
        msg = str(e)
    except BaseException:
        msg = "?"
    return "%s: %s: %s" % (where, type(e).__name__, msg[:200])


def _hit(p, frame, retval):
    """Runs on the program's thread, inside the probed frame's line, call or return."""
    if p.state != "active":
        return
    if _P.forked:  # a DataLoader worker, say: it records nothing
        for q in list(_P.by_id.values()):
            # Not _end: _LOCK may have been held by another thread at the fork, and stays so here.
            # The states are enough: every later hit returns at once, and on 3.9-3.11 the threads
            # take the trace function off themselves (probes.cpp).
            q.state = "ended in a forked child"
        return
    start = _clock()
    p.runs += 1
    try:
        if p.expires and start > p.expires:
            _end(p, "expired")
            return
        if p.watch is not None:
            _watched(p, frame, retval)
            return
        if p.catch is not None:
            _raised(p, frame, retval)
            return
        f_globals = frame.f_globals
        f_locals = frame.f_locals
        error = None
        if p.when is not None:
            try:
                ok = bool(eval(p.when[1], f_globals, f_locals))
            except Exception as e:
                ok, error = True, _error_text("when", e)  # recorded, so the user sees why
            if not ok:
                return
        captured = {}
        size = 0
        for text, code in p.captures:
            try:
                value = _repr.repr(eval(code, f_globals, f_locals))
            except Exception as e:
                value = None
                error = error or _error_text(text, e)
            size += len(text) + (len(value) if value else 0)
            if size > _PROBE_CAPTURED_BYTES:
                captured["..."] = "<more not kept: %d bytes a row at most>" % _PROBE_CAPTURED_BYTES
                break
            captured[text] = value
        if retval is not _MISSING_RETURN:
            captured["return"] = _brief(retval, _repr, start + 1.0)
        p.hits += 1
        if error is not None:
            p.errors += 1
        _record(p, frame, frame.f_lineno, captured, error)
        if p.limit and p.hits >= p.limit:
            _end(p, "done: %d hits" % p.hits)
    except Exception as e:
        _end(p, "stopped: " + _error_text("probing", e))
    finally:
        end = _clock()
        p.cost += end - start
        if (p.state == "active" and p.runs >= _PROBE_MIN_HITS_FOR_COST
                and p.cost > _P.max_overhead * max(end - p.started, _PROBE_COST_WINDOW_S)):
            _end(p, "disabled: its hits took %.3f s of the %.1f s since it was added (probes.max_overhead %g)"
                 % (p.cost, end - p.started, _P.max_overhead))


def _record(p, frame, line, captured, error):
    """A python.probe_hits row of probe p, in `frame` at `line`."""
    code = frame.f_code
    _P.append({
        "time": time.time(),
        "probe_id": p.id,
        "thread": _thread_name(),
        "thread_id": _thread.get_ident(),
        "rank": _P.rank,
        "file": code.co_filename,
        "line": line,
        "function": getattr(code, "co_qualname", code.co_name),
        "event": p.event,
        "captured": _json().dumps(captured),
        "error": error,
    })


def _watched(p, frame, retval):
    """A watch at a line (or the return) of its function: when its value now differs from the one
    read at this frame's previous line, that line changed it."""
    failed = None
    try:
        value = eval(p.watch[1], frame.f_globals, frame.f_locals)
    except Exception as e:  # not there yet (a NameError before the assignment), or broken
        value, failed = None, e
    if p.tensor:
        _tensor_watched(p, frame, retval, failed if failed is not None else value)
        return
    if failed is not None:
        now = (None, "<%s>" % type(failed).__name__, None)
    else:
        # A brief repr shows a long container's first items only: its length tells growth.
        size = len(value) if type(value) in _SIZED else None
        now = (None if isinstance(value, _PLAIN) else id(value), _repr.repr(value), size)
    before = _seen_at(p, frame, retval, now)
    if before is None or before[0] == now:
        return
    (_, was, was_size), line = before
    changed = {p.watch[0]: now[1], "was": was, "change": "value" if now[1:] != (was, was_size) else "identity"}
    if now[2] is not None or was_size is not None:
        changed["len"], changed["was_len"] = now[2], was_size
    p.hits += 1
    _record(p, frame, line, changed, None)
    if p.limit and p.hits >= p.limit:
        _end(p, "done: %d changes" % p.hits)


def _seen_at(p, frame, retval, now):
    """What a watch read at this frame's previous line, (now, that line) kept for the next: None at
    the frame's first line. A frame that returns is forgotten."""
    key = id(frame)
    before = p.seen.get(key)
    if retval is _MISSING_RETURN:
        if before is None and len(p.seen) >= _WATCH_FRAMES:
            p.seen.clear()  # frames that ended by an exception: they never returned
        p.seen[key] = (now, frame.f_lineno)
    else:
        p.seen.pop(key, None)  # the frame ends: its id may come back for another
    return before


def _tensor_summary(t):
    """Shape, dtype, device, and for a floating tensor its 2-norm and how many of its elements are
    nan and inf: computed by torch (without grad), never its data."""
    out = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "device": str(t.device)}
    torch = sys.modules["torch"]
    if t.is_cuda and torch.cuda.is_current_stream_capturing():
        out["not_summarised"] = "a CUDA graph is being captured: a reduction now would break the capture"
    elif t.is_floating_point() and t.layout == torch.strided and t.device.type != "meta":
        with torch.no_grad():
            d = t.detach()
            norm = float(torch.linalg.vector_norm(d, dtype=torch.float64)) if d.numel() else 0.0
            out["norm"] = norm if norm == norm and abs(norm) != float("inf") else str(norm)  # JSON has no nan
            out["nan"] = int(torch.isnan(d).sum())
            out["inf"] = int(torch.isinf(d).sum())
    return out


def _tensor_state(value):
    """(id, version counter, None) of a tensor; (None, None, why not) of anything else (the
    exception the expression raised, an object of another type)."""
    if isinstance(value, BaseException):
        return (None, None, "<%s>" % type(value).__name__)
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return (None, None, "<not a tensor: %s>" % _type_name(value))
    try:
        return (id(value), value._version, None)
    except RuntimeError:
        return (None, None, "<an inference tensor: it has no version counter>")


def _tensor_watched(p, frame, retval, value):
    """A tensor watch at a line (or the return) of its function: the tensor read now is the one
    read at the previous line but its version counter moved (updated in place: by an optimizer's
    step, an add_, a copy_), or it is another object (assigned anew). The row names the line, the
    calls on it (the op), how many in-place updates the counter counted, and a summary of the
    tensor before (the one kept from its last change) and after."""
    now = _tensor_state(value)
    before = _seen_at(p, frame, retval, now)
    if before is None:
        if now[0] is not None and (now[0], now[1]) != p.last[:2]:  # the summary it had before its first change
            p.last = (now[0], now[1], _tensor_summary(value))
        return
    was, line = before
    if was == now:
        return
    summary = _tensor_summary(value) if now[0] is not None else now[2]
    kept = p.last[2] if p.last[:2] == was[:2] else None
    if kept is None and was[0] is not None and was[0] == now[0]:
        kept = "<not summarised before this change>"
    in_place = was[0] is not None and was[0] == now[0]
    changed = {p.watch[0]: summary, "was": kept if was[0] is not None else was[2],
               "change": "in-place" if in_place else "identity", "op": _calls_on(frame.f_code, line)}
    if in_place:
        changed["updates"] = now[1] - was[1]
    p.last = (now[0], now[1], summary)
    p.hits += 1
    _record(p, frame, line, changed, None)
    if p.limit and p.hits >= p.limit:
        _end(p, "done: %d changes" % p.hits)


_CALLS_ON = {}  # (code, line) -> the calls on that line's statement


def _calls_on(code, line):
    """The calls on a line of code's file ("opt.step()", "w.add_(g, alpha=-lr)"), as its source
    says them, at most three; None where the source cannot be read."""
    key = (code, line)
    if key in _CALLS_ON:
        return _CALLS_ON[key]
    import ast
    import linecache
    text = linecache.getline(code.co_filename, line).strip()
    calls = None
    try:
        tree = ast.parse(text.rstrip(":") + (" pass" if text.endswith(":") else ""))
        found, todo = [], [tree]
        while todo:  # the outermost calls, in order: not the arguments' own
            n = todo.pop(0)
            if isinstance(n, ast.Call):
                found.append(ast.get_source_segment(text, n))
            else:
                todo[:0] = ast.iter_child_nodes(n)
        calls = ", ".join(c for c in found[:3] if c) or text[:200] or None
    except SyntaxError:  # a statement over several lines
        calls = text[:200] or None
    if len(_CALLS_ON) > 1024:
        _CALLS_ON.clear()
    _CALLS_ON[key] = calls
    return calls


def _raised(p, frame, exc):
    """A catch at a raise of one of its classes: a python.exceptions row (kind raised) with the
    stack from the raising frame out."""
    if p.when is not None:
        try:
            f_locals = dict(frame.f_locals)
            f_locals["exc"] = exc
            if not eval(p.when[1], frame.f_globals, f_locals):
                return
        except Exception:
            pass  # recorded anyway: a condition that fails says nothing against the exception
    frames = []
    f, outermost = frame, frame
    while f is not None:
        if len(frames) < _EXC_FRAMES:
            frames.append((f, f.f_lineno))
        outermost, f = f, f.f_back
    if any(f.f_code.co_filename.startswith("<probing ") for f in (frame, outermost)):
        return  # the agent's own code (helpers on its threads, hooks on the program's): not the program's
    p.hits += 1
    _P.exceptions_append(_exception_row("raised", type(exc), exc, frames, _thread_name(), _thread.get_ident(),
                                        "catch %d" % p.id))
    if p.limit and p.hits >= p.limit:
        _end(p, "done: %d exceptions" % p.hits)


def _main_function():
    """The function of __main__'s file that the main thread runs now, innermost first: the training
    loop, in most programs. (file, line, name, [code])."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not file:
        raise ValueError("the program has no __main__ file: name the function with --in FILE:FUNCTION")
    for frame in sys._current_frames().values():
        stack = []
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        # The main thread runs the script's module code (under runpy's for -m); a thread starts
        # in threading's.
        mine = [f.f_code for f in stack if f.f_code.co_filename == file]
        if not any(c.co_name == "<module>" for c in mine):
            continue
        code = mine[0]
        return file, code.co_firstlineno, getattr(code, "co_qualname", code.co_name), [code]
    raise ValueError("the main thread runs no code of %s now: name the function with --in FILE:FUNCTION" % file)


def _in_forked_child():
    _P.forked = True


def _json():
    import json  # imported by add(), on the agent's thread: a hit finds it in sys.modules
    return json


def _end(p, why):
    with _LOCK:
        if p.state == "active":
            p.state = why
            _index()


# ---- the agent's calls ----

def _describe(p):
    return {"id": p.id, "spec": p.spec, "event": p.event, "file": p.file, "line": p.line,
            "function": p.function, "capture": [t for t, _ in p.captures],
            "watch": p.watch[0] if p.watch else None, "tensor": p.tensor,
            "catch": list(p.catch) if p.catch else None,
            "when": p.when[0] if p.when else None, "limit": p.limit,
            "expires": p.created + p.expire_s if p.expires else None, "created": p.created, "hits": p.hits,
            "errors": p.errors, "cost_s": round(p.cost, 6), "state": p.state, "codes": len(p.codes)}


def _sweep():
    """Ends the probes past their expiry (also called by probes.cpp's trace function, now and then,
    so that a probe whose code never runs ends on time)."""
    now = _clock()
    for p in list(_P.by_id.values()):
        if p.state == "active" and p.expires and now > p.expires:
            _end(p, "expired")


def _catch_names(text):
    names = tuple(t.strip()[len("builtins."):] if t.strip().startswith("builtins.") else t.strip()
                  for t in text.split(",") if t.strip())
    if not names or not all(all(part.isidentifier() for part in n.split(".")) for n in names):
        raise ValueError("catch takes exception classes: ValueError, or module.Class, several with commas "
                         "(got %r)" % text)
    if sys.version_info < (3, 12):
        raise ValueError("catch needs CPython 3.12 or later (sys.monitoring's RAISE event); this is %d.%d. "
                         "Exceptions nothing caught are recorded on every version: python.exceptions"
                         % sys.version_info[:2])
    return names


def add(where, capture, when, limit, expire_s, appends, max_overhead, native, kind="probe", expr=""):
    """Adds a probe, or by `kind`: a "watch" or a "tensor" watch of the expression `expr` in the
    function `where` names (by default _main_function()), or a "catch" of the exception classes
    `expr` names. Its description, or {"error": why} when the place or an expression is not right.
    appends: python.probe_hits' and python.exceptions' appends. native: probes.cpp's set_entries on
    3.9-3.11, else None (sys.monitoring)."""
    _P.append, _P.exceptions_append = appends
    _P.max_overhead = max_overhead
    if not _P.at_fork:
        sys.modules["posix"].register_at_fork(after_in_child=_in_forked_child)
        _P.at_fork = True
    rank = sys.modules["os"].environ.get("RANK", "")
    _P.rank = int(rank) if rank.isdigit() else None
    _P.native = native
    _json()
    _sweep()
    try:
        watched, catch = None, None
        if kind in ("watch", "tensor"):
            watched = _compile_watch(expr)
            event, file, line, function, codes = _resolve(where) if where else ("call",) + _main_function()
            if event != "call":
                raise ValueError("a watch looks in a function: --in FILE:FUNCTION (got %r)" % where)
            event = "watch"
            where = where or "%s:%s" % (file, function)
        elif kind == "catch":
            catch = _catch_names(expr)
            event, file, line, function, codes = "raise", None, None, None, []
            where = "catch " + ", ".join(catch)
        else:
            event, file, line, function, codes = _resolve(where)
        captures = _compile_list(capture)
        condition = _compile_when(when)
        if native is None:
            _claim_tool()
    except ValueError as e:
        return {"error": str(e)}
    with _LOCK:
        p = _Probe(_P.next_id, where, event, file, line, function, codes, captures, condition, limit, expire_s,
                   watched, kind == "tensor", catch)
        _P.next_id += 1
        _P.by_id[p.id] = p
        _index()
    return {"probe": _describe(p)}


def probes():
    _sweep()
    return {"probes": [_describe(p) for p in sorted(list(_P.by_id.values()), key=lambda p: p.id)]}


def remove(pid):
    """Removes probe pid (0: every probe); the descriptions of those removed."""
    _sweep()
    with _LOCK:
        gone = [p for p in list(_P.by_id.values()) if pid == 0 or p.id == pid]
        if not gone:
            return {"error": "no probe %d (probe list shows them)" % pid if pid else "no probes"}
        for p in gone:
            del _P.by_id[p.id]
            if p.state == "active":
                p.state = "removed"
        _index()
    return {"removed": [_describe(p) for p in gone]}
