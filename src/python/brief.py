# Shared by the agent's embedded helpers that show values (backtrace_helpers.py, and the exception
# hooks of src/agent/exception_helpers.py): the build puts this text before each of them, which
# then runs in its own private namespace. Brief and safe: it imports only reprlib (which imports
# nothing but modules built into the interpreter), sys and time, so that loading it early, while
# the program's own imports run, can meet none of their import locks; it never touches a tensor's
# or array's data, and turns any failure of a repr into a placeholder.
import reprlib
import sys
import time

_ModuleType = type(sys)

_REPR_CHARS = 200


class ProbingTimeout(BaseException):
    """Raised asynchronously when a capture ran past its deadline (a repr that never returns)."""


class _Repr(reprlib.Repr):
    def __init__(self, limit):
        super().__init__()
        self.maxstring = limit
        self.maxother = limit
        self.maxlong = 60
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 8
        self.maxdict = 8
        self.maxlevel = 3

    def repr1(self, x, level):
        brief = _array_summary(x)
        if brief is not None:
            return brief
        return super().repr1(x, level)

    def repr_instance(self, x, level):
        try:
            s = repr(x)
        except BaseException as e:  # noqa: B902 - a broken __repr__ must not reach the target
            if isinstance(e, ProbingTimeout):
                raise
            return "<%s object; repr failed: %s>" % (_type_name(x), type(e).__name__)
        if len(s) > self.maxother:
            s = s[: self.maxother - 3] + "..."
        return s


# Exact types whose repr is the interpreter's own C code, and containers of them.
_BUILTIN_SCALARS = frozenset([int, float, complex, bool, str, bytes, bytearray, type(None), type(...)])
_BUILTIN_CONTAINERS = frozenset([list, tuple, dict, set, frozenset])
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__


class _BriefRepr(_Repr):
    """Locals for a client with the read right only: runs no code of the target's own classes
    (a __repr__ that queries a database, a __lt__ or __hash__ of a dict key). Built-in scalars
    and containers are shown; tensors and arrays as shape/dtype/device; any other object as
    <module.Type at 0x...>."""

    def repr1(self, x, level):
        t = type(x)
        if t in _BUILTIN_SCALARS or t in _BUILTIN_CONTAINERS:
            return super().repr1(x, level)
        brief = _array_summary(x)
        if brief is not None:
            return brief
        return _opaque(x)

    # reprlib sorts dict keys and set items, which runs their __lt__: keep their own order, and
    # read values from items() (a lookup would run the key's __hash__ and __eq__).
    def repr_dict(self, x, level):
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        parts = ["%s: %s" % (self.repr1(k, level - 1), self.repr1(v, level - 1))
                 for k, v in _take(x.items(), self.maxdict)]
        return "{%s%s}" % (", ".join(parts), ", ..." if len(x) > self.maxdict else "")

    def repr_set(self, x, level):
        return self._items(x, level, "{", "}", self.maxset) if x else "set()"

    def repr_frozenset(self, x, level):
        return "frozenset(%s)" % self._items(x, level, "{", "}", self.maxfrozenset) if x else "frozenset()"

    def _items(self, x, level, left, right, most):
        if level <= 0:
            return left + "..." + right
        parts = [self.repr1(v, level - 1) for v in _take(x, most)]
        return left + ", ".join(parts) + (", ..." if len(x) > most else "") + right


def _take(iterable, n):
    out = []
    for item in iterable:
        if len(out) >= n:
            break
        out.append(item)
    return out


def _opaque(x):
    t = type(x)
    try:
        name = "%s.%s" % (_type_module(t), _type_qualname(t))
    except BaseException:
        name = "?"
    return "<%s at %#x>" % (name, id(x))


def _type_name(x):
    t = type(x)
    return "%s.%s" % (getattr(t, "__module__", "?"), getattr(t, "__qualname__", t.__name__))


def _mro_names(t):
    try:
        return [(getattr(c, "__module__", ""), getattr(c, "__name__", "")) for c in type.mro(t)]
    except BaseException:
        return []


def _array_summary(x):
    """shape/dtype/device of a torch tensor or numpy array, known by module and class name (torch
    and numpy are not imported here); None for anything else."""
    t = type(x)
    mod = getattr(t, "__module__", "") or ""
    if not (mod.startswith("torch") or mod.startswith("numpy")):
        return None
    names = _mro_names(t)
    if any(m in ("torch", "torch._tensor") and n == "Tensor" for m, n in names):
        try:
            shape = list(x.shape)
            grad = ", requires_grad=True" if x.requires_grad else ""
            return "%s(shape=%s, dtype=%s, device=%s%s)" % (t.__name__, shape, x.dtype, x.device, grad)
        except BaseException:
            return "<%s>" % t.__name__
    if any(m == "numpy" and n == "ndarray" for m, n in names):
        try:
            return "ndarray(shape=%s, dtype=%s)" % (list(x.shape), x.dtype)
        except BaseException:
            return "<ndarray>"
    return None


def _brief(value, r, deadline):
    if time.monotonic() > deadline:
        return "<not shown: time budget spent>"
    try:
        return r.repr(value)
    except ProbingTimeout:
        return "<repr interrupted: took too long>"
    except BaseException as e:
        return "<%s object; repr failed: %s>" % (_type_name(value), type(e).__name__)


_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08


def _local_kinds(code):
    """{name: "argument" | "cell" | "free"} for a function's code; other names are plain locals.
    f_locals lists them as the function declares them (arguments first), which is kept."""
    nargs = code.co_argcount + code.co_kwonlyargcount
    nargs += bool(code.co_flags & _CO_VARARGS) + bool(code.co_flags & _CO_VARKEYWORDS)
    kinds = {name: "cell" for name in code.co_cellvars}
    kinds.update((name, "free") for name in code.co_freevars)
    kinds.update((name, "argument") for name in code.co_varnames[:nargs])
    return kinds


# The type of an optimized frame's f_locals: FrameLocalsProxy on 3.13+, dict before.
_PROXY_TYPE = type((lambda: sys._getframe().f_locals)())
