"""The IPython/Jupyter extension: ``%load_ext probing``, then

    %probing PID eval CODE        run CODE in process PID's __main__, print what it prints
    %probing PID backtrace [--all] the stack of its main thread (or of every thread)
    %probing PID query SQL        run SQL there; the result (a DataFrame with pandas) is returned
    %%probing PID                 run the whole cell in PID

PID may be any target `probing` takes (pid, host:port, unix:PATH). Connections are kept per
target for the session. The remote traceback of code that raised is printed to stderr.
"""

import shlex
import sys

from . import client as _client

_probes = {}  # target text -> Probe

_USAGE = ("usage: %probing TARGET eval CODE | %probing TARGET backtrace [--all] | "
          "%probing TARGET query SQL | %%probing TARGET (cell)")


def _probe(target):
    probe = _probes.get(target)
    if probe is None:
        probe = _client.connect(target)
        _probes[target] = probe
    return probe


def _report(e):
    if isinstance(e, _client.RemoteError):
        if e.output:
            sys.stdout.write(e.output if e.output.endswith("\n") else e.output + "\n")
        sys.stderr.write(e.traceback or "%s: %s\n" % (e.type, e.message))
    else:
        sys.stderr.write("probing: %s\n" % e)


def _print_frames(frames):
    for f in frames:
        sys.stdout.write('  File "%s", line %s, in %s\n' % (f.get("file"), f.get("lineno"), f.get("func")))
        if f.get("source"):
            sys.stdout.write("    %s\n" % f["source"].strip())


def probing_magic(line, cell=None):
    """%probing TARGET COMMAND ... and %%probing TARGET; see the module's docstring."""
    line = line.strip()
    target, _, rest = line.partition(" ")
    rest = rest.strip()
    if not target:
        sys.stderr.write(_USAGE + "\n")
        return None
    try:
        if cell is not None:
            if rest:
                sys.stderr.write("probing: %%%%probing takes only the target, got %r\n" % rest)
                return None
            sys.stdout.write(_probe(target).eval(cell))
            return None
        command, _, arg = rest.partition(" ")
        if command == "eval" and arg.strip():
            sys.stdout.write(_probe(target).eval(arg.strip()))
            return None
        if command == "backtrace":
            flags = shlex.split(arg)
            threads = _probe(target).backtrace(all="--all" in flags)
            if "--all" in flags:
                for t in threads:
                    sys.stdout.write("Thread %s (%s):\n" % (t.get("thread_id"), t.get("name") or "?"))
                    _print_frames(t.get("frames", []))
            else:
                _print_frames(threads)
            return None
        if command == "query" and arg.strip():
            return _probe(target).query(arg.strip())
        sys.stderr.write(_USAGE + "\n")
    except (_client.RemoteError, _client.TargetUnavailable) as e:
        _report(e)
    return None


def load_ipython_extension(ipython):
    """Registers %probing and %%probing."""
    ipython.register_magic_function(probing_magic, magic_kind="line_cell", magic_name="probing")


def unload_ipython_extension(ipython):
    for probe in _probes.values():
        probe.close()
    _probes.clear()
