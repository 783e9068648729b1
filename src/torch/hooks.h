// The recording half of PyTorch tracing, in C++: the global forward hooks and the wrappers that
// time a call (backward, a DataLoader's wait) are builtins, so a traced module call runs no
// Python code of probing's on its common path and leaves no frame of probing's in the program's
// stacks or tracebacks. A row goes from the hook straight into python.torch_trace's column
// store; a module's dotted name is resolved once and kept. torch_trace.py keeps what happens
// once per step or once per model (naming a model, counting steps, CUDA events, install and
// uninstall) and gets these functions as natives of its namespace (kTracerNatives).
//
// Every function runs with the GIL held: it is what keeps the tracer's state consistent (one
// tracer per process; the agent refuses free-threaded builds).
#pragma once

#include "python/capi.h"

namespace probing::torch {

// Gives the natives the API they call. Before torch_trace.py is loaded; REQUIRES: GIL held.
void init_tracer(const python::CApi& api);

// In a forked child: the hooks write no row (the store's lock may have been copied held, and the
// child's rows could not be read); a DataLoader worker's remove themselves as before. REQUIRES:
// only the forking thread runs.
void on_fork_child() noexcept;

// The natives of torch_trace.py, ended by a null (HelperSource::natives).
extern python::MethodDef* const kTracerNatives[];

}  // namespace probing::torch
