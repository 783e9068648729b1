"""probing: a live debugger and profiler for Python processes.

In the process to be probed::

    import probing
    probing.init()          # starts the agent; `probing PID ...` can now talk to this process

The agent is the shared library libprobing.so; this package finds it and loads it with ctypes.
The same file is what `probing launch` preloads and `probing PID inject` attaches, so a process
never holds two agents.
"""

import ctypes
import os

__all__ = ["init", "library_path", "__version__", "connect", "Probe", "RemoteError", "NotSupported",
           "TargetUnavailable", "ConnectionLost"]

__version__ = "0.1.0"

_agent = None


def library_path():
    """Path of libprobing.so: $PROBING_LIBRARY, else the one installed beside this package
    (lib/probing/libprobing.so, with the package in lib/probing/python/probing)."""
    env = os.environ.get("PROBING_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "libprobing.so"))


def init():
    """Starts the probing agent in this process (idempotent). Returns the socket it serves,
    '@probing-<pid>'. Raises OSError when the agent library cannot be loaded."""
    global _agent
    if _agent is None:
        path = library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise OSError("probing: cannot load the agent library %s: %s (set PROBING_LIBRARY)" % (path, e)) from None
        if lib.probing_agent_start() != 0:
            raise OSError("probing: the agent could not start")
        _agent = lib
    return "@probing-%d" % os.getpid()


# The client side (probing.connect), imported on first use so that a target's `import probing`
# does not import http.client. probing.TimeoutError is left out of __all__ so that
# `from probing import *` does not shadow the builtin TimeoutError (it subclasses it).
_CLIENT_NAMES = ("connect", "Probe", "RemoteError", "NotSupported", "TargetUnavailable", "ConnectionLost",
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
