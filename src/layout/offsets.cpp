#include "layout/offsets.h"

#include <unistd.h>

#include <cstring>

#include "layout/memory.h"

namespace probing::layout {
namespace {

// 3.9 and 3.10 share _PyRuntimeState's layout; 3.11 adds `_initialized` in front (+8).
CPythonOffsets offsets_3_9_or_3_10(int minor) {
  CPythonOffsets o;
  o.minor = minor;
  o.source = "table";
  o.runtime_interpreters_head = 32;
  o.runtime_main_thread = 72;
  o.runtime_gil_last_holder = 360;
  o.runtime_gil_locked = 368;
  o.interp_next = 0;
  o.interp_threads_head = 8;  // tstate_head
  o.ts_next = 8;
  o.ts_frame = 24;
  o.ts_thread_id = 176;
  o.frame_model = FrameModel::kFrameObject;
  o.frame_previous = 24;  // f_back
  o.frame_code = 32;
  o.frame_lasti = minor == 9 ? 104 : 96;
  o.frame_gen = o.frame_lasti - 8;  // the pointer before f_lasti in both
  o.lasti_in_code_units = minor == 10;
  o.frame_locals = 56;  // after f_back, f_code, f_builtins, f_globals
  o.code_firstlineno = 40;
  o.code_filename = 104;
  o.code_name = 112;
  o.code_linetable = 120;  // co_lnotab (3.9) / co_linetable (3.10)
  o.line_table = minor == 9 ? LineTableFormat::kLnotab : LineTableFormat::kLinetable;
  return o;
}

CPythonOffsets offsets_3_11() {
  CPythonOffsets o;
  o.minor = 11;
  o.source = "table";
  o.tested = true;
  o.runtime_interpreters_head = 40;
  o.runtime_main_thread = 80;
  o.runtime_gil_last_holder = 368;  // ceval (352) . gil (360) . last_holder
  o.runtime_gil_locked = 376;
  o.interp_next = 0;
  o.interp_threads_head = 16;  // threads.head
  o.ts_next = 8;
  o.ts_cframe = 56;
  o.cframe_current_frame = 8;  // after uint8_t use_tracing
  o.ts_thread_id = 152;
  o.ts_native_thread_id = 160;
  o.frame_model = FrameModel::kInterpreterFrame;
  o.frame_code = 32;
  o.frame_previous = 48;
  o.frame_instr_ptr = 56;  // prev_instr
  o.frame_is_entry = 68;
  o.frame_owner = 69;
  o.frame_locals = 24;  // after f_func, f_globals, f_builtins
  o.frame_object_frame = 24;  // PyObject_HEAD, f_back, then f_frame
  o.frame_object_fast_as_locals = 46;  // after f_trace (32), f_lineno (40), f_trace_lines, f_trace_opcodes
  // PyObject_HEAD, gi_code, gi_weakreflist, gi_name, gi_qualname, gi_exc_state (16), gi_origin_or_finalizer,
  // four chars, then gi_iframe.
  o.gen_iframe = 80;
  o.code_firstlineno = 72;
  o.code_filename = 112;
  o.code_name = 120;
  o.code_qualname = 128;
  o.code_linetable = 136;
  o.code_adaptive = 184;
  o.line_table = LineTableFormat::kLocations;
  return o;
}

// 3.12 publishes no _Py_DebugOffsets. Written from the v3.12.5 headers; v3.12.0 declares the same
// members up to these, and the fields 3.12's patch releases added (_finalizing_id, threads_main, ...)
// were put at the ends of their structs, after them. The GIL moved into the interpreter
// (`interp->ceval.gil`: its own `_gil`, or the main interpreter's for a subinterpreter that shares
// it), the frame chain still hangs off `tstate->cframe`, and each eval call starts with a shim frame
// owned by the C stack instead of marking its first frame `is_entry`.
CPythonOffsets offsets_3_12() {
  CPythonOffsets o;
  o.minor = 12;
  o.source = "table";
  o.tested = false;  // no CPython 3.12 can be installed on this project's machines
  // _initialized .. initialized (5 ints), _finalizing (24), interpreters (32): mutex, head, main,
  // next_id, then main_thread.
  o.runtime_interpreters_head = 40;
  o.runtime_main_thread = 64;
  o.interp_next = 0;
  // next, id (8), id_refcount (16), requires_idref (24), id_mutex (32), _initialized, finalizing
  // (40, 44), monitoring_version (48), last_restart_version (56), threads (64): next_unique_id, head.
  o.interp_threads_head = 72;
  // threads ends at 96; runtime (96), _finalizing (104), gc (112, 240 bytes), sysdict (352),
  // builtins (360), ceval (368): eval_breaker, gil_drop_request, recursion_limit, pad, gil (+16).
  o.interp_ceval_gil = 384;
  o.gil_last_holder = 8;  // after unsigned long interval
  o.gil_locked = 16;
  o.ts_next = 8;
  o.ts_cframe = 56;            // after _status (24, 4 bytes) and six ints (28-52)
  o.cframe_current_frame = 0;  // _PyCFrame lost use_tracing in 3.12
  // c_profilefunc, c_tracefunc, c_profileobj, c_traceobj (64-88), current_exception (96),
  // exc_info (104), dict (112), gilstate_counter (120), async_exc (128), then thread_id.
  o.ts_thread_id = 136;
  o.ts_native_thread_id = 144;
  o.frame_model = FrameModel::kInterpreterFrame;
  o.frame_code = 0;  // f_code
  o.frame_previous = 8;
  o.frame_instr_ptr = 56;  // prev_instr, after f_funcobj, f_globals, f_builtins, f_locals, frame_obj
  o.frame_owner = 70;      // after int stacktop (64) and uint16_t return_offset (68)
  o.frame_locals = 40;
  o.frame_object_frame = 24;  // PyFrameObject as 3.11's
  o.frame_object_fast_as_locals = 46;
  o.gen_iframe = 72;       // as 3.11's generator, less gi_code
  // PyObject_VAR_HEAD (24), co_consts, co_names, co_exceptiontable, co_flags (48), co_argcount,
  // co_posonlyargcount, co_kwonlyargcount, co_stacksize, then co_firstlineno.
  o.code_firstlineno = 68;
  // ... co_version (92), co_localsplusnames (96), co_localspluskinds (104), then co_filename.
  o.code_filename = 112;
  o.code_name = 120;
  o.code_qualname = 128;
  o.code_linetable = 136;
  // co_weakreflist (144), _co_cached (152), _co_instrumentation_version (160), _co_monitoring (168),
  // _co_firsttraceable (176) and padding, co_extra (184), then co_code_adaptive.
  o.code_adaptive = 192;
  o.line_table = LineTableFormat::kLocations;
  o.ascii_object_size = 40;  // 3.12 dropped wstr from PyASCIIObject
  o.compact_object_size = 56;
  return o;
}

// Where the fields the reader uses sit in _Py_DebugOffsets (the first member of _PyRuntimeState),
// counted in uint64_t words after its 8-byte cookie. The struct grows between versions (3.14 adds
// interpreter and frame fields, 3.15 thread fields); each layout is written from that version's
// Include/internal/pycore_debug_offsets.h (3.13.0, 3.14.0, 3.15.0 tags) and checked against the
// values a running interpreter of each holds (tests/unit/layout_test.cpp).
struct DebugLayout {
  int is_size, is_next, is_threads_head, is_ceval_gil, is_gil_runtime_state, is_gil_locked, is_gil_holder;
  int ts_size, ts_next, ts_current_frame, ts_thread_id, ts_native_thread_id;
  int fr_size, fr_previous, fr_executable, fr_instr_ptr, fr_owner;
  int co_size, co_filename, co_name, co_qualname, co_linetable, co_firstlineno, co_code_adaptive;
};
constexpr int kDebugVersion = 0, kDebugFreeThreaded = 1, kDebugRuntimeSize = 2, kDebugInterpretersHead = 4;
constexpr DebugLayout kDebug313{5,  7,  8,  13, 14, 16, 17, 18, 20, 22, 23, 24,
                                27, 28, 29, 30, 32, 33, 34, 35, 36, 37, 38, 42};
// + interpreter_state.threads_main, .code_object_generation, .tlbc_generation;
//   interpreter_frame.stackpointer, .tlbc_index; code_object.co_tlbc
constexpr DebugLayout kDebug314{5,  7,  8,  14, 15, 17, 18, 21, 23, 25, 26, 27,
                                30, 31, 32, 33, 35, 38, 39, 40, 41, 42, 43, 47};
// + thread_state.base_frame, .last_profiled_frame, .last_profiled_frame_seq (before thread_id),
//   .holds_gil, .gil_requested, .current_exception, .exc_state, .exc_state.exc_value
constexpr DebugLayout kDebug315{5,  7,  8,  14, 15, 17, 18, 21, 23, 25, 29, 30,
                                38, 39, 40, 41, 43, 46, 47, 48, 49, 50, 51, 55};
constexpr int kDebugWords = 64;

bool within(uint64_t field, uint64_t size) { return field < size && size < (1u << 20); }

Result<CPythonOffsets> offsets_from_debug(const PythonVersion& v, pid_t pid, uintptr_t runtime) {
  const DebugLayout* layout = v.minor == 13   ? &kDebug313
                              : v.minor == 14 ? &kDebug314
                              : v.minor == 15 ? &kDebug315
                                              : nullptr;
  if (layout == nullptr) {
    return Status(Code::kUnsupported,
                  "CPython " + v.text + ": the layout of its _Py_DebugOffsets is not known");
  }
  struct {
    char cookie[8];
    uint64_t word[kDebugWords];
  } raw{};
  if (!read_memory(pid, runtime, &raw, sizeof raw)) {
    return Status(Code::kInternal, "reading _Py_DebugOffsets at _PyRuntime: unreadable memory");
  }
  if (std::memcmp(raw.cookie, "xdebugpy", 8) != 0) {
    return Status(Code::kUnsupported,
                  "CPython " + v.text + ": _PyRuntime does not start with _Py_DebugOffsets");
  }
  const uint64_t* w = raw.word;
  const DebugLayout& L = *layout;
  if ((w[kDebugVersion] >> 24) != 3 || ((w[kDebugVersion] >> 16) & 0xff) != static_cast<uint64_t>(v.minor)) {
    return Status(Code::kUnsupported, "CPython " + v.text + ": _Py_DebugOffsets names another version");
  }
  if (w[kDebugFreeThreaded] != 0) {
    return Status(Code::kUnsupported,
                  "CPython " + v.text + " is free-threaded; the GIL-free reader supports GIL builds");
  }
  const uint64_t is_size = w[L.is_size], ts_size = w[L.ts_size], fr_size = w[L.fr_size],
                 co_size = w[L.co_size];
  if (!within(w[kDebugInterpretersHead], w[kDebugRuntimeSize]) || !within(w[L.is_threads_head], is_size) ||
      !within(w[L.is_next], is_size) || !within(w[L.is_ceval_gil], is_size) ||
      !within(w[L.is_gil_locked], is_size) || !within(w[L.is_gil_holder], is_size) ||
      w[L.is_gil_locked] < w[L.is_gil_runtime_state] || w[L.is_gil_holder] < w[L.is_gil_runtime_state] ||
      !within(w[L.ts_next], ts_size) || !within(w[L.ts_current_frame], ts_size) ||
      !within(w[L.ts_thread_id], ts_size) || !within(w[L.ts_native_thread_id], ts_size) ||
      !within(w[L.fr_previous], fr_size) || !within(w[L.fr_executable], fr_size) ||
      !within(w[L.fr_instr_ptr], fr_size) || !within(w[L.fr_owner], fr_size) ||
      !within(w[L.co_filename], co_size) || !within(w[L.co_name], co_size) ||
      !within(w[L.co_qualname], co_size) || !within(w[L.co_linetable], co_size) ||
      !within(w[L.co_firstlineno], co_size) || !within(w[L.co_code_adaptive], co_size + 1)) {
    return Status(Code::kUnsupported, "CPython " + v.text + ": _Py_DebugOffsets fails its sanity checks");
  }
  CPythonOffsets o;
  o.minor = v.minor;
  o.source = "_Py_DebugOffsets";
  o.runtime_interpreters_head = w[kDebugInterpretersHead];
  o.interp_next = w[L.is_next];
  o.interp_threads_head = w[L.is_threads_head];
  o.interp_ceval_gil = w[L.is_ceval_gil];
  // Given from the start of PyInterpreterState (its own `_gil`); the reader follows `ceval.gil`,
  // which may point at another interpreter's GIL: it needs them within the GIL structure.
  o.gil_locked = w[L.is_gil_locked] - w[L.is_gil_runtime_state];
  o.gil_last_holder = w[L.is_gil_holder] - w[L.is_gil_runtime_state];
  o.ts_next = w[L.ts_next];
  o.ts_frame = w[L.ts_current_frame];
  o.ts_thread_id = w[L.ts_thread_id];
  o.ts_native_thread_id = w[L.ts_native_thread_id];
  o.frame_model = FrameModel::kInterpreterFrame;
  o.frame_code = w[L.fr_executable];
  o.frame_previous = w[L.fr_previous];
  o.frame_instr_ptr = w[L.fr_instr_ptr];
  o.frame_owner = w[L.fr_owner];
  // Not among the debug offsets before 3.14; the same 3.12's generator head in 3.13-3.15 (checked by
  // tests/e2e/test_profile_async.py against coroutines' frames on each).
  o.gen_iframe = 72;
  o.code_filename = w[L.co_filename];
  o.code_name = w[L.co_name];
  o.code_qualname = w[L.co_qualname];
  o.code_linetable = w[L.co_linetable];
  o.code_firstlineno = w[L.co_firstlineno];
  o.code_adaptive = w[L.co_code_adaptive];
  o.line_table = LineTableFormat::kLocations;
  o.ascii_object_size = 40;
  o.compact_object_size = 56;
  return o;
}

}  // namespace

Result<CPythonOffsets> cpython_offsets(const PythonVersion& v, uintptr_t runtime, pid_t pid) {
  if (v.major == 3) {
    switch (v.minor) {
      case 9:
      case 10:
        return offsets_3_9_or_3_10(v.minor);
      case 11:
        return offsets_3_11();
      case 12:
        return offsets_3_12();
      case 13:
      case 14:
      case 15:
        return offsets_from_debug(v, pid == 0 ? ::getpid() : pid, runtime);
      default:
        break;
    }
  }
  return Status(Code::kUnsupported, "reading stacks without the GIL is not supported on CPython " + v.text +
                                        " (supported: 3.9 to 3.15)");
}

}  // namespace probing::layout
