# Python half of `probing PID backtrace`: compiled once into a private namespace of the target
# (never put in sys.modules), called from src/python/frames.cpp on an agent thread with the GIL
# held, after brief.py (the build puts that text before this one: _Repr, _BriefRepr, _brief,
# _local_kinds). It reads frames and shows locals briefly and safely: it imports nothing the program
# may be importing itself but `re` (for a frame at a `with` or an `.acquire(`), never touches a
# tensor's or array's data, and turns any failure of a repr into a placeholder.
import os
import _thread

_files = {}  # file name -> ((mtime_ns, size), lines): the few files read without linecache
_MAX_FILES = 32
_MAX_FILE_BYTES = 4 << 20


def _cookie(first_lines):
    """The encoding a PEP 263 comment in the first two lines names, or None (no `re`)."""
    for raw in first_lines:
        line = raw.decode("latin-1").lstrip(" \t\f")
        if not line.strip():
            continue  # a blank first line: the cookie may be on the second
        if not line.startswith("#"):
            return None  # the cookie must be in a comment-only line; code ends the search
        at = line.find("coding")
        if at >= 0 and line[at + 6:at + 7] in (":", "="):
            name = line[at + 7:].lstrip(" \t")
            end = 0
            while end < len(name) and (name[end].isalnum() or name[end] in "-_."):
                end += 1
            return name[:end] or None
    return None


def _lines_of(filename):
    """The file's lines as linecache gives them (PEP 263 encoding, universal newlines), read
    directly: linecache imports tokenize, which imports re, and those imports were most of a first
    backtrace's cost in a process that had none of them. None when it cannot be read so."""
    try:
        st = os.stat(filename)
        if st.st_size > _MAX_FILE_BYTES or (st.st_mode & 0o170000) != 0o100000:
            return None  # too big, or not a regular file (a FIFO would block the read)
        key = (st.st_mtime_ns, st.st_size)
        kept = _files.get(filename)
        if kept is not None and kept[0] == key:
            return kept[1]
        with open(filename, "rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
        encoding = "utf-8"
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        else:
            encoding = _cookie(data.split(b"\n", 2)[:2]) or encoding
        text = data.decode(encoding, "replace").replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
    except (OSError, LookupError, ValueError):
        return None
    if len(_files) >= _MAX_FILES:
        _files.clear()
    _files[filename] = (key, lines)
    return lines


def _line(filename, lineno):
    """Line `lineno` of a source file ('' if there is none): through the program's linecache if it
    has imported it (its cache, and sources that only a module's loader has), else read here."""
    if lineno is None or lineno <= 0 or not filename or filename.startswith("<"):
        return ""
    try:
        linecache = sys.modules.get("linecache")
        if linecache is not None:
            return linecache.getline(filename, lineno)
        lines = _lines_of(filename)
        return lines[lineno - 1] if lines is not None and lineno <= len(lines) else ""
    except BaseException:
        return ""


def _source(filename, lineno):
    return _line(filename, lineno).strip() or None


_LOCK = type(_thread.allocate_lock())
_RLOCK = _thread.RLock
_MISSING = object()
_patterns = None


def _lock_patterns():
    """(WITH, ACQUIRE, WITH_ITEM, RLOCK_OWNER), compiled on first need: `re` is imported only when
    a frame is at a `with` or an `.acquire(` (a first backtrace of a process without `re` spent
    most of its time importing it)."""
    global _patterns
    if _patterns is None:
        import re
        name = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
        # `with A, B as c:` (every item) and `NAME.acquire(`: how a thread comes to wait for a lock.
        _patterns = (re.compile(r"\bwith\s+(.*?):?\s*(?:#.*)?$"),
                     re.compile(r"(" + name + r")\.acquire\("),
                     re.compile(r"^\(?\s*(" + name + r")\s*(?:as\s+\w+)?\s*\)?$"),
                     re.compile(r"owner=(\d+)"))
    return _patterns
_DICT_SLOT = type(type.__dict__["__dict__"])  # getset_descriptor: the built-in __dict__
_MRO = type.__dict__["__mro__"].__get__
_CLASS_DICT = type.__dict__["__dict__"].__get__


def _lock_kind(obj):
    t = type(obj)  # compared by identity: no metaclass __eq__ or __hash__ runs
    if t is _LOCK:
        return "threading.Lock"
    if t is _RLOCK:
        return "threading.RLock"
    return None


def _instance_attr(obj, name):
    """obj.name from the instance's own __dict__, reached through the built-in __dict__ slot only:
    no property, __getattr__ or __dict__ override of the target's runs."""
    for cls in _MRO(type(obj)):
        slot = _CLASS_DICT(cls).get("__dict__", _MISSING)
        if slot is _MISSING:
            continue
        if type(slot) is not _DICT_SLOT:
            return _MISSING
        try:
            d = slot.__get__(obj)
        except BaseException:
            return _MISSING
        return d.get(name, _MISSING) if type(d) is dict else _MISSING
    return _MISSING


def _plain_locals(items):
    """A dict of a _Seen's locals, keeping only names that are strings (no key's __hash__
    or __eq__ of the target's runs)."""
    return {k: v for k, v in items if type(k) is str} if items else {}


def _resolve(dotted, f_locals, f_globals):
    parts = dotted.split(".")
    obj = f_locals.get(parts[0], _MISSING)
    if obj is _MISSING and type(f_globals) is dict:
        obj = f_globals.get(parts[0], _MISSING)
    for name in parts[1:]:
        if obj is _MISSING:
            break
        obj = _instance_attr(obj, name)
    if obj is not _MISSING and _lock_kind(obj) is None:
        inner = _instance_attr(obj, "_lock")  # `with condition:` waits for the condition's lock
        if _lock_kind(inner) is not None:
            obj = inner
    return obj


def _rlock_owner(obj):
    m = _lock_patterns()[3].search(repr(obj))  # the C type's own repr
    return int(m.group(1)) if m else 0


def _segments_at(code, lasti):
    """The source text of the instruction at lasti and of the one before it (3.11+;
    `with a, b:` waits in BEFORE_WITH, whose position is the whole statement, right after the
    load of the item it enters)."""
    positions = getattr(code, "co_positions", None)
    if positions is None or lasti < 0:
        return []
    at = lasti // 2
    out = []
    try:
        for i, (lineno, end_lineno, col, end_col) in enumerate(positions()):
            if i > at:
                break
            one_line = lineno is not None and lineno == end_lineno and None not in (col, end_col)
            if i >= at - 1 and one_line:
                out.append(_line(code.co_filename, lineno)[col:end_col].strip())
    except BaseException:
        return []
    return out[::-1]


def _threading_code(name):
    """The code object of threading.NAME (Class.method), if threading is loaded; never imports it."""
    threading = sys.modules.get("threading")
    if threading is None:
        return None
    cls, _, method = name.partition(".")
    try:
        return _CLASS_DICT(type(threading).__dict__["__dict__"].__get__(threading)[cls])[method].__code__
    except BaseException:
        return None


def _waited_lock(seen, waiter):
    """What the innermost frame (a _Seen) waits for: a threading.Lock or RLock another thread
    holds (its current line is `with LOCK:` or `LOCK.acquire(...)`), a Thread's end (join), a
    Condition's notify; else None. Reads names and built-in state, never runs the target's code."""
    code = seen.code
    f_locals = _plain_locals(seen.items)
    me = f_locals.get("self", _MISSING)
    if me is not _MISSING:
        if code is _threading_code("Thread.join") or code is _threading_code("Thread._wait_for_tstate_lock"):
            ident = _instance_attr(me, "_ident")
            return {"kind": "thread_end", "expr": "self", "address": "0x%x" % id(me),
                    "owner": ident if type(ident) is int else None}
        if code is _threading_code("Condition.wait"):
            return {"kind": "threading.Condition", "expr": "self", "address": "0x%x" % id(me), "owner": None}
    line = _source(code.co_filename, seen.lineno)
    if not line or ("with" not in line and ".acquire(" not in line):
        return None
    with_, acquire, with_item, _ = _lock_patterns()
    names = [m.group(1) for m in acquire.finditer(line)]
    m = with_.search(line)
    if m:
        for item in m.group(1).split(","):
            item_match = with_item.match(item.strip())
            if item_match:
                names.append(item_match.group(1))
    found = []
    for dotted in names:
        obj = _resolve(dotted, f_locals, seen.f_globals)
        kind = _lock_kind(obj)
        if kind == "threading.Lock" and obj.locked():
            found.append((dotted, obj, kind, None))
        elif kind == "threading.RLock":
            owner = _rlock_owner(obj)
            if owner not in (0, waiter):  # nobody's, or its own: no wait
                found.append((dotted, obj, kind, owner))
    if len(found) > 1:  # `with a, b:` holding a: the item the frame is at
        for segment in _segments_at(code, seen.lasti):
            at = [f for f in found if f[0] == segment]
            if at:
                found = at
                break
    if len(found) != 1:
        return None
    dotted, obj, kind, owner = found[0]
    return {"kind": kind, "expr": dotted, "address": "0x%x" % id(obj), "owner": owner}



class _Seen:
    """One frame as _snapshot saw it, from the agent's native _snapshot (frames.cpp: in C, so that
    the GIL cannot go while every chosen thread's frames are read, and why that matters): what is
    read of the frame later is read from here, never from the frame, which may have returned."""
    __slots__ = ("code", "lineno", "lasti", "f_globals", "items")

    def __init__(self, frame, lineno, lasti, f_globals, items):
        self.code = frame.f_code
        self.lineno = lineno
        self.lasti = lasti
        self.f_globals = f_globals
        self.items = items  # [(name, value)], or None when not read


def _snapshot_threads(wanted, want_locals, max_depth):
    """[(ident, [_Seen, innermost first], truncated)] of the threads whose idents are in
    `wanted` (None: all but this one), with their locals when asked (the innermost frame's
    always: _waited_lock reads them)."""
    raw = _snapshot(sys._current_frames, wanted, _thread.get_ident(), want_locals, max_depth, _PROXY_TYPE)
    return [(ident, [_Seen(*f) for f in frames], bool(truncated)) for ident, frames, truncated in raw]


def _entries(seen, want_locals, r, deadline):
    """The JSON entries of a thread's _Seen frames: source lines and briefs of locals."""
    out = []
    for depth, f in enumerate(seen):
        code = f.code
        entry = {
            "depth": depth,
            "func": getattr(code, "co_qualname", code.co_name),
            "file": code.co_filename,
            "lineno": f.lineno if f.lineno is not None else -1,
            "source": _source(code.co_filename, f.lineno),
            "frame_type": "Python",
        }
        if want_locals:
            items = [(k if type(k) is str else _opaque(k), v) for k, v in f.items or ()]  # no key's __str__
            if code.co_name == "<module>":  # module globals: leave out dunders and imports
                items = [(k, v) for k, v in items
                         if not (k.startswith("__") and k.endswith("__")) and not issubclass(type(v), _ModuleType)]
            kinds = _local_kinds(code) if code.co_name != "<module>" else {}
            entry["locals"] = [{"name": k, "value": _brief(v, r, deadline),
                                "kind": kinds.get(k, "global" if code.co_name == "<module>" else "local")}
                               for k, v in items[:64]]
        out.append(entry)
    return out


def loaded():
    """Called once by the agent after the program's first seconds (frames.cpp:
    load_backtrace_helper): this text is compiled then, not by the first backtrace."""
    return None


def capture(want_thread, want_all, want_locals, max_depth, repr_chars, budget_s, main_ident, user_reprs=1):
    """The backtrace as JSON text. want_thread: a threading ident or native tid, or 0 for the main
    thread; want_all: every thread; main_ident: the main thread's ident as the agent read it
    (0: ask threading); user_reprs: locals may run the target's own __repr__ (the full right),
    else _BriefRepr. Threads the agent itself runs on are left out."""
    deadline = time.monotonic() + budget_s
    r = (_Repr if user_reprs else _BriefRepr)(repr_chars or _REPR_CHARS)
    # Never import threading here: imported first on an agent thread, it would take that thread
    # for the target's main thread. (enumerate() takes a lock: before the snapshot.)
    threading = sys.modules.get("threading")
    by_ident = {t.ident: t for t in threading.enumerate()} if threading is not None else {}
    if not main_ident and threading is not None:
        main_ident = threading.main_thread().ident
    if want_all:
        wanted = None
    elif want_thread:
        wanted = [want_thread] + [i for i, t in by_ident.items() if getattr(t, "native_id", None) == want_thread]
    else:
        wanted = [main_ident]
    picked = []
    for ident, seen, truncated in _snapshot_threads(wanted, want_locals, max_depth):
        t = by_ident.get(ident)
        native = getattr(t, "native_id", None) if t is not None else None
        picked.append((ident, t, native, seen, truncated))
    names = []
    threads = []
    for ident, t, native, seen, truncated in picked:
        name = t.name if t is not None else None
        if ident == main_ident and (t is None or t is not threading.main_thread()):
            name = "MainThread"  # threading not imported, or first imported on another thread
        if name is not None:
            names.append((ident, name))
        stack = _entries(seen, want_locals, r, deadline)
        try:
            waiting_for = _waited_lock(seen[0], ident) if seen else None
        except ProbingTimeout:
            raise
        except BaseException:
            waiting_for = None
        if waiting_for is not None and waiting_for["owner"] in by_ident:
            waiting_for["owner_name"] = by_ident[waiting_for["owner"]].name
        if native is None and ident == main_ident:
            native = os.getpid()  # threading not imported: the main thread is the process's first
        threads.append({
            "thread_id": ident,
            "native_thread_id": native,
            "name": name,
            "daemon": t.daemon if t is not None else None,
            "is_main": ident == main_ident,
            "holds_gil": False,
            "frames": stack,
            "truncated": truncated,
            "waiting_for": waiting_for,
        })
    threads.sort(key=lambda th: (not th["is_main"], th["thread_id"]))
    return {"threads": threads, "names": names}  # read natively (helpers.cpp: from_python)
