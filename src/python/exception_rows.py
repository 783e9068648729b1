# A python.exceptions row, shared by the two helpers that write one: the agent's exception hooks
# (src/agent/exception_helpers.py: uncaught, thread, unraisable) and the probes' catches
# (src/probes/probe_helpers.py: raised, on 3.12+). The build puts this text after brief.py and
# before each of them. It runs on the program's thread, in the hook or at the raise; it imports
# json only when it makes a row.
_EXC_FRAMES = 32  # innermost frames of a stack kept
_EXC_LOCALS = 32  # locals of a frame kept
_EXC_REPR_CHARS = 120
_EXC_STACK_BYTES = 65536  # most bytes of one row's stack
_EXC_CHAIN = 8  # causes and contexts kept


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


def _traceback_frames(tb):
    """A traceback's (frame, line) pairs, innermost first."""
    seen = []
    while tb is not None:
        seen.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return seen[::-1]


def _stack_json(frames, r):
    """(frame, line) pairs, innermost first (as a backtrace lists them), with their locals in
    brief (no code of the program's runs; a module's globals are left out), as JSON text."""
    import json  # on the program's thread, as a traceback's printing imports what it needs
    out = []
    for frame, lineno in frames[:_EXC_FRAMES]:
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
    return text


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


def _exception_row(kind, exc_type, exc, frames, thread, thread_id, context=None):
    """The python.exceptions row of `exc`, whose stack is `frames` ((frame, line), innermost
    first): it was raised at the first."""
    frame, lineno = frames[0] if frames else (None, None)
    code = frame.f_code if frame is not None else None
    return {
        "time": time.time(),
        "kind": kind,
        "thread": thread,
        "thread_id": thread_id,
        "type": _exception_type(exc_type),
        "message": _exception_text(exc),
        "file": code.co_filename if code is not None else None,
        "line": lineno,
        "function": getattr(code, "co_qualname", code.co_name) if code is not None else None,
        "stack": _stack_json(frames, _BriefRepr(_EXC_REPR_CHARS)),
        "chain": _exception_chain(exc) if exc is not None else None,
        "context": context,
    }
