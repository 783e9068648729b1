// Reads every thread's Python stack WITHOUT the GIL and without calling CPython, from this
// process (for when the GIL cannot be had in time: a thread holds it in a long C call) or from
// another one (the CLI's native backtrace, through process_vm_readv). It follows the
// interpreter's own structs through the offsets of offsets.h; every read goes through
// read_memory (never a raw dereference), every chain is bounded, every object's type is checked
// against the real type object (its address found by the caller) before it is used. The threads
// keep running while this reads, so a stack may be torn: a frame that fails a check ends that
// thread's stack with a note rather than being guessed at. Thread-safe; needs no GIL.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"
#include "layout/offsets.h"
#include "layout/version.h"

namespace probing::layout {

struct RawFrame {
  std::string func;  // co_qualname on 3.11+, co_name before
  std::string file;
  int lineno = 0;      // -1 when the instruction has no line
  bool entry = false;  // the first frame its C-level _PyEval_EvalFrameDefault call ran
  // 3.12+, on an entry frame: where that call's shim frame is. The shim is a local of the
  // _PyEval_EvalFrameDefault call, so its address lies in that call's native stack frame: it
  // places the call among native frames that have no symbol. 0 when unknown.
  uintptr_t shim = 0;
};

struct RawThread {
  unsigned long thread_id = 0;  // threading.get_ident()
  long native_thread_id = 0;    // the kernel tid; 0 when unknown (3.9-3.10)
  bool holds_gil = false;
  std::vector<RawFrame> frames;  // innermost first
  bool truncated = false;        // capped at max_frames
  std::string error;             // why the walk stopped early, if it did
};

struct GilFreeSnapshot {
  std::vector<RawThread> threads;
  bool gil_locked = false;
  unsigned long holder_thread_id = 0;  // 0 when no thread holds the GIL (or it is unknown)
  long holder_native_thread_id = 0;
  std::string offsets_source;  // "table" or "_Py_DebugOffsets"
};

struct GilFreeLimits {
  int max_frames = 4096;
  int max_threads = 512;
  int max_interpreters = 16;
  long native_thread_id = 0;  // when not 0, only the thread with this kernel tid (3.11+)
  bool generators = false;    // sample(): note the generator or coroutine of each frame run by one
};

// A Python process as the reader needs it: whose memory, which version, and the addresses of
// _PyRuntime and the type objects there.
struct PythonProcess {
  pid_t pid = 0;  // 0: this process (even once forked)
  PythonVersion version;
  uintptr_t runtime = 0;
  uintptr_t unicode_type = 0;
  uintptr_t code_type = 0;
  uintptr_t bytes_type = 0;
  uintptr_t frame_type = 0;    // 3.9-3.10; 0 skips the frame type check
  bool free_threaded = false;  // exports version.h's kFreeThreadedSymbol: refused
};

// Which thread holds the GIL.
struct GilState {
  bool locked = false;
  unsigned long thread_id = 0;  // 0 when no thread holds it, or it cannot be told
  long native_thread_id = 0;
};

// What a sampler keeps from one sample to the next: each code object's name, file and line table,
// read once. An entry is checked against its code object's name, file and line-table pointers on
// every use, since a freed code object's address is soon another's. Bounded: when full it starts
// again empty (generation() says so). Not thread-safe: one per sampling thread.
class CodeCache {
 public:
  struct Code {
    uintptr_t address = 0;
    uintptr_t name = 0, file = 0, table = 0;  // the pointers the entry was read through
    int firstlineno = 0;
    std::string func;       // co_qualname on 3.11+, co_name before
    std::string file_name;  // co_filename
    std::vector<uint8_t> linetable;
    std::unordered_map<int, int> lines;  // byte offset -> line, bounded
  };

  explicit CodeCache(size_t max_codes = 1 << 15, size_t max_bytes = 16u << 20)
      : max_codes_(max_codes), max_bytes_(max_bytes) {}
  const Code& code(uint32_t id) const { return codes_[id]; }
  size_t size() const { return codes_.size(); }
  // Bumped each time the cache empties itself: ids handed out before it mean nothing now.
  uint64_t generation() const { return generation_; }

 private:
  friend struct CodeCacheAccess;  // interpreter_reader.cpp
  size_t max_codes_;
  size_t max_bytes_;
  size_t bytes_ = 0;
  uint64_t generation_ = 0;
  std::vector<Code> codes_;
  std::unordered_map<uintptr_t, uint32_t> by_address_;
};

// One frame of a sample: a CodeCache id and the line (-1 when the instruction has no line).
struct SampledFrame {
  uint32_t code = 0;
  int lineno = 0;
};

// A frame of a sample that a generator or coroutine runs (a coroutine a task awaits, say): the
// object's address, which names it as id() does, and the frame's index in the stack.
struct SampledGenerator {
  uintptr_t object = 0;
  uint32_t depth = 0;
};
constexpr size_t kMaxSampledGenerators = 32;  // per stack, innermost first

struct SampledThread {
  unsigned long thread_id = 0;
  long native_thread_id = 0;  // 0 when unknown (3.9-3.10)
  bool holds_gil = false;
  std::vector<SampledFrame> frames;          // innermost first
  bool truncated = false;                    // capped at max_frames, or a frame failed its checks
  std::vector<SampledGenerator> generators;  // with GilFreeLimits::generators, innermost first
};

struct StackSample {
  bool gil_locked = false;
  std::vector<SampledThread> threads;
};

// The interpreter of one process, its layout resolved once. Thread-safe; cheap to copy.
class InterpreterReader {
 public:
  // kUnsupported for a version without offsets (or a free-threaded build); kInvalidArgument
  // without _PyRuntime and the str, code and bytes types; kUnavailable when the memory cannot be
  // read (process_vm_readv forbidden).
  static Result<InterpreterReader> open(const PythonProcess& target);

  // Every thread's stack. A thread that is ptrace-stopped reads consistently; others may be torn.
  Result<GilFreeSnapshot> stacks(const GilFreeLimits& limits) const;
  // The same walk for a sampler: frames as CodeCache ids and lines, each code object's strings read
  // only when the cache does not have them. `out` is overwritten; its vectors keep their capacity.
  Status sample(const GilFreeLimits& limits, CodeCache* cache, StackSample* out) const;
  // Which thread holds the GIL now. A few reads.
  GilState gil() const;
  // The main thread's threading ident; 0 when it cannot be told.
  unsigned long main_thread_ident() const;
  const CPythonOffsets& offsets() const;

  struct Process;  // interpreter_reader.cpp

 private:
  explicit InterpreterReader(std::shared_ptr<const Process> p) : p_(std::move(p)) {}
  std::shared_ptr<const Process> p_;
};

// The line of the instruction at `byte_offset` in a code object whose line table (in `format`)
// is `table`. -1 when the instruction has no line or the table is malformed. Exposed for tests.
int line_for_offset(LineTableFormat format, const uint8_t* table, size_t size, int firstlineno,
                    int byte_offset);

}  // namespace probing::layout
