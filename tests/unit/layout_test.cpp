// Units of the backtrace path that need no interpreter: the line-table decoders, and the
// fault-safe reader on memory that is not there.
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "layout/offsets.h"
#include "python/gil_free.h"
#include "layout/memory.h"

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
  PythonVersion v{3, 12, 1, "3.12.1"};
  Result<CPythonOffsets> o = cpython_offsets(v, 0);
  ASSERT_FALSE(o.is_ok());
  EXPECT_EQ(o.status().code(), Code::kUnsupported);
  EXPECT_NE(o.status().message().find("3.12.1"), std::string::npos);
  PythonVersion v8{3, 8, 0, "3.8.0"};
  EXPECT_FALSE(cpython_offsets(v8, 0).is_ok());
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

}  // namespace
}  // namespace probing::layout
