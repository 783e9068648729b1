#include "python/compat_offsets.h"

#include <unistd.h>

#include <cstring>

#include "python/safe_memory.h"

namespace probing::python {
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
  o.lasti_in_code_units = minor == 10;
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
  o.code_firstlineno = 72;
  o.code_filename = 112;
  o.code_name = 120;
  o.code_qualname = 128;
  o.code_linetable = 136;
  o.code_adaptive = 184;
  o.line_table = LineTableFormat::kLocations;
  return o;
}

// The leading part of 3.13's _Py_DebugOffsets (Include/internal/pycore_runtime.h, v3.13.0),
// which is the first member of _PyRuntimeState.
struct DebugOffsets313 {
  char cookie[8];
  uint64_t version;
  uint64_t free_threaded;
  struct {
    uint64_t size, finalizing, interpreters_head;
  } runtime_state;
  struct {
    uint64_t size, id, next, threads_head, gc, imports_modules, sysdict, builtins, ceval_gil,
        gil_runtime_state, gil_runtime_state_enabled, gil_runtime_state_locked, gil_runtime_state_holder;
  } interpreter_state;
  struct {
    uint64_t size, prev, next, interp, current_frame, thread_id, native_thread_id, datastack_chunk, status;
  } thread_state;
  struct {
    uint64_t size, previous, executable, instr_ptr, localsplus, owner;
  } interpreter_frame;
  struct {
    uint64_t size, filename, name, qualname, linetable, firstlineno, argcount, localsplusnames,
        localspluskinds, co_code_adaptive;
  } code_object;
};

bool within(uint64_t field, uint64_t size) { return field < size && size < (1u << 20); }

Result<CPythonOffsets> offsets_from_debug(const PythonVersion& v, pid_t pid, uintptr_t runtime) {
  DebugOffsets313 d{};
  if (!read_memory(pid, runtime, &d, sizeof d)) {
    return Status(Code::kInternal, "reading _Py_DebugOffsets at _PyRuntime: unreadable memory");
  }
  if (std::memcmp(d.cookie, "xdebugpy", 8) != 0) {
    return Status(Code::kUnsupported,
                  "CPython " + v.text + ": _PyRuntime does not start with _Py_DebugOffsets");
  }
  if ((d.version >> 24) != 3 || ((d.version >> 16) & 0xff) != static_cast<uint64_t>(v.minor)) {
    return Status(Code::kUnsupported, "CPython " + v.text + ": _Py_DebugOffsets names another version");
  }
  if (d.free_threaded != 0) {
    return Status(Code::kUnsupported,
                  "CPython " + v.text + " is free-threaded; the GIL-free reader supports GIL builds");
  }
  const auto& is = d.interpreter_state;
  const auto& ts = d.thread_state;
  const auto& fr = d.interpreter_frame;
  const auto& co = d.code_object;
  if (!within(d.runtime_state.interpreters_head, d.runtime_state.size) || !within(is.threads_head, is.size) ||
      !within(is.next, is.size) || !within(is.ceval_gil, is.size) || !within(ts.next, ts.size) ||
      !within(ts.current_frame, ts.size) || !within(ts.thread_id, ts.size) ||
      !within(ts.native_thread_id, ts.size) || !within(fr.previous, fr.size) ||
      !within(fr.executable, fr.size) || !within(fr.instr_ptr, fr.size) || !within(fr.owner, fr.size) ||
      !within(co.filename, co.size) || !within(co.name, co.size) || !within(co.qualname, co.size) ||
      !within(co.linetable, co.size) || !within(co.firstlineno, co.size) || co.co_code_adaptive == 0 ||
      co.co_code_adaptive > (1u << 20)) {
    return Status(Code::kUnsupported, "CPython " + v.text + ": _Py_DebugOffsets fails its sanity checks");
  }
  CPythonOffsets o;
  o.minor = v.minor;
  o.source = "_Py_DebugOffsets";
  o.runtime_interpreters_head = d.runtime_state.interpreters_head;
  o.interp_next = is.next;
  o.interp_threads_head = is.threads_head;
  o.interp_ceval_gil = is.ceval_gil;
  o.gil_locked = is.gil_runtime_state_locked;
  o.gil_last_holder = is.gil_runtime_state_holder;
  o.ts_next = ts.next;
  o.ts_frame = ts.current_frame;
  o.ts_thread_id = ts.thread_id;
  o.ts_native_thread_id = ts.native_thread_id;
  o.frame_model = FrameModel::kInterpreterFrame;
  o.frame_code = fr.executable;
  o.frame_previous = fr.previous;
  o.frame_instr_ptr = fr.instr_ptr;
  o.frame_owner = fr.owner;
  o.code_filename = co.filename;
  o.code_name = co.name;
  o.code_qualname = co.qualname;
  o.code_linetable = co.linetable;
  o.code_firstlineno = co.firstlineno;
  o.code_adaptive = co.co_code_adaptive;
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
      case 13:
        return offsets_from_debug(v, pid == 0 ? ::getpid() : pid, runtime);
      default:
        break;
    }
  }
  // 3.12 moved the GIL and most of _PyRuntimeState; its table is not written yet.
  return Status(Code::kUnsupported, "reading stacks without the GIL is not supported on CPython " + v.text +
                                        " (supported: 3.9, 3.10, 3.11, 3.13)");
}

}  // namespace probing::python
