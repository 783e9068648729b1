"""probing: a live debugger and profiler for Python processes.

In the process to be probed::

    import probing
    probing.init()          # starts the agent; `probing PID ...` can now talk to this process

The agent is the shared library libprobing.so; this package finds it and loads it with ctypes.
The same file is what `probing launch` preloads and `probing PID inject` attaches, so a process
never holds two agents.
"""

import _thread
import ctypes
import os
import time

__all__ = ["init", "library_path", "table", "Table", "span", "event", "__version__", "connect", "Probe", "Cluster",
           "RemoteError", "NotSupported", "TargetUnavailable", "ConnectionLost"]

from probing._version import __version__  # written by the build, from VERSION

_agent = None


def library_path():
    """Path of libprobing.so: $PROBING_LIBRARY, else the one installed with this package: inside
    it in the wheel (probing/_bundle/lib/probing/libprobing.so, beside the CLI's _bundle/bin/), or
    lib/probing/libprobing.so with the package in lib/probing/python/probing (`make install`, the
    .deb, the build tree)."""
    env = os.environ.get("PROBING_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = os.path.join(here, "_bundle", "lib", "probing", "libprobing.so")
    if os.path.exists(bundled):
        return bundled
    return os.path.normpath(os.path.join(here, "..", "..", "libprobing.so"))


def _mapped_library():
    """Path of a libprobing.so this process already has (preloaded or injected), or None: a
    second copy from another path would be a second agent."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if path.endswith("/libprobing.so"):
                    return path
    except OSError:
        pass
    return None


def init():
    """Starts the probing agent in this process (idempotent). Returns the socket it serves,
    '@probing-<pid>'. Raises OSError when the agent library cannot be loaded."""
    global _agent
    if _agent is None:
        path = _mapped_library() or library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise OSError("probing: cannot load the agent library %s: %s (set PROBING_LIBRARY)" % (path, e)) from None
        if lib.probing_agent_start() != 0:
            raise OSError("probing: the agent could not start")
        _agent = lib
    return "@probing-%d" % os.getpid()


_native = None
_tables = {}


class Table:
    """A recorded table, queried as python.<name>: rows appended here are kept in the agent,
    in a bounded column store (the oldest rows are dropped first past the caps), and never
    wait on a running query.

    ``append(row)`` takes a dict {column: value}; the first row appended sets the columns (later
    rows may leave some out: NULL, but may not add new ones). Values are int, float, str, bool,
    None, or anything with ``__float__`` (a numpy scalar, a 0-d tensor)."""

    __slots__ = ("name", "append")

    def __init__(self, name, append):
        self.name = name
        self.append = append

    def __repr__(self):
        return "<probing.Table python.%s>" % self.name


def table(name, max_rows=None, max_bytes=None):
    """The recorded table python.<name> (made on first use; the same object for the same name).
    max_rows and max_bytes override the store.max_rows and store.max_bytes settings for it.
    Starts the agent in this process if it is not running yet; where it cannot start, warns once
    (RuntimeWarning) and returns a table whose append records nothing::

        losses = probing.table("losses")
        losses.append({"step": 7, "loss": 0.31})
        # probing PID query "SELECT * FROM python.losses"
    """
    t = _tables.get(name)
    if t is not None and max_rows is None and max_bytes is None:
        return t
    natives = _natives()
    append = natives["make_appender"](name, int(max_rows or 0), int(max_bytes or 0)) if natives else _discard
    t = Table(name, append)
    _tables[name] = t
    return t


def _discard(*args, **kwargs):
    """What recording does where the agent could not start: nothing."""


_agent_failure = None  # why the agent could not start, once it could not


def _natives():
    """The agent's native functions, or None (after one RuntimeWarning) when the agent cannot be
    loaded here: tables, spans and events then record nothing, and never raise into the code they
    measure."""
    global _native, _agent_failure
    if _native is None and _agent_failure is None:
        try:
            init()
            native = ctypes.PyDLL(_agent._name).probing_native
            native.restype = ctypes.py_object
            native.argtypes = []
            _native = native()
        except (OSError, AttributeError, ValueError) as e:  # no library, an old one, or it did not start
            _agent_failure = str(e)
            if _agent_failure.startswith("probing: "):
                _agent_failure = _agent_failure[len("probing: "):]
            import warnings
            warnings.warn("probing: recording is off in this process: " + _agent_failure, RuntimeWarning,
                          stacklevel=3)
    return _native


# ---- spans and events: python.spans, python.events ----

_time = time.time
_perf = time.perf_counter
_get_ident = _thread.get_ident
_span_append = None
_event_append = None
_current_span = None  # a contextvars.ContextVar: the span a new span or event is inside
_span_ids = None      # itertools.count


_span_lock = _thread.allocate_lock()


def _span_setup():
    global _span_append, _event_append, _current_span, _span_ids
    with _span_lock:  # two threads' first spans make one ContextVar
        if _span_append is not None:
            return
        import contextvars
        import itertools
        natives = _natives()
        _current_span = contextvars.ContextVar("probing_span", default=None)
        _span_ids = itertools.count(1)
        _event_append = natives["agent_table"]("events") if natives else _discard
        _span_append = natives["agent_table"]("spans") if natives else _discard  # last: says setup is done


def _attrs_text(attrs):
    if not attrs:
        return None
    import json
    try:
        return json.dumps(attrs, default=repr, sort_keys=True)
    except (TypeError, ValueError):  # a circular value, keys that do not sort
        return json.dumps({str(k): repr(v) for k, v in attrs.items()})


class span:
    """A timed region, recorded into python.spans when it ends: start, duration, thread, the
    enclosing span (nesting follows the code, across functions and threads of asyncio tasks,
    through contextvars), keyword attributes as JSON, and the exception type if one left it::

        with probing.span("data_loading", worker=3):
            batch = next(it)

        @probing.span("validate")
        def validate(model): ...

    Costs a few microseconds; safe to leave in production code (the table is bounded)."""

    __slots__ = ("name", "attrs", "_open")

    def __init__(self, name, **attrs):
        self.name = str(name)
        self.attrs = attrs
        self._open = []  # (id, parent, token, start, perf) per enter: one object may be entered again

    def __enter__(self):
        if _span_append is None:
            _span_setup()
        parent = _current_span.get()
        span_id = next(_span_ids)
        self._open.append((span_id, parent, _current_span.set(span_id), _time(), _perf()))
        return self

    def __exit__(self, exc_type, exc, tb):
        end = _perf()
        try:
            span_id, parent, token, start, began = self._open.pop()
        except IndexError:
            return False
        try:
            _current_span.reset(token)
        except ValueError:  # entered in another context (an object shared between tasks)
            pass
        try:
            _span_append({"span_id": span_id, "parent_id": parent, "name": self.name, "start": start,
                          "duration": end - began, "thread_id": _get_ident(), "attrs": _attrs_text(self.attrs),
                          "error": exc_type.__name__ if exc_type is not None else None})
        except Exception:  # recording never raises into the code it measures
            pass
        return False

    def __call__(self, fn):
        import functools
        import inspect
        name, attrs = self.name, self.attrs
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def spanned_async(*args, **kwargs):
                with span(name, **attrs):
                    return await fn(*args, **kwargs)
            return spanned_async

        @functools.wraps(fn)
        def spanned(*args, **kwargs):
            with span(name, **attrs):
                return fn(*args, **kwargs)
        return spanned


def event(name, **attrs):
    """A point in time, recorded into python.events with the span it happened in::

        probing.event("checkpoint_saved", path=path, step=step)
    """
    if _span_append is None:
        _span_setup()
    try:
        _event_append({"time": _time(), "name": str(name), "span_id": _current_span.get(),
                       "thread_id": _get_ident(), "attrs": _attrs_text(attrs)})
    except Exception:  # recording never raises into the code it measures
        pass


# The client side (probing.connect), imported on first use so that a target's `import probing`
# does not import http.client. probing.TimeoutError is left out of __all__ so that
# `from probing import *` does not shadow the builtin TimeoutError (it subclasses it).
_CLIENT_NAMES = ("connect", "Probe", "Cluster", "RemoteError", "NotSupported", "TargetUnavailable", "ConnectionLost",
                 "TimeoutError")


def __getattr__(name):
    if name in _CLIENT_NAMES:
        from . import client
        return getattr(client, name)
    raise AttributeError("module 'probing' has no attribute %r" % name)


def load_ipython_extension(ipython):
    """%load_ext probing: adds %probing and %%probing (see probing.ipython)."""
    from . import ipython as _ipython
    _ipython.load_ipython_extension(ipython)


def unload_ipython_extension(ipython):
    from . import ipython as _ipython
    _ipython.unload_ipython_extension(ipython)
