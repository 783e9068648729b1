// The native functions the probing Python package calls in the target (probing.table(name)
// .append(row)): built from the resolved CPython API, without Python.h, and handed to the
// package through the agent's probing_native() export.
#pragma once

#include "python/capi.h"
#include "sql/column_store.h"

namespace probing::bindings {

// A new dict {"make_appender": fn}; nullptr with a Python error set on failure (or nullptr
// without one when the CPython API cannot be resolved). REQUIRES: GIL held.
python::PyObject* native_functions() noexcept;

// An append builtin for a store the agent made itself (python.torch_trace): the same fast path
// as probing.table(name).append. New reference, or nullptr with a Python error set. The store
// must stay registered with the engine (which keeps it alive). REQUIRES: GIL held.
python::PyObject* appender_for(sql::ColumnStore* store) noexcept;

// Called in a forked child: its appends become no-ops (no agent serves the child, and a store's
// mutex may have been held by another thread at the fork).
void on_fork_child() noexcept;

}  // namespace probing::bindings
