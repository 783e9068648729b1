# The crash site, for exceptions: the hooks the agent keeps in sys.excepthook, sys.unraisablehook
# and threading.excepthook (once the program imports threading) while exceptions.capture is on
# (src/agent/exceptions.cpp), each wrapping the hook it found: the row goes into python.exceptions,
# then the hook wrapped runs as before. They run on the program's thread, in the hook's call.
# Compiled once into a private namespace after brief.py and exception_rows.py (the build puts
# their text before this one), on an agent thread, possibly while the program's first imports
# run: it imports only what brief.py does and _thread at load, and json only when it writes a row.
import _thread


class _ExceptionHooks:
    append = None  # python.exceptions' append
    on = False
    ours = {}  # id -> each wrapper made (never freed: a program may keep one)
    handling = {}  # thread ident -> the exception an outer hook of ours is handling there


_EXC = _ExceptionHooks()


def _record_exception(kind, exc_type, exc, tb, thread=None, context=None):
    """Writes the row; never raises."""
    append = _EXC.append
    if not _EXC.on or append is None:
        return
    try:
        if thread is None:
            threading = sys.modules.get("threading")
            thread = threading.current_thread() if threading is not None else None
        append(_exception_row(kind, exc_type, exc, _traceback_frames(tb),
                              getattr(thread, "name", None) if thread is not None else None,
                              getattr(thread, "ident", None) if thread is not None else _thread.get_ident(),
                              context))
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
