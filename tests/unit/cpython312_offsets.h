// offsetof() of the fields the 3.12 table names, taken from CPython 3.12's own headers by
// cpython312_offsets.c, which is built only where those headers are installed.
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ProbingPy312HeaderOffsets {
  int release_build;  // neither Py_DEBUG nor Py_TRACE_REFS: the build the table is for
  size_t runtime_interpreters_head, runtime_main_thread;
  size_t interp_next, interp_threads_head, interp_ceval_gil;
  size_t gil_last_holder, gil_locked, gil_size;
  size_t ts_next, ts_cframe, cframe_current_frame, ts_thread_id, ts_native_thread_id;
  size_t frame_code, frame_previous, frame_instr_ptr, frame_owner, frame_locals;
  size_t frame_object_frame, frame_object_fast_as_locals;
  size_t code_firstlineno, code_filename, code_name, code_qualname, code_linetable, code_adaptive;
  size_t unicode_length, unicode_state, ascii_object_size, compact_object_size;
  size_t bytes_size, bytes_data;
};

void probing_py312_header_offsets(struct ProbingPy312HeaderOffsets* out);

#ifdef __cplusplus
}
#endif
