# Python half of PyTorch tracing (python.torch_trace): compiled once into a private namespace of
# the target (never put in sys.modules) and driven from torch_trace.cpp on an agent thread with
# the GIL held. The recording itself is native (torch/hooks.cpp, whose functions this namespace
# gets as _native_*): the global module hooks and the wrappers of backward and of a DataLoader's
# wait are builtins that write rows straight into the column store. What is left here happens once
# per step or once per model: naming a model's modules, counting steps, DataLoader workers, CUDA
# events, and install() / uninstall(), which register PyTorch's global hooks (one registration
# each, not one per module) and put back exactly what was there. Nothing here raises into the
# model: any failure switches tracing off and is reported.
import json
import sys
import time
from _thread import get_ident as _get_ident

# Nanoseconds as an int, on the clock of the native hooks (CLOCK_MONOTONIC): a duration is then a
# whole number of them, which python.torch_trace keeps in a few bytes.
_perf = time.perf_counter_ns
_now = time.time


class ProbingTimeout(BaseException):
    """Raised asynchronously when a call ran past its deadline."""


class _State:
    def __init__(self):
        self.installed = False
        self.append = None        # the store's append (rows timed by CUDA events)
        self.handles = []         # RemovableHandles of the global hooks
        self.restore = []         # (owner, attribute, original) to put back, in reverse order
        self.ours = []            # the wrappers install() put in place of those originals
        self.wrapped_steps = {}   # optimizer class -> original step (1.13 path)
        self.warning_filters = []  # the warnings filter install() added (2.x), removed by uninstall()
        self.period = 1           # trace one step in `period` (the step counter is native)
        self.optimizer_seen = False
        self.primary_root = None  # the first top-level module called: without an optimizer,
                                  # each of its top-level calls is a step
        self.roots = None         # WeakSet of the top models named so far
        self.cuda = None          # torch.cuda when timing with CUDA events
        self.torch_cuda = None    # torch.cuda when it is available but not initialized yet
        self.pending = []         # (start_event, end_event, row, children) waiting for the GPU
        self.free_events = []     # CUDA events whose rows were written, for reuse
        self.error = None         # why tracing switched itself off
        self.declined = None      # why this process is not traced (a DataLoader worker)
        self.cuda_rows = 0        # rows written from here (CUDA); the native ones are counted there
        # threads that were in a module's forward when the hooks came (None: any thread may be,
        # while install() runs: other threads run between its bytecodes)
        self.walk_threads = None
        self.module_backward = False  # torch.module_backward: a backward row per module call
        self.module_backward_error = None  # why it switched itself off
        self.backward_calls = []      # _BackwardCalls whose backward began, to be written
        self.tensor_type = None       # torch.Tensor
        self.graph_task_id = None     # torch._C._current_graph_task_id (2.x): -1 outside a backward pass


S = _State()
_MAX_PENDING = 10000
_MAX_FREE_EVENTS = 4096
_MB = 1.0 / (1 << 20)

def _torch():
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    spec = getattr(torch, "__spec__", None)
    if spec is None or getattr(spec, "_initializing", False):
        return None  # still importing
    if "torch.nn.modules.module" not in sys.modules or "torch.optim.optimizer" not in sys.modules:
        return None
    return torch


def _compiled(module):
    """The module a torch.compile'd wrapper (OptimizedModule) compiles, or None."""
    if type(module).__name__ != "OptimizedModule":
        return None
    return module.__dict__.get("_modules", {}).get("_orig_mod")


_COMPILED = " (compiled)"


def _name_tree(root):
    """Names a top model (its class name) and everything under it (dotted from it, without the
    top model's own name). Where a module belongs to two models, the first named keeps it. The
    names are kept natively, each while its module lives. A torch.compile'd module (the wrapper
    torch.compile returns, whose forward runs the compiled code) is named as the module it
    compiles, with " (compiled)" after it; the "_orig_mod" step of the paths under it is left out,
    so the modules inside (which run as Python only where the compiled code falls back) keep
    their names."""
    S.roots.add(root)
    inner = _compiled(root)
    top = type(inner if inner is not None else root).__name__
    _native_set_name(root, top + _COMPILED if inner is not None else top)
    try:
        for sub_name, sub in root.named_modules():
            if not sub_name or _native_name(sub) is not None:
                continue
            path = [p for p in sub_name.split(".") if p != "_orig_mod"]
            name = ".".join(path) if path else top
            _native_set_name(sub, name + _COMPILED if _compiled(sub) is not None else name)
    except Exception:
        pass


def _name(module):
    # not under a model named yet: its class, not kept (its model's naming wins)
    return _native_name(module) or type(module).__name__


def _name_in(module, parent):
    """The name of a module not named yet, called inside `parent`'s forward (or None); None for
    a module the compiled code of a torch.compile'd parent calls (a backend's fx GraphModule):
    the compiled module's row stands for it, and it gets none."""
    try:
        if parent is not None:
            inner = _compiled(parent)
            if inner is not None and module is not inner:
                _native_set_name(module, None)
                return None
            _name_child(module, parent)
        return _name(module)
    except Exception as e:
        _fail(e)
        return type(module).__name__


def _name_child(module, parent):
    """A module made after its model was named (a layer built lazily, one swapped in): named
    under the parent it is called from, when the parent holds it."""
    parent_name = _native_name(parent)
    if parent_name is None:
        return
    try:
        for key, child in parent._modules.items():
            if child is module:
                _native_set_name(module, key if parent in S.roots else parent_name + "." + key)
                return
    except Exception:
        pass


_MODULE_FILE = "/torch/nn/modules/module.py"


def _is_call_impl(code):
    """Whether a frame's code is Module._call_impl: a module's call in progress."""
    return code.co_name == "_call_impl" and code.co_filename.endswith(_MODULE_FILE)


def _outer_calls(frame):
    """The modules of the Module._call_impl frames from `frame` outwards, innermost first, the
    innermost one left out: it is the call being entered, whose locals are not read."""
    own = True
    while frame is not None:
        if _is_call_impl(frame.f_code):
            if own:
                own = False
            else:
                m = frame.f_locals.get("self")
                if m is not None:
                    yield m
        frame = frame.f_back


def _running_modules(module):
    """The modules whose forward is running on this thread, outermost first, from the Python stack
    (each one's Module._call_impl frame), without `module` (the one being called now). Empty for a
    top-level call; not empty when tracing started in the middle of a forward (a toggle, an
    inject), so that those modules are not taken for top models."""
    found = [m for m in _outer_calls(sys._getframe(2)) if m is not module]
    found.reverse()
    return found


_CHECKPOINT_FILE = "/torch/utils/checkpoint.py"


def _recomputing():
    """Whether the module being called, whose model is not named, runs in an activation
    checkpoint's recomputation during the backward pass. torch.utils.checkpoint's is found on the
    Python stack, below its backward (use_reentrant=True) or its saved-tensor unpack hook
    (use_reentrant=False: `unpack` before 2.0, `unpack_hook` since); its first forward, under
    checkpoint() itself, is not. Another's (an autograd Function of its own, as Megatron's and
    DeepSpeed's are) is, on torch 2.x, any call during a backward pass (autograd's graph task on
    this thread) while no model is named yet."""
    f = sys._getframe(1)
    while f is not None:
        code = f.f_code
        if code.co_filename.endswith(_CHECKPOINT_FILE) and \
                (code.co_name == "backward" or "unpack" in code.co_name):
            return True
        f = f.f_back
    return not S.roots and S.graph_task_id is not None and S.graph_task_id() != -1


def _running(module):
    """Called by the native pre hook when `module` is called while an entry of its own is on this
    thread's stack: whether its forward is running on this thread besides the call being entered
    (a recursion), or not (the entry was left by a forward that raised: PyTorch before 2.1 runs no
    post hook for it, and the entries from it up are dropped)."""
    try:
        return any(m is module for m in _outer_calls(sys._getframe(1)))
    except Exception:
        return True  # nothing dropped


def _threads_in_a_forward():
    """The threads with a module's forward running now (a Module._call_impl frame on their stack):
    only on those can a module be called on an empty stack from inside a forward that began before
    the hooks, and only there does _top_level look at the stack."""
    found = set()
    for ident, f in sys._current_frames().items():
        while f is not None:
            if _is_call_impl(f.f_code):
                found.add(ident)
                break
            f = f.f_back
    return found


def _in_dataloader_worker(look_at_main_thread=False):
    """Whether this process is a DataLoader's worker: torch says so once the worker's loop has
    begun. Before that (`look_at_main_thread`), a forked worker's main thread shows both the
    DataLoader iterator that forked it (inherited from the parent) and the child's own start,
    multiprocessing's Process._bootstrap; the parent's shows no _bootstrap."""
    worker = sys.modules.get("torch.utils.data._utils.worker")
    if worker is not None and getattr(worker, "_worker_info", None) is not None:
        return True
    if look_at_main_thread:
        main = getattr(sys.modules.get("threading"), "main_thread", None)
        ident = main().ident if main is not None else None
        f = sys._current_frames().get(ident) if ident is not None else None
        child = loader = False
        while f is not None:
            file = f.f_code.co_filename
            if file.endswith("/torch/utils/data/_utils/worker.py"):
                return True
            if f.f_code.co_name == "_bootstrap" and file.endswith("/multiprocessing/process.py"):
                child = True
            loader = loader or file.endswith("/torch/utils/data/dataloader.py")
            f = f.f_back
        return child and loader
    return False


def _decline():
    """A DataLoader worker runs the dataset's code, not the model: it records no rows and keeps
    no hooks (a forked worker inherits the parent's)."""
    S.declined = "a DataLoader worker process: its modules are not traced"
    uninstall()


def _top_level(module):
    """Called by the native pre hook for a module called on an empty stack: a top model's call, or
    one inside a forward that was running when tracing started. Names the model and counts the
    step (without an optimizer). The modules already running are not traced: a call that began
    before the hooks existed took PyTorch's path without hooks and never runs the post hook that
    would end its entry (the stack would never be empty again, and no step counted). Returns 0 when
    the call is not traced (in a DataLoader worker, whose hooks are then gone; in a checkpoint's
    recomputation before its model is named), 2 when the call is being captured into a CUDA graph
    (not timed), else 1."""
    try:
        if _in_dataloader_worker():
            _decline()
            return 0
        running = []
        walk = S.walk_threads
        if walk is None or (walk and _get_ident() in walk):
            running = _running_modules(module)
            if not running and walk:  # that thread's forwards begun before the hooks are over
                walk.discard(_get_ident())
        root = running[0] if running else module
        # (A module of a model named already keeps its name when called on its own: an
        # activation checkpoint's recomputation during the backward pass calls it so. Before its
        # model is named, that call is not a top model's: it is left untraced until the model's
        # next forward names it, rather than named, for good, as a model of its own.)
        if root not in S.roots and _native_name(root) is None:
            if _recomputing():
                return 0
            _name_tree(root)
        if S.primary_root is None:
            S.primary_root = root
            _native_set_primary(root)
        if not running and module is S.primary_root and not S.optimizer_seen:
            _new_step()
        return 2 if S.cuda is not None and _capturing() else 1
    except Exception as e:
        _fail(e)
        return 0


def _memory():
    cuda = S.cuda
    if cuda is None:
        return None, None
    return cuda.memory_allocated() * _MB, cuda.max_memory_allocated() * _MB


def _new_step():
    if S.backward_calls:
        _flush_backward()  # passes not run through torch.autograd.backward (autograd.grad)
    step = _native_new_step()  # this thread's stack starts empty: a forward that raised left entries
    if S.pending:
        _flush()
    if S.cuda is None and S.torch_cuda is not None and step % 16 == 1:
        # CUDA is usually initialized after torch is imported (model.cuda()): time with events
        # from the first step boundary that sees it.
        try:
            if S.torch_cuda.is_initialized():
                S.cuda = S.torch_cuda
                _native_set_cuda(True)
        except Exception:
            S.torch_cuda = None


def _after_step():
    """After an optimizer step: the steps are counted by them from now on."""
    try:
        S.optimizer_seen = True
        _new_step()
    except Exception as e:
        _fail(e)


# ---- CUDA: rows timed by events, written once the GPU has passed them ----

def _cuda_start(check_capture):
    """The native hooks' start of a call timed on the GPU: [start event, its children's rows], or
    None when the stream is being captured into a CUDA graph (nothing is recorded then)."""
    try:
        if check_capture and _capturing():
            return None
        return [_start_event(), []]
    except Exception as e:
        _fail(e)
        return None


def _cuda_finish(name, stage, started, parent, start_time, module):
    """Its end: the end event, and the row kept until both events completed. `parent`: the
    enclosing forward's [event, children] (for its self time). `module`: the module of a forward
    row, whose allocator figures are read only for the top model; None for backward, step, data."""
    try:
        memory = module is S.primary_root if module is not None else stage != "data"
        children = started[1] if stage == "forward" else None
        row = _record_cuda(name, stage, start_time, started[0], children, memory)
        if parent is not None and row is not None:
            parent[1].append(row)
    except Exception as e:
        _fail(e)


def _record_cuda(module_name, stage, start_time, start_event, children, memory):
    """Keeps the row of a call until its CUDA events completed; returns the kept row. `children`:
    the pending rows of a forward's traced children, for its self time. `memory`: read CUDA's
    allocator figures after it (a few rows a step, not every module's)."""
    end_event = _event()
    end_event.record()
    allocated, max_allocated = _memory() if memory else (None, None)
    step, seq = _native_take_seq()
    row = {"step": step, "seq": seq, "module": module_name, "stage": stage, "duration": None,
           "self_duration": None, "allocated": allocated, "max_allocated": max_allocated,
           "time": start_time}
    if len(S.pending) < _MAX_PENDING:
        S.pending.append((start_event, end_event, row, children))
        return row
    _reuse(start_event, end_event)
    return None


def _begin():
    """The start of a call timed from here (an optimizer step): None when the step is not traced
    or the stream is being captured, else (perf ns, unix time, CUDA start or None)."""
    if not _native_counters()[2]:
        return None
    if S.cuda is None:
        return _perf(), _now(), None
    started = _cuda_start(True)
    return None if started is None else (_perf(), _now(), started)


def _end(name, stage, begun):
    if begun is None:
        return
    if begun[2] is None:
        _native_record(name, stage, begun[0], begun[1])
    else:
        _cuda_finish(name, stage, begun[2], None, begun[1], None)


def _flush():
    """Rows whose CUDA events completed; never waits for the GPU. A forward's children complete
    before it (their events come first on the stream), so its self time is known with it."""
    still = []
    for start, end, row, children in S.pending:
        if end.query():
            row["duration"] = start.elapsed_time(end) / 1000.0
            if children is not None:
                row["self_duration"] = row["duration"] - sum(c["duration"] or 0.0 for c in children)
            S.append(row)
            S.cuda_rows += 1
            _reuse(start, end)
        else:
            still.append((start, end, row, children))
    S.pending = still


def _event():
    """A CUDA timing event: one whose row was written, else a new one."""
    try:
        return S.free_events.pop()  # atomic: another thread may take the last one first
    except IndexError:
        return S.cuda.Event(enable_timing=True)


def _reuse(*events):
    if len(S.free_events) < _MAX_FREE_EVENTS:
        S.free_events.extend(events)


def _capturing():
    """Whether this thread's stream is being captured into a CUDA graph: nothing is recorded then
    (an event recorded in a capture would be part of the graph)."""
    cuda = S.cuda
    if cuda is None:
        return False
    try:
        return bool(cuda.is_current_stream_capturing())
    except Exception:
        return False


def _start_event():
    if S.cuda is None:
        return None
    e = _event()
    e.record()
    return e


def _fail(e):
    S.error = "%s: %s" % (type(e).__name__, e)
    try:
        uninstall()
    except Exception:
        pass


# ---- the hooks ----

def _not_compiling():
    return False


# torch.compiler.is_dynamo_compiling (2.3+; is_compiling before): True while TorchDynamo traces a
# compiled model's forward, which inlines the global module hooks, and a plain `return False`
# otherwise. Dynamo cannot trace into a builtin (a call of one is a graph break), so on PyTorch 2.x
# the hooks registered are the two Python functions below, which return at once under Dynamo: the
# compiled graph holds nothing of ours (no mutation of our state, no graph break); a compiled
# model's modules are not traced, its optimizer steps and backward passes are, and the compiled
# module's own call (torch.compile's wrapper, which runs eagerly) is one row.
_compiling = _not_compiling


def _pre_forward(module, inputs):
    if _compiling():
        return
    _native_pre(module, inputs)


def _post_forward(module, inputs, output):
    if _compiling():
        return
    _native_post(module, inputs, output)


def _timed_step(step):
    """1.13: wraps an optimizer class's step so that each call is a row of stage step. A Python
    function (its frame is <probing torch_trace>'s): set on the class, it must bind as a method and
    carry 1.13's step.hooked mark."""
    def traced(*args, **kwargs):
        # Only step's own exceptions reach the caller; a failure of the tracer switches it off.
        if not S.installed:
            return step(*args, **kwargs)
        try:
            begun = _begin()
        except Exception as e:
            _fail(e)
            return step(*args, **kwargs)
        result = step(*args, **kwargs)
        if S.installed:
            try:
                _end(_step_label(args), "step", begun)
            except Exception as e:
                _fail(e)
            _after_step()
        return result
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        try:
            setattr(traced, attr, getattr(step, attr))
        except (AttributeError, TypeError):
            pass
    try:
        traced.__dict__.update(getattr(step, "__dict__", {}))  # keeps 1.13's step.hooked mark
    except (AttributeError, TypeError):
        pass
    traced.__wrapped__ = step  # after the update: step's own __dict__ may carry an older __wrapped__
    traced.__probing_traced__ = True
    return traced


def _backward_label(args):
    """The row of a traced backward pass, asked for by the wrapper once the pass returned: the
    top model's name. The pass's module rows (torch.module_backward) are written first."""
    if S.backward_calls:
        _flush_backward()
    root = S.primary_root
    return _name(root) if root is not None else "backward"


# ---- torch.module_backward: a backward row per module call ----
#
# A module's backward is the part of the backward pass that runs the autograd nodes its forward
# made. It begins when the gradient reaches the module's output: a pre hook on the output's node
# (a hook on the output tensor where PyTorch has no node pre hooks: the same moment, once its
# gradient is whole). It ends when the last of its nodes finished: for a module that called no
# traced module (a leaf), post hooks on the last nodes its forward made (those whose gradient goes
# only to its inputs' nodes, as they were before its forward, or to its parameters), found from its
# outputs' nodes (at most _MAX_NODES walked); for one that did, the end of its children's backward
# and of its own outputs' nodes. The hooks return None: no gradient is changed, and they go with
# the graph. Autograd runs a module's nodes one after the other on the CPU; on a GPU the hooks
# would time the launch of the kernels, not their run, so the CUDA path records none.

_MAX_NODES = 64
_MAX_BACKWARD_CALLS = 100000


class _BackwardCall:
    __slots__ = ("name", "thread", "fwd_start", "fwd_end", "start", "end", "waited")

    def __init__(self, name, fwd_start, fwd_end):
        self.name = name
        self.thread = _get_ident()
        self.fwd_start = fwd_start
        self.fwd_end = fwd_end
        self.start = None
        self.end = None
        self.waited = False  # a flush found it begun and not finished

    def begin(self, *args):
        if self.start is None and S.installed:
            self.start = _perf()
            if len(S.backward_calls) < _MAX_BACKWARD_CALLS:
                S.backward_calls.append(self)

    def finish(self, *args):
        if self.start is not None:
            self.end = _perf()


def _tensors(value, found, limit, depth=0):
    """The tensors with an autograd node in a forward's inputs or output: a tensor, or in a tuple,
    list or dict (two levels), at most `limit`."""
    if len(found) >= limit:
        return found
    if isinstance(value, S.tensor_type):
        if value.grad_fn is not None:
            found.append(value)
    elif depth < 2 and isinstance(value, (tuple, list)):
        for v in value[:limit]:
            _tensors(v, found, limit, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for v in list(value.values())[:limit]:
            _tensors(v, found, limit, depth + 1)
    return found


def _backward_inputs(inputs):
    """Called by the native pre hook for each traced call under a model while
    torch.module_backward is on: its inputs' autograd nodes before its forward runs, id -> node
    (kept, so that the ids stay theirs), where the walk of the nodes its forward makes stops. (An
    in-place module gives its input a node of its own: read after the forward, it would be that
    one.) Inputs passed by keyword are not seen."""
    try:
        return {id(t.grad_fn): t.grad_fn for t in _tensors(inputs, [], 16)}
    except Exception:
        return None


def _track_backward(name, before, output, fwd_start, fwd_end, had_children):
    """Called by the native post hook for each traced call under a model while
    torch.module_backward is on, with what _backward_inputs gave before its forward."""
    try:
        outputs = _tensors(output, [], 8)
        nodes = [o.grad_fn for o in outputs]
        if not nodes or (not had_children and all(id(n) in before for n in nodes)):
            return  # no output needs a gradient, or the module made no node (it returns its input)
        call = _BackwardCall(name, fwd_start, fwd_end)
        for o, node in zip(outputs, nodes):
            register_prehook = getattr(node, "register_prehook", None)
            if register_prehook is not None:
                register_prehook(call.begin)
            else:
                o.register_hook(call.begin)
        if had_children:
            for node in nodes:
                node.register_hook(call.finish)
            return
        # A leaf: the nodes from its outputs' down to its inputs'. Only those that lead to no other
        # of them need a hook: every node of the module runs before one of those (it computes a
        # gradient that reaches one). (The node objects are kept while their ids are compared:
        # PyTorch makes one anew for a node nothing refers to.)
        stop = before
        nodes = [n for n in nodes if id(n) not in stop]
        seen = {}
        while nodes and len(seen) < _MAX_NODES:
            node = nodes.pop()
            if id(node) in seen:
                continue
            seen[id(node)] = node
            inside = [n for n, _ in node.next_functions
                      if n is not None and id(n) not in stop and type(n).__name__ != "AccumulateGrad"]
            if inside:
                nodes.extend(inside)
            else:
                node.register_hook(call.finish)
        for node in nodes:  # past _MAX_NODES: the end is at least theirs
            node.register_hook(call.finish)
    except Exception as e:
        _module_backward_failed(e)


def _module_backward_failed(e):
    """The module rows stop; the rest of the tracing goes on."""
    S.module_backward_error = "%s: %s" % (type(e).__name__, e)
    set_module_backward(False)


def _flush_backward():
    """Writes the module rows of the backward passes since the last flush; never raises. A call's
    backward covers its children's (the calls that ran inside its forward, on its thread): it
    spans the earliest start and the latest end of theirs and its own, and its self time is what
    its children's leave. A call not finished yet (a pass still running: this flush is an inner
    one, of a reentrant checkpoint's recomputation) waits for the next."""
    try:
        calls, S.backward_calls = S.backward_calls, []
        waiting = [c for c in calls if c.end is None]
        for c in waiting:
            if c.waited:  # its pass ended without it (it raised): dropped
                c.start = None
            c.waited = not c.waited
        S.backward_calls = [c for c in waiting if c.start is not None]
        calls = [c for c in calls if c.end is not None]
        calls.sort(key=lambda c: (c.thread, c.fwd_start, -c.fwd_end))
        parents = []
        stack = []  # the calls whose forward contains this one's, outermost first
        for c in calls:
            while stack and (stack[-1].thread != c.thread or stack[-1].fwd_end < c.fwd_end):
                stack.pop()
            parents.append(stack[-1] if stack else None)
            stack.append(c)
        starts = {id(c): c.start for c in calls}
        ends = {id(c): c.end for c in calls}
        for c, parent in zip(reversed(calls), reversed(parents)):  # innermost first
            if parent is not None:
                starts[id(parent)] = min(starts[id(parent)], starts[id(c)])
                ends[id(parent)] = max(ends[id(parent)], ends[id(c)])
        in_children = {}
        for c, parent in zip(calls, parents):
            if parent is not None:
                in_children[id(parent)] = in_children.get(id(parent), 0) + ends[id(c)] - starts[id(c)]
        for c in sorted(calls, key=lambda c: starts[id(c)]):
            start, end = starts[id(c)], ends[id(c)]
            own = max(0, end - start - in_children.get(id(c), 0))
            _native_record(c.name, "backward", start, None, end, own / 1e9)
        for c in calls:
            c.start = c.end = None  # a graph kept for another pass (retain_graph) records again
            c.waited = False
    except Exception as e:
        S.backward_calls = []
        _module_backward_failed(e)


def _step_label(args):
    return type(args[0]).__name__ if args else "optimizer"


def _wrap_optimizer_class(cls):
    """1.13: wraps cls.step (the class's own) unless already wrapped."""
    step = cls.__dict__.get("step")
    if step is None or getattr(step, "__probing_traced__", False) or cls in S.wrapped_steps:
        return
    S.wrapped_steps[cls] = step
    cls.step = _timed_step(step)


def _optimizer_classes(base):
    seen, todo = [], [base]
    while todo:
        cls = todo.pop()
        for sub in type.__subclasses__(cls):
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


# ---- install / uninstall ----

def install(append, sample_rate, module_backward=False):
    """Starts tracing; returns the status as JSON text. Idempotent."""
    torch = _torch()
    if torch is None:
        return json.dumps(dict(status(), reason="torch is not imported"))
    S.tensor_type = torch.Tensor
    S.graph_task_id = getattr(getattr(torch, "_C", None), "_current_graph_task_id", None)
    set_sample_rate(sample_rate)
    set_module_backward(module_backward)
    if S.installed:
        return status_json()
    if S.declined is not None or _in_dataloader_worker(look_at_main_thread=True):
        S.declined = "a DataLoader worker process: its modules are not traced"
        return status_json()
    import weakref
    module_mod = sys.modules["torch.nn.modules.module"]
    optim_mod = sys.modules["torch.optim.optimizer"]
    S.append = append
    S.walk_threads = None
    S.roots = weakref.WeakSet()
    S.primary_root = None
    S.error = None
    try:
        # Only is_initialized(), which asks the driver nothing: is_available() and device_count()
        # initialize it, and a process that forks afterwards (DataLoader workers) could then not
        # use CUDA in its children. A process without CUDA pays one call every 16 steps.
        cuda = getattr(torch, "cuda", None)
        S.torch_cuda = cuda if cuda is not None and hasattr(cuda, "is_initialized") else None
        S.cuda = S.torch_cuda if S.torch_cuda is not None and S.torch_cuda.is_initialized() else None
    except Exception:
        S.cuda = S.torch_cuda = None
    try:
        # names forgotten, no thread keeps entries of an earlier install's calls
        _native_start(_top_level, _name_in, _cuda_start, _cuda_finish, _after_step, _running)
        _native_set_cuda(S.cuda is not None)
        _install_hooks(torch, module_mod, optim_mod)
        S.walk_threads = _threads_in_a_forward()
    except Exception as e:
        # Half installed is worse than not at all: take back what went in.
        S.installed = True
        uninstall()
        S.error = "install: %s: %s" % (type(e).__name__, e)
        return status_json()
    S.installed = True
    return status_json()


def _install_hooks(torch, module_mod, optim_mod):
    global _compiling
    compiler = getattr(torch, "compiler", None)
    _compiling = (getattr(compiler, "is_dynamo_compiling", None) or getattr(compiler, "is_compiling", None)
                  or _not_compiling)
    if _compiling is not _not_compiling:
        # TorchDynamo inlines the global hooks into a compiled forward, and reads their globals by
        # importing their module by name: this one must be found (the only entry probing adds
        # to sys.modules; a top-level name, so that no `probing` package is imported for it).
        sys.modules.setdefault(__name__, globals()["__probing_module__"])
        # PyTorch 2.x warns, once per call site, when a torch.compile'd module is called while any
        # global module hook exists: the warning would be ours, printed on the program's stderr.
        warnings = sys.modules.get("warnings")
        if warnings is not None:
            before = list(warnings.filters)
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message=r"Using `torch\.compile\(module\)` when there are global hooks")
            S.warning_filters = [f for f in warnings.filters if f not in before]
    # Without TorchDynamo (1.13) the hooks are the builtins themselves.
    dynamo = _compiling is not _not_compiling
    S.handles.append(module_mod.register_module_forward_pre_hook(_pre_forward if dynamo else _native_pre))
    post = _post_forward if dynamo else _native_post
    try:
        # 2.1+: the post hook runs also for a forward that raised, which then leaves no entry on
        # the thread's stack (before, only the next step cleared them)
        S.handles.append(module_mod.register_module_forward_hook(post, always_call=True))
    except TypeError:
        S.handles.append(module_mod.register_module_forward_hook(post))
    # backward: one row per backward pass, around torch.autograd.backward (Tensor.backward calls it)
    autograd = sys.modules.get("torch.autograd")
    if autograd is not None and callable(getattr(autograd, "backward", None)):
        original = autograd.backward
        wrapper = _native_timed(original, "backward", _backward_label)
        S.restore.append((autograd, "backward", original))
        S.ours.append(wrapper)
        autograd.backward = wrapper
    # data: the wait for each batch, around the DataLoader iterator's __next__ (torch imports
    # torch.utils.data itself)
    loader = sys.modules.get("torch.utils.data.dataloader")
    iterator = getattr(loader, "_BaseDataLoaderIter", None)
    next_batch = iterator.__dict__.get("__next__") if isinstance(iterator, type) else None
    if next_batch is not None:
        wrapper = _native_method(_native_timed(next_batch, "data", "DataLoader"))
        S.restore.append((iterator, "__next__", next_batch))
        S.ours.append(wrapper)
        iterator.__next__ = wrapper
    # a DataLoader worker's crash report: PyTorch sets its own handlers of fatal signals at the start
    # of each worker, in place of the agent's; they go back in front of PyTorch's right after.
    signals = sys.modules.get("torch.utils.data._utils.signal_handling")
    set_handlers = getattr(signals, "_set_worker_signal_handlers", None)
    if set_handlers is not None:
        def _set_worker_signal_handlers(*args, _original=set_handlers):
            _original(*args)
            _native_crash_capture_again()
        S.restore.append((signals, "_set_worker_signal_handlers", set_handlers))
        S.ours.append(_set_worker_signal_handlers)
        signals._set_worker_signal_handlers = _set_worker_signal_handlers
    # optimizer steps: PyTorch 2.x has global step hooks; 1.13 gets its classes' step wrapped.
    pre = getattr(optim_mod, "register_optimizer_step_pre_hook", None)
    post = getattr(optim_mod, "register_optimizer_step_post_hook", None)
    if pre is not None and post is not None:  # builtins: (optimizer, args, kwargs)
        S.handles.append(pre(_native_step_pre))
        S.handles.append(post(_native_step_post))
    else:
        Optimizer = optim_mod.Optimizer
        for cls in _optimizer_classes(Optimizer):
            if getattr(cls.__dict__.get("step"), "hooked", False):  # an instance was made: in use
                _wrap_optimizer_class(cls)
        # classes first used later: Optimizer.__init__ calls _hook_for_profile on each new one
        original_hook = Optimizer.__dict__.get("_hook_for_profile")
        if original_hook is not None:
            def _hook_for_profile(self, _original=original_hook):
                _original(self)
                if S.installed:
                    _wrap_optimizer_class(type(self))
            S.restore.append((Optimizer, "_hook_for_profile", original_hook))
            S.ours.append(_hook_for_profile)
            Optimizer._hook_for_profile = _hook_for_profile


def uninstall():
    """Removes every hook and wrapper install() added; returns the status as JSON text."""
    for h in S.handles:
        try:
            h.remove()
        except Exception:
            pass
    S.handles = []
    _native_stop()  # a wrapper left in place (something wrapped it after us) passes calls through
    for owner, attr, original in reversed(S.restore):
        # Put back only where our wrapper is still in place: one installed over it stays (and
        # ours under it passes calls through once uninstalled).
        try:
            current = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
            if any(current is ours for ours in S.ours):
                setattr(owner, attr, original)
        except Exception:
            pass
    S.restore = []
    S.ours = []
    for cls, step in S.wrapped_steps.items():
        current = cls.__dict__.get("step")
        if getattr(current, "__probing_traced__", False) and current.__wrapped__ is step:
            cls.step = step
        # else: something wrapped it after us (a profiler); our wrapper stays and passes through
    S.wrapped_steps = {}
    warnings = sys.modules.get("warnings")
    for f in S.warning_filters:
        try:
            warnings.filters.remove(f)
            mutated = getattr(warnings, "_filters_mutated", None)  # drops the cache of decisions
            if mutated is not None:
                mutated()
        except Exception:
            pass
    S.warning_filters = []
    if S.pending:
        _flush()
    S.pending = []
    _native_set_backward(None, None)
    S.backward_calls = []
    S.installed = False
    return status_json()


def set_sample_rate(rate):
    rate = float(rate)
    S.period = 0 if rate <= 0 else max(1, int(round(1.0 / min(rate, 1.0))))
    _native_set_period(S.period)


def set_module_backward(on):
    if on and not S.module_backward:
        S.module_backward_error = None
    S.module_backward = bool(on)
    if S.module_backward:
        _native_set_backward(_backward_inputs, _track_backward)
    else:
        _native_set_backward(None, None)


def status_json():
    return json.dumps(status())


def status():
    step, _, _, rows = _native_counters()
    return {"installed": S.installed, "step": step, "rows": rows + S.cuda_rows, "error": S.error,
            "declined": S.declined,
            "cuda": S.cuda is not None, "optimizer_classes": sorted(c.__name__ for c in S.wrapped_steps),
            "period": S.period, "module_backward": S.module_backward,
            "module_backward_error": S.module_backward_error}
