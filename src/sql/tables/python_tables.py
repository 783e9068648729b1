# Python half of the python.modules and python.objects tables: compiled once into a private
# namespace of the target (never put in sys.modules) and called from python_tables.cpp on an
# agent thread with the GIL held. It imports nothing the target has not, runs no code of the
# target's modules (no getattr on a module, which could run a module __getattr__ or a lazy
# import).
import json
import sys


class ProbingTimeout(BaseException):
    """Raised asynchronously when a call ran past its deadline."""


def _text(x):
    return x if isinstance(x, str) else None


def modules(max_rows):
    rows = []
    for name, module in list(sys.modules.items()):
        if len(rows) >= max_rows:
            break
        try:
            d = object.__getattribute__(module, "__dict__")
        except BaseException:
            d = {}
        if not isinstance(d, dict):
            d = {}
        version = _text(d.get("__version__"))
        spec = d.get("__spec__")
        origin = None
        try:
            origin = _text(object.__getattribute__(spec, "origin")) if spec is not None else None
        except BaseException:
            pass
        rows.append([name, version, _text(d.get("__file__")) or origin,
                     _text(d.get("__package__")), "." not in name])
    return json.dumps({"rows": rows, "total": len(sys.modules)})


def objects(types, counts, sizes):
    """Rows of python.objects from a census taken natively (src/python/gc_census.cpp): the types,
    how many objects of each, and their sizes (None when not asked for)."""
    rows = []
    qualname = type.__dict__["__qualname__"].__get__
    module_of = type.__dict__["__module__"].__get__
    for i, t in enumerate(types):
        try:
            name, module = qualname(t), _text(module_of(t))
        except BaseException:
            name, module = "?", None
        rows.append([name, module, counts[i], sizes[i] if sizes is not None else None])
    rows.sort(key=lambda r: -r[2])
    return json.dumps({"rows": rows})


# ---- python.memory and python.memory_growth, and `probing PID memory snapshot` ----
# tracemalloc is used only in a process that started it (PYTHONTRACEMALLOC, or the program itself):
# starting or stopping it in a running process swaps Python's allocators without a lock, under
# threads that allocate without the GIL, and can crash the process. gc is built in.

NOT_TRACED = ("memory is not traced: start the process with PYTHONTRACEMALLOC=1 (tracemalloc cannot be "
              "started safely in a running process)")

_memory = {"base": None, "base_time": None}


def _tracing():
    """Whether tracemalloc traces: asked of its C half, which PYTHONTRACEMALLOC starts without the
    tracemalloc module (that one is imported only to read the traces)."""
    import _tracemalloc
    return _tracemalloc.is_tracing()


def memory():
    import gc
    counts = gc.get_count()
    stats = gc.get_stats()
    import _tracemalloc as tm
    tracing = tm.is_tracing()
    traced, peak = tm.get_traced_memory() if tracing else (None, None)
    cuda = [None, None, None]
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            cuda = [torch.cuda.memory_allocated() / 2**20, torch.cuda.memory_reserved() / 2**20,
                    torch.cuda.max_memory_allocated() / 2**20]
    except BaseException:
        pass
    mb = (lambda b: None if b is None else b / 2**20)
    return json.dumps({"rows": [[
        sys.getallocatedblocks(), counts[0], counts[1], counts[2],
        sum(s.get("collections", 0) for s in stats), sum(s.get("collected", 0) for s in stats),
        sum(s.get("uncollectable", 0) for s in stats), len(gc.garbage), int(tracing),
        tm.get_traceback_limit() if tracing else None, mb(traced), mb(peak),
        _memory["base_time"] if tracing else None] + cuda]})


def _snapshot():
    import tracemalloc
    return tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<string>"),  # code run by eval
        tracemalloc.Filter(False, "<probing *>"),  # the agent's helpers
    ])


def memory_snapshot():
    import time
    if not _tracing():
        raise RuntimeError(NOT_TRACED)
    snap = _snapshot()
    _memory.update(base=snap, base_time=time.time())
    return json.dumps({"traces": len(snap.traces), "bytes": sum(t.size for t in snap.traces)})


def cuda_history(op, max_entries, path):
    """PyTorch's record of CUDA allocations: start, stop, or dump its snapshot (the pickle that
    pytorch.org/memory_viz opens) into `path`, a new file."""
    torch = sys.modules.get("torch")
    if torch is None:
        raise RuntimeError("this process has not imported torch")
    cuda = sys.modules.get("torch.cuda")
    if cuda is None or not cuda.is_initialized():
        raise RuntimeError("CUDA is not initialized in this process: it has no GPU memory to record")
    mem = sys.modules.get("torch.cuda.memory")
    record = getattr(mem, "_record_memory_history", None)
    if record is None:
        raise RuntimeError("this PyTorch (%s) cannot record its CUDA allocations: 2.1 or newer can"
                           % getattr(torch, "__version__", "?"))
    if op == "start":
        try:
            record(enabled="all", max_entries=max_entries)
        except TypeError:  # before 2.1: a boolean, and another name for the bound
            record(True, trace_alloc_max_entries=max_entries)
        return json.dumps({"op": op, "max_entries": max_entries})
    if op == "stop":
        try:
            record(enabled=None)
        except TypeError:
            record(False)
        return json.dumps({"op": op})
    import os
    import pickle
    with open(path, "xb") as f:  # a new file, or an error before any snapshot is taken
        try:
            snapshot = mem._snapshot()
            pickle.dump(snapshot, f)
        except BaseException:
            f.close()
            os.unlink(path)
            raise
        size = f.tell()
    traces = snapshot.get("device_traces", []) if isinstance(snapshot, dict) else []
    return json.dumps({"op": op, "path": path, "bytes": size, "events": sum(len(t) for t in traces),
                       "segments": len(snapshot.get("segments", [])) if isinstance(snapshot, dict) else 0})


def memory_growth(limit):
    """Rows of python.memory_growth: by line, what was allocated since the base snapshot (or, before
    any, since tracing began) and is still alive, largest growth first."""
    if not _tracing():
        raise RuntimeError(NOT_TRACED)
    import tracemalloc
    now = _snapshot()
    base = _memory["base"]
    if base is None:  # no snapshot yet: all that is alive, as grown from nothing
        base = tracemalloc.Snapshot((), now.traceback_limit)
    stats = now.compare_to(base, "lineno")
    stats.sort(key=lambda s: -s.size_diff)
    rows = []
    for s in stats[:limit]:
        frame = s.traceback[0]
        rows.append([frame.filename, frame.lineno, s.size_diff / 1024, s.size / 1024, s.count_diff, s.count])
    return json.dumps({"rows": rows, "total": len(stats)})
