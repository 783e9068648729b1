# The crash site, for exceptions: the hooks the agent keeps in sys.excepthook, sys.unraisablehook
# and threading.excepthook (once the program imports threading) while exceptions.capture is on
# (src/agent/exceptions.cpp), each wrapping the hook it found: the row goes into python.exceptions,
# then the hook wrapped runs as before. They run on the program's thread, in the hook's call.
# Compiled once into a private namespace after brief.py (the build puts that text before this
# one), on an agent thread, possibly while the program's first imports run: it imports only what
# brief.py does and _thread at load, and json only when it writes a row.
import _thread

_EXC_FRAMES = 32  # innermost frames of a traceback kept
_EXC_LOCALS = 32  # locals of a frame kept
_EXC_REPR_CHARS = 120
_EXC_STACK_BYTES = 65536  # most bytes of one row's stack
_EXC_CHAIN = 8  # causes and contexts kept


class _ExceptionHooks:
    append = None  # python.exceptions' append
    on = False
    ours = {}  # id -> each wrapper made (never freed: a program may keep one)
    handling = {}  # thread ident -> the exception an outer hook of ours is handling there


_EXC = _ExceptionHooks()


def _exception_type(t):
    mod = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    return name if mod in (None, "builtins", "") else "%s.%s" % (mod, name)


def _exception_text(exc):
    """str() of the exception, as a traceback's last line shows it after the type (its own
    __str__ runs, as it does there), at most 1000 characters."""
    try:
        text = str(exc)
    except BaseException as e:
        text = "<str() failed: %s>" % type(e).__name__
    return text if len(text) <= 1000 else text[:997] + "..."


def _exception_frames(tb, r):
    """The traceback's frames, innermost first (as a backtrace lists them), with their locals in
    brief (no code of the program's runs; a module's globals are left out), as JSON text; and the
    innermost (frame, line)."""
    import json  # on the program's thread, as a traceback's printing imports what it needs
    seen = []
    while tb is not None:
        seen.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    out = []
    for frame, lineno in seen[::-1][:_EXC_FRAMES]:
        code = frame.f_code
        entry = {"func": getattr(code, "co_qualname", code.co_name), "file": code.co_filename,
                 "lineno": lineno if lineno is not None else -1}
        if code.co_name != "<module>":
            f_locals = frame.f_locals
            items = list(f_locals.items()) if type(f_locals) in (dict, _PROXY_TYPE) else []
            kinds = _local_kinds(code)
            entry["locals"] = [{"name": k, "value": _brief(v, r, float("inf")), "kind": kinds.get(k, "local")}
                               for k, v in items[:_EXC_LOCALS] if type(k) is str]
        out.append(entry)
    text = json.dumps(out)
    while len(text) > _EXC_STACK_BYTES and out:  # the outermost frames' locals go first, then frames
        with_locals = [e for e in out if "locals" in e]
        if with_locals:
            del with_locals[-1]["locals"]
        else:
            out.pop()
        text = json.dumps(out)
    return text, (seen[-1] if seen else (None, None))


def _exception_chain(exc):
    import json
    chain = []
    seen = {id(exc)}
    while exc is not None and len(chain) < _EXC_CHAIN:
        cause = exc.__cause__
        nxt = cause if cause is not None else (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        how = "cause" if cause is not None else "context"
        chain.append({"how": how, "type": _exception_type(type(nxt)), "message": _exception_text(nxt)})
        exc = nxt
    return json.dumps(chain) if chain else None


def _record_exception(kind, exc_type, exc, tb, thread=None, context=None):
    """Writes the row; never raises."""
    append = _EXC.append
    if not _EXC.on or append is None:
        return
    try:
        if thread is None:
            threading = sys.modules.get("threading")
            thread = threading.current_thread() if threading is not None else None
        stack, (frame, lineno) = _exception_frames(tb, _BriefRepr(_EXC_REPR_CHARS))
        code = frame.f_code if frame is not None else None
        append({
            "time": time.time(),
            "kind": kind,
            "thread": getattr(thread, "name", None) if thread is not None else None,
            "thread_id": getattr(thread, "ident", None) if thread is not None else _thread.get_ident(),
            "type": _exception_type(exc_type),
            "message": _exception_text(exc),
            "file": code.co_filename if code is not None else None,
            "line": lineno,
            "function": getattr(code, "co_qualname", code.co_name) if code is not None else None,
            "stack": stack,
            "chain": _exception_chain(exc) if exc is not None else None,
            "context": context,
        })
    except BaseException:
        pass


def _handling(exc):
    """Whether this call of one of the agent's hooks is the outermost for `exc` on this thread (a
    hook of the program's that calls ours, wrapped by ours, reaches ours twice for one exception).
    The exception is held only while the outer call runs: comparing ids of exceptions already
    freed took a new one at the same addresses for the last, and lost its row."""
    ident = _thread.get_ident()
    if _EXC.handling.get(ident, _handled) is exc:  # (_handled: a default no exception can be)
        return False
    _EXC.handling[ident] = exc
    return True


def _handled(ident):
    _EXC.handling.pop(ident, None)


def _wrap_sys_excepthook(theirs):
    def probing_excepthook(exc_type, exc, tb):
        if not _handling(exc):
            return theirs(exc_type, exc, tb)
        try:
            _record_exception("uncaught", exc_type, exc, tb)
            return theirs(exc_type, exc, tb)
        finally:
            _handled(_thread.get_ident())
    return probing_excepthook


def _wrap_threading_excepthook(theirs):
    def probing_thread_excepthook(args):
        if not _handling(args.exc_value):
            return theirs(args)
        try:
            _record_exception("thread", args.exc_type, args.exc_value, args.exc_traceback, thread=args.thread)
            return theirs(args)
        finally:
            _handled(_thread.get_ident())
    return probing_thread_excepthook


_FUNCTION_TYPES = (type(_take), type(len), type(_Repr(1).repr1))  # function, builtin, bound method


def _wrap_unraisablehook(theirs):
    def probing_unraisablehook(unraisable):
        try:
            where = unraisable.err_msg or "Exception ignored in"
            obj = unraisable.object
            what = None
            if type(obj) in _FUNCTION_TYPES:  # built-in types: their __qualname__ is the interpreter's
                what = "%s.%s" % (obj.__module__, obj.__qualname__) if obj.__module__ else obj.__qualname__
            context = "%s: %s" % (where, what or _BriefRepr(_EXC_REPR_CHARS).repr(obj)) if obj is not None else where
        except BaseException:
            context = None
        if not _handling(unraisable.exc_value):
            return theirs(unraisable)
        try:
            _record_exception("unraisable", unraisable.exc_type, unraisable.exc_value,
                              unraisable.exc_traceback, context=context)
            return theirs(unraisable)
        finally:
            _handled(_thread.get_ident())
    return probing_unraisablehook


def exception_hooks(append, on):
    """Keeps the hooks as exceptions.capture says: on, each place whose hook is not ours gets one
    wrapping the hook found there (the program's own, set before or since); off, each of ours still
    in place gets back the hook it wrapped (one the program has wrapped stays, and only passes the
    call on). JSON {place: the id of ours there now, or null}; threading's is null until the
    program imports threading (never imported here)."""
    _EXC.append = append
    _EXC.on = bool(on)
    places = [("sys.excepthook", sys, "excepthook", _wrap_sys_excepthook),
              ("sys.unraisablehook", sys, "unraisablehook", _wrap_unraisablehook)]
    threading = sys.modules.get("threading")
    if threading is not None:
        places.append(("threading.excepthook", threading, "excepthook", _wrap_threading_excepthook))
    state = {"threading.excepthook": None}
    for place, owner, attr, wrap in places:
        current = getattr(owner, attr, None)
        ours = _EXC.ours.get(id(current)) is current and current is not None
        if on and not ours and current is not None:
            mine = wrap(current)
            _EXC.ours[id(mine)] = mine
            mine.__wrapped__ = current
            setattr(owner, attr, mine)
            current, ours = mine, True
        elif not on and ours:
            setattr(owner, attr, current.__wrapped__)
            ours = False
        state[place] = id(current) if ours else None
    return "{%s}" % ", ".join('"%s": %s' % (k, "null" if v is None else v) for k, v in state.items())
