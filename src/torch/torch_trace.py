# Python half of PyTorch tracing (python.torch_trace): compiled once into a private namespace of
# the target (never put in sys.modules) and driven from torch_trace.cpp on an agent thread with
# the GIL held. install() registers PyTorch's global module hooks (one registration each, not
# one per module) and wraps the optimizer's step; uninstall() removes every one of them and puts
# back exactly what was there. The hooks run on the target's threads: they never raise into the
# model (any failure switches tracing off and is reported), and record into the agent's column
# store through `append`, a builtin of the agent.
import json
import sys
import time
import _thread

# Nanoseconds as an int: a duration is then a whole number of them, which python.torch_trace
# keeps in a few bytes (a double of arbitrary bits takes eight).
_perf = time.perf_counter_ns
_now = time.time


class ProbingTimeout(BaseException):
    """Raised asynchronously when a call ran past its deadline."""


class _State:
    def __init__(self):
        self.installed = False
        self.append = None
        self.handles = []         # RemovableHandles of the global module hooks
        self.restore = []         # (owner, attribute, original) to put back, in reverse order
        self.ours = []            # the wrappers install() put in place of those originals
        self.wrapped_steps = {}   # optimizer class -> original step (1.13 path)
        self.warning_filters = []  # the warnings filter install() added (2.x), removed by uninstall()
        self.step = 0
        self.seq = 0
        self.traced = True        # whether the current step is sampled
        self.period = 1           # trace one step in `period`
        self.optimizer_seen = False
        self.primary_root = None  # the first top-level module called: without an optimizer,
                                  # each of its top-level calls is a step
        self.names = None         # WeakKeyDictionary module -> dotted name
        self.roots = None         # WeakSet of the top models named so far
        self.local = _thread._local()
        self.cuda = None          # torch.cuda when timing with CUDA events
        self.torch_cuda = None    # torch.cuda when it is available but not initialized yet
        self.pending = []         # (start_event, end_event, row, children) waiting for the GPU
        self.free_events = []     # CUDA events whose rows were written, for reuse
        self.error = None         # why tracing switched itself off
        self.declined = None      # why this process is not traced (a DataLoader worker)
        self.rows = 0


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


def _stack():
    try:
        return S.local.stack
    except AttributeError:
        S.local.capturing = False  # this thread's top-level call is being captured into a CUDA graph
        S.local.stack = []
        return S.local.stack


def _name_tree(root):
    """Names a top model (its class name) and everything under it (dotted from it, without the
    top model's own name). Where a module belongs to two models, the first named keeps it."""
    names = S.names
    S.roots.add(root)
    names[root] = type(root).__name__
    try:
        for sub_name, sub in root.named_modules():
            if sub_name and sub not in names:
                names[sub] = sub_name
    except Exception:
        pass


def _name(module):
    name = S.names.get(module)
    if name is None:  # not under a model named yet: its class, not kept (its model's naming wins)
        name = type(module).__name__
    return name


def _name_in(module, stack):
    """The name of a module not named yet, called with `stack` holding its parent's entry."""
    if stack:
        _name_child(module, stack[-1][0])
    return _name(module)


def _name_child(module, parent):
    """A module made after its model was named (a layer built lazily, one swapped in): named
    under the parent it is called from, when the parent holds it."""
    parent_name = S.names.get(parent)
    if parent_name is None:
        return
    try:
        for key, child in parent._modules.items():
            if child is module:
                S.names[module] = key if parent in S.roots else parent_name + "." + key
                return
    except Exception:
        pass


_MODULE_FILE = "/torch/nn/modules/module.py"


def _running_modules(module):
    """The modules whose forward is running on this thread, outermost first, from the Python stack
    (each one's Module._call_impl frame), without `module` (the one being called now). Empty for a
    top-level call; not empty when tracing started in the middle of a forward (a toggle, an
    inject), so that those modules are not taken for top models."""
    found = []
    own = True  # the innermost _call_impl is `module`'s own: its locals are not read
    f = sys._getframe(2)
    while f is not None:
        code = f.f_code
        if code.co_name == "_call_impl" and code.co_filename.endswith(_MODULE_FILE):
            if own:
                own = False
            else:
                m = f.f_locals.get("self")
                if m is not None and m is not module:
                    found.append(m)
        f = f.f_back
    found.reverse()
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


def _top_level(module, stack):
    """A module called on an empty stack: a top model's call, or one inside a forward that was
    running when tracing started. Names the model and counts the step (without an optimizer).
    The modules already running are not put on the stack: a call that began before the hooks
    existed took PyTorch's path without hooks and never runs the post hook that would take its
    entry off again (the stack would never be empty again, and no step counted). False in a
    DataLoader worker, whose hooks are then gone."""
    if _in_dataloader_worker():
        _decline()
        return False
    running = _running_modules(module)
    root = running[0] if running else module
    if root not in S.roots:
        _name_tree(root)
    if S.primary_root is None:
        S.primary_root = root
    if not running and module is S.primary_root and not S.optimizer_seen:
        _new_step()
    return True


def _memory():
    cuda = S.cuda
    if cuda is None:
        return None, None
    return cuda.memory_allocated() * _MB, cuda.max_memory_allocated() * _MB


def _new_step():
    S.step += 1
    S.seq = 0
    S.traced = S.period == 1 or S.step % S.period == 0
    _stack().clear()  # a forward that raised left its entries behind
    if S.pending:
        _flush()
    if S.cuda is None and S.torch_cuda is not None and S.step % 16 == 1:
        # CUDA is usually initialized after torch is imported (model.cuda()): time with events
        # from the first step boundary that sees it.
        try:
            if S.torch_cuda.is_initialized():
                S.cuda = S.torch_cuda
        except Exception:
            S.torch_cuda = None


def _record(module_name, stage, start_perf, start_time, start_event=None, children=None, memory=True):
    """Appends the row of a call (CPU), or keeps it until its CUDA events completed; returns the
    kept row. `children`: the pending rows of a forward's traced children, for its self time.
    `memory`: read CUDA's allocator figures after it (a few rows a step, not every module's)."""
    if start_event is not None:
        end_event = _event()
        end_event.record()
        allocated, max_allocated = _memory() if memory else (None, None)
        row = {"step": S.step, "seq": S.seq, "module": module_name, "stage": stage, "duration": None,
               "self_duration": None, "allocated": allocated, "max_allocated": max_allocated,
               "time": start_time}
        S.seq += 1
        if len(S.pending) < _MAX_PENDING:
            S.pending.append((start_event, end_event, row, children))
            return row
        _reuse(start_event, end_event)
        return None
    allocated, max_allocated = _memory()
    S.append({"step": S.step, "seq": S.seq, "module": module_name, "stage": stage,
              "duration": (_perf() - start_perf) / 1e9, "self_duration": None, "allocated": allocated,
              "max_allocated": max_allocated, "time": start_time})
    S.rows += 1
    S.seq += 1
    return None


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
            S.rows += 1
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


# torch.compiler.is_compiling (2.1+, torch._dynamo's before): True while TorchDynamo traces a
# compiled model's forward, which inlines the global module hooks. The hooks then return at once,
# so that the compiled graph holds nothing of ours (no mutation of our state, no graph break):
# a compiled model's modules are not traced, its optimizer steps and backward passes are.
_compiling = _not_compiling


# A stack entry: [module, perf_counter_ns at entry (None: untimed), time at entry, CUDA start event,
# nanoseconds of traced children (CPU), the children's pending rows (CUDA)].

def _pre_forward(module, inputs):
    # Runs before every module call in the process: the common path is a few attribute reads
    # and one append.
    if _compiling():
        return
    try:
        try:
            stack = S.local.stack
        except AttributeError:
            stack = _stack()
        if not stack:
            if not _top_level(module, stack):
                return
            S.local.capturing = S.cuda is not None and _capturing()
        if S.traced and not S.local.capturing:
            if S.cuda is None:
                stack.append([module, _perf(), _now(), None, 0, None])
            else:
                stack.append([module, _perf(), _now(), _start_event(), 0, []])
        else:
            stack.append([module, None, 0.0, None, 0, None])
    except Exception as e:
        _fail(e)


def _post_forward(module, inputs, output):
    if _compiling():
        return
    try:
        try:
            stack = S.local.stack
        except AttributeError:
            return
        # Its entry, and above it those of modules whose forward raised (no post hook ran for
        # them). None when its pre hook never ran: tracing started during its forward.
        i = len(stack) - 1
        while i >= 0 and stack[i][0] is not module:
            i -= 1
        if i < 0:
            return
        entry = stack[i]
        del stack[i:]
        if entry[1] is None:
            return
        if entry[3] is None:  # CPU: the row at once
            ns = _perf() - entry[1]
            if stack:
                stack[-1][4] += ns
            S.append({"step": S.step, "seq": S.seq, "module": S.names.get(module) or _name_in(module, stack),
                      "stage": "forward", "duration": ns / 1e9, "self_duration": (ns - entry[4]) / 1e9,
                      "allocated": None, "max_allocated": None, "time": entry[2]})
            S.rows += 1
            S.seq += 1
        else:
            name = S.names.get(module) or _name_in(module, stack)
            row = _record(name, "forward", entry[1], entry[2], entry[3], entry[5],
                          memory=module is S.primary_root)
            if stack and stack[-1][5] is not None and row is not None:
                stack[-1][5].append(row)
    except Exception as e:
        _fail(e)


def _timed(stage, label_of):
    """Wraps a callable so that each call is a row of `stage` (backward, step)."""
    def wrap(fn):
        def traced(*args, **kwargs):
            # Only fn's own exceptions reach the caller; a failure of the tracer switches it off.
            if not S.installed or not S.traced or _capturing():
                return _after(stage, fn(*args, **kwargs))
            try:
                start, start_time, event = _perf(), _now(), _start_event()
            except Exception as e:
                _fail(e)
                return fn(*args, **kwargs)
            result = fn(*args, **kwargs)
            try:
                _record(label_of(args), stage, start, start_time, event, memory=stage != "data")
            except Exception as e:
                _fail(e)
            return _after(stage, result)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(traced, attr, getattr(fn, attr))
            except (AttributeError, TypeError):
                pass
        try:
            traced.__dict__.update(getattr(fn, "__dict__", {}))  # keeps 1.13's step.hooked mark
        except (AttributeError, TypeError):
            pass
        traced.__wrapped__ = fn  # after the update: fn's own __dict__ may carry an older __wrapped__
        traced.__probing_traced__ = True
        return traced
    return wrap


def _after(stage, result):
    if stage == "step" and S.installed:
        try:
            S.optimizer_seen = True
            _new_step()
        except Exception as e:
            _fail(e)
    return result


def _backward_label(args):
    root = S.primary_root
    return _name(root) if root is not None else "backward"


def _data_label(args):
    return "DataLoader"


def _step_label(args):
    return type(args[0]).__name__ if args else "optimizer"


def _wrap_optimizer_class(cls):
    """1.13: wraps cls.step (the class's own) unless already wrapped."""
    step = cls.__dict__.get("step")
    if step is None or getattr(step, "__probing_traced__", False) or cls in S.wrapped_steps:
        return
    S.wrapped_steps[cls] = step
    cls.step = _timed("step", _step_label)(step)


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

def install(append, sample_rate):
    """Starts tracing; returns the status as JSON text. Idempotent."""
    torch = _torch()
    if torch is None:
        return json.dumps(dict(status(), reason="torch is not imported"))
    set_sample_rate(sample_rate)
    if S.installed:
        return status_json()
    if S.declined is not None or _in_dataloader_worker(look_at_main_thread=True):
        S.declined = "a DataLoader worker process: its modules are not traced"
        return status_json()
    import weakref
    module_mod = sys.modules["torch.nn.modules.module"]
    optim_mod = sys.modules["torch.optim.optimizer"]
    S.append = append
    S.names = weakref.WeakKeyDictionary()
    S.roots = weakref.WeakSet()
    S.primary_root = None
    S.local = _thread._local()  # no thread keeps entries from an earlier install's forwards
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
        _install_hooks(torch, module_mod, optim_mod)
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
    _compiling = getattr(compiler, "is_compiling", None) or _not_compiling
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
    S.handles.append(module_mod.register_module_forward_pre_hook(_pre_forward))
    S.handles.append(module_mod.register_module_forward_hook(_post_forward))
    # backward: one row per backward pass, around torch.autograd.backward (Tensor.backward calls it)
    autograd = sys.modules.get("torch.autograd")
    if autograd is not None and callable(getattr(autograd, "backward", None)):
        original = autograd.backward
        wrapper = _timed("backward", _backward_label)(original)
        S.restore.append((autograd, "backward", original))
        S.ours.append(wrapper)
        autograd.backward = wrapper
    # data: the wait for each batch, around the DataLoader iterator's __next__ (torch imports
    # torch.utils.data itself)
    loader = sys.modules.get("torch.utils.data.dataloader")
    iterator = getattr(loader, "_BaseDataLoaderIter", None)
    next_batch = iterator.__dict__.get("__next__") if isinstance(iterator, type) else None
    if next_batch is not None:
        wrapper = _timed("data", _data_label)(next_batch)
        S.restore.append((iterator, "__next__", next_batch))
        S.ours.append(wrapper)
        iterator.__next__ = wrapper
    # optimizer steps: PyTorch 2.x has global step hooks; 1.13 gets its classes' step wrapped.
    pre = getattr(optim_mod, "register_optimizer_step_pre_hook", None)
    post = getattr(optim_mod, "register_optimizer_step_post_hook", None)
    if pre is not None and post is not None:
        S.handles.append(pre(_step_pre_hook))
        S.handles.append(post(_step_post_hook))
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


_step_started = []


def _step_pre_hook(optimizer, args, kwargs):
    try:
        _step_started.append(None if _capturing() else (_perf(), _now(), _start_event()))
    except Exception as e:
        _fail(e)


def _step_post_hook(optimizer, args, kwargs):
    try:
        started = _step_started.pop() if _step_started else None
        if started is not None and S.traced:
            start, start_time, event = started
            _record(type(optimizer).__name__, "step", start, start_time, event)
        _after("step", None)
    except Exception as e:
        _fail(e)


def uninstall():
    """Removes every hook and wrapper install() added; returns the status as JSON text."""
    for h in S.handles:
        try:
            h.remove()
        except Exception:
            pass
    S.handles = []
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
    S.installed = False
    return status_json()


def set_sample_rate(rate):
    rate = float(rate)
    S.period = 0 if rate <= 0 else max(1, int(round(1.0 / min(rate, 1.0))))
    if S.period == 0:
        S.traced = False
        S.period = 1 << 62


def status_json():
    return json.dumps(status())


def status():
    return {"installed": S.installed, "step": S.step, "rows": S.rows, "error": S.error,
            "declined": S.declined,
            "cuda": S.cuda is not None, "optimizer_classes": sorted(c.__name__ for c in S.wrapped_steps),
            "period": S.period}
