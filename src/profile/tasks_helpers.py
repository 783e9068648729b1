"""asyncio's tasks, for `probing PID profile --async` and `probing PID backtrace --tasks`
(profile/tasks.cpp).

Called with the GIL a few times a second while such a profile runs, once for such a backtrace. It
reads what asyncio keeps and imports nothing but json and time (the agent's other helpers import
them too): a process that never imported asyncio gets an empty answer. It names what each running event loop runs: its tasks, the
coroutine each runs (by id(), the address the agent's sampler sees on the stacks it reads without
the GIL), which task awaits which, and where each waiting task waits.
"""

import json
import sys
import time

MAX_FRAMES = 64  # of one task's await chain


class ProbingTimeout(BaseException):
    """Raised asynchronously when a snapshot ran past its deadline."""


def _loops():
    """(thread ident, loop) for each thread inside a loop's run_forever."""
    events = sys.modules.get("asyncio.events")
    if events is None:
        return []
    found = []
    for ident, frame in sys._current_frames().items():
        depth = 0
        while frame is not None and depth < 512:
            code = frame.f_code
            if code.co_name == "run_forever" and code.co_filename.endswith("base_events.py"):
                loop = frame.f_locals.get("self")
                if isinstance(loop, events.AbstractEventLoop):
                    found.append((ident, loop))
                    break
            frame = frame.f_back
            depth += 1
    return found


def _qualname(code):
    return getattr(code, "co_qualname", code.co_name)


def _await_chain(coro, source):
    """Where a suspended coroutine waits: its frames and those of what it awaits, innermost first.
    With `source` (a function of file and line), each frame ends with its source line."""
    frames = []
    while coro is not None and len(frames) < MAX_FRAMES:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        entry = [_qualname(frame.f_code), frame.f_code.co_filename, frame.f_lineno or 0]
        if source is not None:
            entry.append(source(entry[1], entry[2]))
        frames.append(entry)
        if hasattr(coro, "cr_await"):
            coro = coro.cr_await
        else:
            coro = getattr(coro, "gi_yieldfrom", None)
    frames.reverse()
    return frames


def _awaited(task, is_task):
    """The tasks `task` waits on: one it awaits, or those a gather it awaits runs."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return []
    if is_task(waiter):
        return [waiter]
    children = getattr(waiter, "_children", None)  # asyncio.gather's future
    if isinstance(children, (list, tuple)):
        return [c for c in children if is_task(c)]
    return []


def _group_parent(task):
    """The task a TaskGroup that started `task` belongs to: its done callback is the group's."""
    for entry in getattr(task, "_callbacks", None) or ():
        callback = entry[0] if isinstance(entry, tuple) else entry
        group = getattr(callback, "__self__", None)
        parent = getattr(group, "_parent_task", None)
        if parent is not None:
            return parent
    return None


def _source_lines(max_lines):
    """A function of (file, line) giving that line's text, stripped, through linecache when it is
    loaded (traceback loads it; this imports nothing); None past `max_lines` distinct lines."""
    linecache = sys.modules.get("linecache")
    seen = {}

    def source(filename, lineno):
        key = (filename, lineno)
        if key not in seen:
            text = None
            if linecache is not None and len(seen) < max_lines and lineno > 0:
                try:
                    text = linecache.getline(filename, lineno).strip() or None
                except Exception:
                    text = None
            seen[key] = text
        return seen[key]

    return source


def snapshot(max_tasks, max_source_lines=0):
    """{"time", "loops": [{"thread", "tasks": [[id, coroutine id, name, running, [parent ids], chain]]}],
    "truncated", "asyncio", "cost": seconds it took}: chain is null for a running task (the sampler sees its stack).
    With max_source_lines, the chain's frames carry their source line (up to that many lines)."""
    now = time.time()
    started = time.perf_counter()
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return json.dumps({"time": now, "loops": [], "truncated": False, "asyncio": False})

    task_types = tuple(
        t for t in (getattr(asyncio, "Task", None), getattr(sys.modules.get("asyncio.tasks"), "_PyTask", None)) if t
    )

    def is_task(obj):
        return isinstance(obj, task_types)

    source = _source_lines(max_source_lines) if max_source_lines > 0 else None
    loops = []
    left = max_tasks
    truncated = False
    for ident, loop in _loops():
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # the set changed while it was read, too often
            continue
        if len(tasks) > left:
            tasks = tasks[:left]
            truncated = True
        left -= len(tasks)
        parents = {}
        for task in tasks:
            for child in _awaited(task, is_task):
                parents.setdefault(id(child), []).append(id(task))
            group_parent = _group_parent(task)
            if group_parent is not None:
                parents.setdefault(id(task), []).append(id(group_parent))
        rows = []
        for task in tasks:
            coro = task.get_coro()
            running = bool(getattr(coro, "cr_running", False) or getattr(coro, "gi_running", False))
            try:
                name = task.get_name()
            except Exception:
                name = ""
            rows.append(
                [
                    id(task),
                    id(coro),
                    str(name),
                    running,
                    sorted(set(parents.get(id(task), ()))),
                    None if running else _await_chain(coro, source),
                ]
            )
        loops.append({"thread": ident, "tasks": rows})
    cost = time.perf_counter() - started
    return json.dumps({"time": now, "cost": cost, "loops": loops, "truncated": truncated, "asyncio": True})
