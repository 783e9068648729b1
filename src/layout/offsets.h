// Field offsets of CPython's interpreter structs, for the GIL-free stack reader: every version
// difference it needs is in this one table, chosen once per process. x86-64/aarch64 (LP64) only.
//
// Sources: CPython's Include/internal/pycore_{runtime,interp,frame,code,gil,ceval_state}.h and
// Include/cpython/{pystate,code,frameobject,unicodeobject}.h at each release tag. 3.13+ publishes
// its own offsets in _PyRuntime.debug_offsets (_Py_DebugOffsets), which are read and checked
// instead of trusting a table; 3.12 publishes none, and has a table like 3.9-3.11. 3.11 is
// exercised by `make test`, 3.13-3.15 by `make test-matrix`; 3.9, 3.10 and 3.12 cannot be
// installed here and are untested (the 3.12 table is checked against offsetof() in its headers
// where they are installed: tests/unit/cpython312_offsets.c).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"
#include "layout/version.h"

namespace probing::layout {

constexpr size_t kNoField = SIZE_MAX;

enum class FrameModel {
  kFrameObject,       // 3.9-3.10: tstate->frame is a PyFrameObject chain (f_back)
  kInterpreterFrame,  // 3.11+: _PyInterpreterFrame chain (previous)
};

enum class LineTableFormat {
  kLnotab,     // 3.9 co_lnotab: (addr delta, line delta) byte pairs
  kLinetable,  // 3.10 co_linetable: (addr delta, line delta or -128) byte pairs
  kLocations,  // 3.11+ co_linetable: the location table (Objects/locations.md)
};

struct CPythonOffsets {
  int minor = 0;
  const char* source = "";  // "table" or "_Py_DebugOffsets"
  bool tested = false;      // exercised by tests/e2e on this project's machines

  // _PyRuntime
  size_t runtime_interpreters_head = kNoField;
  size_t runtime_main_thread = kNoField;      // 3.9-3.12: unsigned long, the main thread's ident
  size_t runtime_gil_locked = kNoField;       // 3.9-3.11: _PyRuntime.ceval.gil.locked (int)
  size_t runtime_gil_last_holder = kNoField;  // 3.9-3.11: ...gil.last_holder (PyThreadState*)
  // PyInterpreterState
  size_t interp_next = kNoField;
  size_t interp_threads_head = kNoField;
  size_t interp_ceval_gil = kNoField;  // 3.12+: interp->ceval.gil (struct _gil_runtime_state*)
  size_t gil_locked = kNoField;        // within _gil_runtime_state, 3.12+
  size_t gil_last_holder = kNoField;
  // PyThreadState
  size_t ts_next = kNoField;
  size_t ts_thread_id = kNoField;
  size_t ts_native_thread_id = kNoField;  // 3.11+
  size_t ts_frame = kNoField;             // 3.9-3.10 frame, 3.13 current_frame
  size_t ts_cframe = kNoField;            // 3.11-3.12 cframe
  size_t cframe_current_frame = kNoField;
  // frames
  FrameModel frame_model = FrameModel::kInterpreterFrame;
  size_t frame_code = kNoField;
  size_t frame_previous = kNoField;
  size_t frame_instr_ptr = kNoField;  // 3.11+: prev_instr / instr_ptr (_Py_CODEUNIT*)
  size_t frame_lasti = kNoField;      // 3.9-3.10: f_lasti (int)
  bool lasti_in_code_units = false;   // 3.10: f_lasti counts code units, 3.9: bytes
  size_t frame_owner = kNoField;      // 3.11+: char; 3 = owned by the C stack (3.12+ shims)
  size_t frame_is_entry = kNoField;   // 3.11: bool, the first frame of its C-level eval call
  size_t frame_gen = kNoField;        // 3.9-3.10: f_gen, the generator or coroutine running it (or 0)
  // 3.11+: where a generator or coroutine object keeps its frame (gi_iframe): a frame owned by one
  // (owner 1, FRAME_OWNED_BY_GENERATOR) lies this many bytes into it.
  size_t gen_iframe = kNoField;
  // Where a frame keeps the dict that reading its f_locals makes (3.9-3.12; 3.13+ reads locals
  // through a proxy and keeps none): in the PyFrameObject on 3.9-3.10, in its _PyInterpreterFrame
  // on 3.11-3.12, which the PyFrameObject points to (f_frame) and beside which it marks that a
  // dict was made (f_fast_as_locals, a char).
  size_t frame_locals = kNoField;
  size_t frame_object_frame = kNoField;
  size_t frame_object_fast_as_locals = kNoField;
  // PyCodeObject
  size_t code_filename = kNoField;
  size_t code_name = kNoField;
  size_t code_qualname = kNoField;  // 3.11+
  size_t code_linetable = kNoField;
  size_t code_firstlineno = kNoField;
  size_t code_adaptive = kNoField;  // 3.11+: co_code_adaptive, the first code unit
  LineTableFormat line_table = LineTableFormat::kLocations;
  // str and bytes
  size_t unicode_length = 16;
  size_t unicode_state = 32;
  size_t ascii_object_size = 48;    // sizeof(PyASCIIObject); 40 from 3.12
  size_t compact_object_size = 72;  // sizeof(PyCompactUnicodeObject); 56 from 3.12
  size_t bytes_size = 16;           // ob_size
  size_t bytes_data = 32;           // ob_sval
};

// The offsets for this interpreter. `runtime` is the address of _PyRuntime in process `pid`
// (0: this one), read (fault-safely) for _Py_DebugOffsets on 3.13+. kUnsupported, naming the version, for any
// version without a checked table: the reader never guesses.
Result<CPythonOffsets> cpython_offsets(const PythonVersion& version, uintptr_t runtime, pid_t pid = 0);

}  // namespace probing::layout
