// Units of the backtrace path that need no interpreter: the line-table decoders, the offset
// tables, and the fault-safe reader on memory that is not there.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "layout/offsets.h"
#include "python/gil_free.h"
#include "layout/memory.h"
#ifdef PROBING_PY312_HEADERS
#include "cpython312_offsets.h"
#endif

namespace probing::layout {
namespace {

// co_linetable of this function under CPython 3.11.2, with the lines co_lines() gives:
//   def f(a):
//       x = a + 1
//
//       if x:
//           y = [a,
//                x]
//       return y
TEST(LineTable, Locations311MatchesCoLines) {
  const uint8_t table[] = {128, 0,   216, 8,   9,  136, 65, 137, 5,   128, 65, 224, 7,
                           8,   240, 0,   2,   5,  16,  216, 13, 14,  216, 13, 14,  240,
                           3,   1,   13,  16,  136, 1,  224, 11,  12,  128, 72};
  const int expected[][2] = {{0, 1},  {2, 2},  {4, 2},  {6, 2},  {8, 2},  {10, 2}, {12, 4},
                             {14, 4}, {16, 5}, {18, 6}, {20, 5}, {22, 5}, {24, 7}, {26, 7}};
  for (const auto& [offset, line] : expected) {
    EXPECT_EQ(line_for_offset(LineTableFormat::kLocations, table, sizeof table, 1, offset), line)
        << "offset " << offset;
  }
  EXPECT_EQ(line_for_offset(LineTableFormat::kLocations, table, sizeof table, 1, 1000), -1);
  EXPECT_EQ(line_for_offset(LineTableFormat::kLocations, table, sizeof table, 1, -2), 1);
}

TEST(LineTable, MalformedLocationsGiveMinusOne) {
  const uint8_t bad[] = {0x05, 0x00};  // no entry-start bit
  EXPECT_EQ(line_for_offset(LineTableFormat::kLocations, bad, sizeof bad, 10, 0), -1);
  const uint8_t cut[] = {0xf0, 0xc1};  // long form whose varint runs off the end
  EXPECT_EQ(line_for_offset(LineTableFormat::kLocations, cut, sizeof cut, 10, 0), -1);
}

TEST(LineTable, Lnotab39) {
  // firstlineno 10: bytes 0-5 line 10, 6-13 line 11, 14- line 13.
  const uint8_t lnotab[] = {6, 1, 8, 2};
  EXPECT_EQ(line_for_offset(LineTableFormat::kLnotab, lnotab, sizeof lnotab, 10, 0), 10);
  EXPECT_EQ(line_for_offset(LineTableFormat::kLnotab, lnotab, sizeof lnotab, 10, 6), 11);
  EXPECT_EQ(line_for_offset(LineTableFormat::kLnotab, lnotab, sizeof lnotab, 10, 13), 11);
  EXPECT_EQ(line_for_offset(LineTableFormat::kLnotab, lnotab, sizeof lnotab, 10, 20), 13);
}

TEST(LineTable, Linetable310) {
  // [0,4) line 5 (delta 0 from firstlineno 5), [4,10) line 7, [10,12) no line.
  const uint8_t table[] = {4, 0, 6, 2, 2, 0x80};
  EXPECT_EQ(line_for_offset(LineTableFormat::kLinetable, table, sizeof table, 5, 2), 5);
  EXPECT_EQ(line_for_offset(LineTableFormat::kLinetable, table, sizeof table, 5, 8), 7);
  EXPECT_EQ(line_for_offset(LineTableFormat::kLinetable, table, sizeof table, 5, 10), -1);
}

TEST(SafeMemory, ReadsMappedMemory) {
  ASSERT_TRUE(safe_memory_available().is_ok()) << safe_memory_available().message();
  uint64_t value = 0x1122334455667788, copy = 0;
  EXPECT_TRUE(safe_read_value(reinterpret_cast<uintptr_t>(&value), &copy));
  EXPECT_EQ(copy, value);
}

TEST(SafeMemory, UnmappedMemoryIsAnErrorNotACrash) {
  long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, static_cast<size_t>(page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(::munmap(p, static_cast<size_t>(page)), 0);
  uint64_t out = 0;
  EXPECT_FALSE(safe_read_value(reinterpret_cast<uintptr_t>(p), &out));
  EXPECT_EQ(safe_read_ptr(reinterpret_cast<uintptr_t>(p)), 0u);
  EXPECT_FALSE(safe_read_value(0, &out));
  EXPECT_FALSE(safe_read(UINTPTR_MAX - 3, &out, sizeof out));  // wraps around
}

TEST(CompatOffsets, UnknownVersionsAreRefused) {
  PythonVersion v{3, 16, 0, "3.16.0"};
  Result<CPythonOffsets> o = cpython_offsets(v, 0);
  ASSERT_FALSE(o.is_ok());
  EXPECT_EQ(o.status().code(), Code::kUnsupported);
  EXPECT_NE(o.status().message().find("3.16.0"), std::string::npos);
  PythonVersion v8{3, 8, 0, "3.8.0"};
  EXPECT_EQ(cpython_offsets(v8, 0).status().code(), Code::kUnsupported);
  PythonVersion v12{3, 12, 1, "3.12.1"};
  EXPECT_TRUE(cpython_offsets(v12, 0).is_ok());
  // 3.13 reads _Py_DebugOffsets: memory without the cookie is refused, not trusted.
  static const char zeros[512] = {};
  PythonVersion v13{3, 13, 0, "3.13.0"};
  EXPECT_EQ(cpython_offsets(v13, reinterpret_cast<uintptr_t>(zeros)).status().code(), Code::kUnsupported);
}

TEST(CompatOffsets, Table311) {
  PythonVersion v{3, 11, 7, "3.11.7"};
  Result<CPythonOffsets> o = cpython_offsets(v, 0);
  ASSERT_TRUE(o.is_ok());
  EXPECT_TRUE(o->tested);
  EXPECT_EQ(o->frame_model, FrameModel::kInterpreterFrame);
  EXPECT_EQ(o->line_table, LineTableFormat::kLocations);
}

// Every value as CPython 3.12's headers give it (v3.12.5; v3.12.0 declares the same members up to
// these), LP64, release build.
TEST(CompatOffsets, Table312) {
  PythonVersion v{3, 12, 4, "3.12.4"};
  Result<CPythonOffsets> r = cpython_offsets(v, 0);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const CPythonOffsets& o = *r;
  EXPECT_EQ(o.minor, 12);
  EXPECT_STREQ(o.source, "table");
  EXPECT_FALSE(o.tested);
  EXPECT_EQ(o.frame_model, FrameModel::kInterpreterFrame);
  EXPECT_EQ(o.line_table, LineTableFormat::kLocations);
  // internal/pycore_runtime.h, _PyRuntimeState; the GIL is no longer in it.
  EXPECT_EQ(o.runtime_interpreters_head, 40u);  // interpreters.head
  EXPECT_EQ(o.runtime_main_thread, 64u);        // main_thread
  EXPECT_EQ(o.runtime_gil_locked, kNoField);
  EXPECT_EQ(o.runtime_gil_last_holder, kNoField);
  // internal/pycore_interp.h, struct _is; internal/pycore_ceval_state.h, struct _ceval_state.
  EXPECT_EQ(o.interp_next, 0u);           // next
  EXPECT_EQ(o.interp_threads_head, 72u);  // threads.head
  EXPECT_EQ(o.interp_ceval_gil, 384u);    // ceval.gil
  // internal/pycore_gil.h, struct _gil_runtime_state.
  EXPECT_EQ(o.gil_last_holder, 8u);  // last_holder
  EXPECT_EQ(o.gil_locked, 16u);      // locked
  // cpython/pystate.h, struct _ts and _PyCFrame; 3.13's tstate->current_frame does not exist yet.
  EXPECT_EQ(o.ts_next, 8u);                // next
  EXPECT_EQ(o.ts_cframe, 56u);             // cframe
  EXPECT_EQ(o.cframe_current_frame, 0u);   // _PyCFrame.current_frame
  EXPECT_EQ(o.ts_thread_id, 136u);         // thread_id
  EXPECT_EQ(o.ts_native_thread_id, 144u);  // native_thread_id
  EXPECT_EQ(o.ts_frame, kNoField);
  // internal/pycore_frame.h, _PyInterpreterFrame: no is_entry (the C-stack shim marks an entry).
  EXPECT_EQ(o.frame_code, 0u);        // f_code
  EXPECT_EQ(o.frame_previous, 8u);    // previous
  EXPECT_EQ(o.frame_instr_ptr, 56u);  // prev_instr
  EXPECT_EQ(o.frame_owner, 70u);      // owner
  EXPECT_EQ(o.frame_locals, 40u);     // f_locals
  EXPECT_EQ(o.frame_is_entry, kNoField);
  // internal/pycore_frame.h, struct _frame (PyFrameObject).
  EXPECT_EQ(o.frame_object_frame, 24u);           // f_frame
  EXPECT_EQ(o.frame_object_fast_as_locals, 46u);  // f_fast_as_locals
  EXPECT_EQ(o.frame_lasti, kNoField);
  // cpython/code.h, PyCodeObject (_PyCode_DEF).
  EXPECT_EQ(o.code_firstlineno, 68u);  // co_firstlineno
  EXPECT_EQ(o.code_filename, 112u);    // co_filename
  EXPECT_EQ(o.code_name, 120u);        // co_name
  EXPECT_EQ(o.code_qualname, 128u);    // co_qualname
  EXPECT_EQ(o.code_linetable, 136u);   // co_linetable
  EXPECT_EQ(o.code_adaptive, 192u);    // co_code_adaptive
  // cpython/unicodeobject.h and cpython/bytesobject.h.
  EXPECT_EQ(o.unicode_length, 16u);       // PyASCIIObject.length
  EXPECT_EQ(o.unicode_state, 32u);        // PyASCIIObject.state
  EXPECT_EQ(o.ascii_object_size, 40u);    // sizeof(PyASCIIObject), without 3.11's wstr
  EXPECT_EQ(o.compact_object_size, 56u);  // sizeof(PyCompactUnicodeObject)
  EXPECT_EQ(o.bytes_size, 16u);           // PyVarObject.ob_size
  EXPECT_EQ(o.bytes_data, 32u);           // PyBytesObject.ob_sval

  // The order the headers declare the fields in, and what the reader assumes of them.
  EXPECT_LT(o.frame_code, o.frame_previous);
  EXPECT_LT(o.frame_previous, o.frame_instr_ptr);
  EXPECT_LT(o.frame_instr_ptr, o.frame_owner);
  EXPECT_LT(o.frame_owner, 72u);  // before localsplus, at sizeof(void*) * 9
  EXPECT_LT(o.code_firstlineno, o.code_filename);
  EXPECT_LT(o.code_filename, o.code_name);
  EXPECT_LT(o.code_name, o.code_qualname);
  EXPECT_LT(o.code_qualname, o.code_linetable);
  EXPECT_LT(o.code_linetable, o.code_adaptive);
  EXPECT_EQ(o.code_linetable - o.code_filename, 3 * sizeof(void*));  // declared one after another
  EXPECT_LT(o.ts_next, o.ts_cframe);
  EXPECT_LT(o.ts_cframe, o.ts_thread_id);
  EXPECT_LT(o.ts_thread_id, o.ts_native_thread_id);
  EXPECT_EQ(o.ts_native_thread_id, o.ts_thread_id + sizeof(unsigned long));
  EXPECT_LT(o.interp_next, o.interp_threads_head);
  EXPECT_LT(o.interp_threads_head, o.interp_ceval_gil);
  EXPECT_LT(o.runtime_interpreters_head, o.runtime_main_thread);
  // _gil_runtime_state: interval, last_holder, locked, switch_number, then its condition
  // variables and mutexes; both fields must lie before switch_number.
  const size_t gil_size =
      4 * sizeof(unsigned long) + 2 * sizeof(pthread_cond_t) + 2 * sizeof(pthread_mutex_t);
  EXPECT_LE(o.gil_last_holder + sizeof(void*), o.gil_locked);
  EXPECT_LE(o.gil_locked + sizeof(int), 3 * sizeof(unsigned long));
  EXPECT_LT(o.gil_locked, gil_size);
  for (size_t pointer :
       {o.runtime_interpreters_head, o.runtime_main_thread, o.interp_next, o.interp_threads_head,
        o.interp_ceval_gil, o.gil_last_holder, o.ts_next, o.ts_cframe, o.cframe_current_frame, o.ts_thread_id,
        o.ts_native_thread_id, o.frame_code, o.frame_previous, o.frame_instr_ptr, o.code_filename,
        o.code_name, o.code_qualname, o.code_linetable}) {
    EXPECT_EQ(pointer % sizeof(void*), 0u) << pointer;
  }
  EXPECT_EQ(o.code_firstlineno % sizeof(int), 0u);
}

#ifdef PROBING_PY312_HEADERS
// The same table against offsetof() in the CPython 3.12 headers installed on this machine.
TEST(CompatOffsets, Table312MatchesInstalledHeaders) {
  ProbingPy312HeaderOffsets h{};
  probing_py312_header_offsets(&h);
  if (!h.release_build) GTEST_SKIP() << "the installed 3.12 headers are a debug build's";
  Result<CPythonOffsets> r = cpython_offsets(PythonVersion{3, 12, 0, "3.12.0"}, 0);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const CPythonOffsets& o = *r;
  EXPECT_EQ(o.runtime_interpreters_head, h.runtime_interpreters_head);
  EXPECT_EQ(o.runtime_main_thread, h.runtime_main_thread);
  EXPECT_EQ(o.interp_next, h.interp_next);
  EXPECT_EQ(o.interp_threads_head, h.interp_threads_head);
  EXPECT_EQ(o.interp_ceval_gil, h.interp_ceval_gil);
  EXPECT_EQ(o.gil_last_holder, h.gil_last_holder);
  EXPECT_EQ(o.gil_locked, h.gil_locked);
  EXPECT_LT(o.gil_locked, h.gil_size);
  EXPECT_EQ(o.ts_next, h.ts_next);
  EXPECT_EQ(o.ts_cframe, h.ts_cframe);
  EXPECT_EQ(o.cframe_current_frame, h.cframe_current_frame);
  EXPECT_EQ(o.ts_thread_id, h.ts_thread_id);
  EXPECT_EQ(o.ts_native_thread_id, h.ts_native_thread_id);
  EXPECT_EQ(o.frame_code, h.frame_code);
  EXPECT_EQ(o.frame_previous, h.frame_previous);
  EXPECT_EQ(o.frame_instr_ptr, h.frame_instr_ptr);
  EXPECT_EQ(o.frame_owner, h.frame_owner);
  EXPECT_EQ(o.frame_locals, h.frame_locals);
  EXPECT_EQ(o.frame_object_frame, h.frame_object_frame);
  EXPECT_EQ(o.frame_object_fast_as_locals, h.frame_object_fast_as_locals);
  EXPECT_EQ(o.code_firstlineno, h.code_firstlineno);
  EXPECT_EQ(o.code_filename, h.code_filename);
  EXPECT_EQ(o.code_name, h.code_name);
  EXPECT_EQ(o.code_qualname, h.code_qualname);
  EXPECT_EQ(o.code_linetable, h.code_linetable);
  EXPECT_EQ(o.code_adaptive, h.code_adaptive);
  EXPECT_EQ(o.unicode_length, h.unicode_length);
  EXPECT_EQ(o.unicode_state, h.unicode_state);
  EXPECT_EQ(o.ascii_object_size, h.ascii_object_size);
  EXPECT_EQ(o.compact_object_size, h.compact_object_size);
  EXPECT_EQ(o.bytes_size, h.bytes_size);
  EXPECT_EQ(o.bytes_data, h.bytes_data);
}
#endif

}  // namespace
}  // namespace probing::layout
