// C, not C++: CPython's internal headers use <stdatomic.h> (pycore_atomic.h), which C++20 cannot
// include. Built only where CMake finds CPython 3.12's headers, internal ones included.
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>

#include "internal/pycore_frame.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"

#include "cpython312_offsets.h"

#if PY_MAJOR_VERSION != 3 || PY_MINOR_VERSION != 12
#error "the headers found for the CPython 3.12 check are of another version"
#endif

void probing_py312_header_offsets(struct ProbingPy312HeaderOffsets* out) {
#if defined(Py_DEBUG) || defined(Py_TRACE_REFS)
  out->release_build = 0;
#else
  out->release_build = 1;
#endif
  out->runtime_interpreters_head = offsetof(_PyRuntimeState, interpreters.head);
  out->runtime_main_thread = offsetof(_PyRuntimeState, main_thread);
  out->interp_next = offsetof(PyInterpreterState, next);
  out->interp_threads_head = offsetof(PyInterpreterState, threads.head);
  out->interp_ceval_gil = offsetof(PyInterpreterState, ceval.gil);
  out->gil_last_holder = offsetof(struct _gil_runtime_state, last_holder);
  out->gil_locked = offsetof(struct _gil_runtime_state, locked);
  out->gil_size = sizeof(struct _gil_runtime_state);
  out->ts_next = offsetof(PyThreadState, next);
  out->ts_cframe = offsetof(PyThreadState, cframe);
  out->cframe_current_frame = offsetof(_PyCFrame, current_frame);
  out->ts_thread_id = offsetof(PyThreadState, thread_id);
  out->ts_native_thread_id = offsetof(PyThreadState, native_thread_id);
  out->frame_code = offsetof(_PyInterpreterFrame, f_code);
  out->frame_previous = offsetof(_PyInterpreterFrame, previous);
  out->frame_instr_ptr = offsetof(_PyInterpreterFrame, prev_instr);
  out->frame_owner = offsetof(_PyInterpreterFrame, owner);
  out->frame_locals = offsetof(_PyInterpreterFrame, f_locals);
  out->frame_object_frame = offsetof(struct _frame, f_frame);
  out->frame_object_fast_as_locals = offsetof(struct _frame, f_fast_as_locals);
  out->code_firstlineno = offsetof(PyCodeObject, co_firstlineno);
  out->code_filename = offsetof(PyCodeObject, co_filename);
  out->code_name = offsetof(PyCodeObject, co_name);
  out->code_qualname = offsetof(PyCodeObject, co_qualname);
  out->code_linetable = offsetof(PyCodeObject, co_linetable);
  out->code_adaptive = offsetof(PyCodeObject, co_code_adaptive);
  out->unicode_length = offsetof(PyASCIIObject, length);
  out->unicode_state = offsetof(PyASCIIObject, state);
  out->ascii_object_size = sizeof(PyASCIIObject);
  out->compact_object_size = sizeof(PyCompactUnicodeObject);
  out->bytes_size = offsetof(PyVarObject, ob_size);
  out->bytes_data = offsetof(PyBytesObject, ob_sval);
}
