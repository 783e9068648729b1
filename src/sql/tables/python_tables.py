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
