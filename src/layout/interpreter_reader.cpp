#include "layout/interpreter_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>

#include "core/proc_files.h"
#include "layout/memory.h"

namespace probing::layout {

// What the reader needs from the process, found once.
struct InterpreterReader::Process {
  pid_t pid = 0;  // whose memory: 0 for this process (even once forked), else one read from outside
  CPythonOffsets off;
  uintptr_t runtime = 0;
  uintptr_t unicode_type = 0;
  uintptr_t code_type = 0;
  uintptr_t bytes_type = 0;
  uintptr_t frame_type = 0;  // 3.9-3.10
  size_t frame_span = 0;     // the bytes of a frame that hold the fields the walk reads
  size_t code_span = 0;      // the same for a code object

  bool read(uintptr_t addr, void* out, size_t n) const noexcept {
    return read_memory(pid != 0 ? pid : self_pid(), addr, out, n);
  }
  template <typename T>
  bool value(uintptr_t addr, T* out) const noexcept {
    return read(addr, out, sizeof(T));
  }
  uintptr_t ptr(uintptr_t addr) const noexcept {
    uintptr_t v = 0;
    return value(addr, &v) ? v : 0;
  }
};

namespace {

using Process = InterpreterReader::Process;

constexpr size_t kMaxStringChars = 1024;
constexpr size_t kMaxLineTableBytes = 1 << 16;
// _PyInterpreterFrame.owner of the frames an eval call starts with, which run no code of their
// own: FRAME_OWNED_BY_CSTACK (3) on 3.12-3.13; FRAME_OWNED_BY_INTERPRETER (3) and _CSTACK (4) on
// 3.14; _INTERPRETER (3) on 3.15. 3.11 has no such owners (it marks entry frames with is_entry).
constexpr int kFirstShimOwner = 3;
// _PyInterpreterFrame.owner of a frame that lives inside a generator or coroutine object, 3.11+.
constexpr char kOwnedByGenerator = 1;
// _PyStackRef (3.14+ f_executable) keeps tag bits in the low bits of the pointer; objects are
// 8-byte aligned at least, so masking them off is right for plain pointers too.
constexpr uintptr_t kStackRefTagBits = 7;

uintptr_t at(uintptr_t base, size_t field) { return field == kNoField ? 0 : base + field; }

bool has_type(const Process& p, uintptr_t obj, uintptr_t type) { return obj != 0 && p.ptr(obj + 8) == type; }

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

// The text of a compact str object, capped at kMaxStringChars characters.
bool read_str(const Process& p, uintptr_t obj, std::string* out) {
  if (!has_type(p, obj, p.unicode_type)) return false;
  int64_t length = 0;
  uint32_t state = 0;
  if (!p.value(obj + p.off.unicode_length, &length) || !p.value(obj + p.off.unicode_state, &state)) {
    return false;
  }
  unsigned kind = (state >> 2) & 7;
  bool compact = (state >> 5) & 1;
  bool ascii = (state >> 6) & 1;
  if (length < 0 || !compact || (kind != 1 && kind != 2 && kind != 4)) return false;
  size_t n = std::min(static_cast<size_t>(length), kMaxStringChars);
  uintptr_t data = obj + (ascii ? p.off.ascii_object_size : p.off.compact_object_size);
  std::string bytes(n * kind, '\0');
  if (!p.read(data, bytes.data(), bytes.size())) return false;
  out->clear();
  for (size_t i = 0; i < n; ++i) {
    uint32_t c = 0;
    if (kind == 1) c = static_cast<uint8_t>(bytes[i]);
    if (kind == 2) {
      c = static_cast<uint8_t>(bytes[2 * i]) | static_cast<uint32_t>(static_cast<uint8_t>(bytes[2 * i + 1]))
                                                   << 8;
    }
    if (kind == 4) std::memcpy(&c, &bytes[4 * i], 4);
    append_utf8(*out, c);
  }
  if (static_cast<size_t>(length) > n) *out += "...";
  return true;
}

bool read_bytes_object(const Process& p, uintptr_t obj, std::vector<uint8_t>* out) {
  if (!has_type(p, obj, p.bytes_type)) return false;
  int64_t size = 0;
  if (!p.value(obj + p.off.bytes_size, &size) || size < 0 || static_cast<size_t>(size) > kMaxLineTableBytes) {
    return false;
  }
  out->resize(static_cast<size_t>(size));
  return p.read(obj + p.off.bytes_data, out->data(), out->size());
}

// One frame's code and line. False when the frame does not check out.
bool read_frame(const Process& p, uintptr_t code, int byte_offset, RawFrame* f) {
  const CPythonOffsets& o = p.off;
  if (!has_type(p, code, p.code_type)) return false;
  uintptr_t name = p.ptr(code + (o.code_qualname != kNoField ? o.code_qualname : o.code_name));
  uintptr_t file = p.ptr(code + o.code_filename);
  if (!read_str(p, name, &f->func) || !read_str(p, file, &f->file)) return false;
  int first = 0;
  if (!p.value(code + o.code_firstlineno, &first)) return false;
  std::vector<uint8_t> table;
  f->lineno = first;
  if (read_bytes_object(p, p.ptr(code + o.code_linetable), &table)) {
    int line = line_for_offset(o.line_table, table.data(), table.size(), first, byte_offset);
    if (line > 0) f->lineno = line;
  }
  return true;
}

// A struct's first bytes, copied in one read: the walk takes each frame's and each code object's
// fields from one copy rather than one read per field.
constexpr size_t kMaxBlock = 512;

struct Block {
  alignas(8) uint8_t bytes[kMaxBlock];
  template <typename T>
  T get(size_t field) const {
    T v{};
    if (field != kNoField) std::memcpy(&v, bytes + field, sizeof v);
    return v;
  }
};

// How many bytes of a struct hold the fields at `fields` (and the object header's type pointer);
// 0 when that is more than a Block holds.
size_t span_of(std::initializer_list<size_t> fields) {
  size_t span = 16;
  for (size_t f : fields) {
    if (f != kNoField) span = std::max(span, f + 8);
  }
  return span <= kMaxBlock ? span : 0;
}

// Walks one thread's frames, innermost first, handing each frame's code object and instruction to
// `sink` (RawSink, SampleSink below).
template <typename Sink>
void walk_frames(const Process& p, uintptr_t tstate, const GilFreeLimits& limits, Sink& sink) {
  const CPythonOffsets& o = p.off;
  uintptr_t frame = 0;
  if (o.ts_cframe != kNoField) {
    uintptr_t cframe = p.ptr(tstate + o.ts_cframe);
    frame = cframe != 0 ? p.ptr(cframe + o.cframe_current_frame) : 0;
  } else {
    frame = p.ptr(tstate + o.ts_frame);
  }
  Block b;
  for (int steps = 0; frame != 0; ++steps) {
    if (static_cast<int>(sink.size()) >= limits.max_frames || steps >= 4 * limits.max_frames) {
      sink.truncate();
      return;
    }
    if (!p.read(frame, b.bytes, p.frame_span)) {
      sink.fail("a frame became unreadable while it was read");
      return;
    }
    uintptr_t code = 0;
    int byte_offset = 0;
    bool entry = false;
    uintptr_t generator = 0;  // the generator or coroutine object the frame belongs to
    if (o.frame_model == FrameModel::kFrameObject) {
      if (p.frame_type != 0 && b.get<uintptr_t>(8) != p.frame_type) {
        sink.fail("a frame at 0x" + std::to_string(frame) + " is not a frame object");
        return;
      }
      code = b.get<uintptr_t>(o.frame_code);
      int lasti = b.get<int>(o.frame_lasti);
      byte_offset = o.lasti_in_code_units ? lasti * 2 : lasti;
      entry = true;  // 3.9-3.10: one C-level eval call per frame
      generator = b.get<uintptr_t>(o.frame_gen);
    } else {
      if (o.frame_owner != kNoField && b.get<char>(o.frame_owner) >= kFirstShimOwner) {
        // 3.12+: the shim an eval call starts with. The first shim after a frame is its eval
        // call's; 3.15 ends a thread's chain with one more (the thread state's base frame).
        sink.shim(frame);
        frame = b.get<uintptr_t>(o.frame_previous);
        continue;
      }
      code = b.get<uintptr_t>(o.frame_code) & ~kStackRefTagBits;
      uintptr_t instr = b.get<uintptr_t>(o.frame_instr_ptr);
      uintptr_t first_unit = code + o.code_adaptive;
      byte_offset =
          instr >= first_unit && instr - first_unit < (1u << 26) ? static_cast<int>(instr - first_unit) : -1;
      entry = b.get<uint8_t>(o.frame_is_entry) != 0;
      if (o.gen_iframe != kNoField && b.get<char>(o.frame_owner) == kOwnedByGenerator)
        generator = frame - o.gen_iframe;
    }
    if (!sink.frame(code, byte_offset, entry, generator)) {
      sink.fail("the stack changed while it was read; frames beyond this point are not shown");
      return;
    }
    frame = b.get<uintptr_t>(o.frame_previous);
  }
}

// Frames with their names read each time: stacks().
struct RawSink {
  const Process& p;
  RawThread* t;
  size_t size() const { return t->frames.size(); }
  void truncate() { t->truncated = true; }
  void fail(std::string why) { t->error = std::move(why); }
  void shim(uintptr_t frame) {
    if (!t->frames.empty() && !t->frames.back().entry) {
      t->frames.back().entry = true;
      t->frames.back().shim = frame;
    }
  }
  bool frame(uintptr_t code, int byte_offset, bool entry, uintptr_t) {
    RawFrame f;
    if (!read_frame(p, code, byte_offset, &f)) return false;
    f.entry = entry;
    t->frames.push_back(std::move(f));
    return true;
  }
};

struct GilWord {
  bool locked = false;
  uintptr_t holder = 0;  // PyThreadState*
};

GilWord read_gil(const Process& p, uintptr_t interp) {
  const CPythonOffsets& o = p.off;
  GilWord g;
  int locked = 0;
  if (o.runtime_gil_locked != kNoField) {
    if (p.value(p.runtime + o.runtime_gil_locked, &locked)) g.locked = locked != 0;
    g.holder = p.ptr(p.runtime + o.runtime_gil_last_holder);
  } else if (o.interp_ceval_gil != kNoField && interp != 0) {
    uintptr_t gil = p.ptr(interp + o.interp_ceval_gil);
    if (gil != 0 && p.value(gil + o.gil_locked, &locked)) g.locked = locked != 0;
    if (gil != 0) g.holder = p.ptr(gil + o.gil_last_holder);
  }
  if (!g.locked) g.holder = 0;
  return g;
}

}  // namespace

int line_for_offset(LineTableFormat format, const uint8_t* t, size_t n, int firstlineno, int byte_offset) {
  if (t == nullptr) return -1;
  if (byte_offset < 0) return firstlineno;  // not started yet
  int line = firstlineno;
  if (format == LineTableFormat::kLnotab) {
    int addr = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
      addr += t[i];
      if (addr > byte_offset) break;
      line += static_cast<int8_t>(t[i + 1]);
    }
    return line;
  }
  if (format == LineTableFormat::kLinetable) {
    int start = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
      int end = start + t[i];
      int8_t delta = static_cast<int8_t>(t[i + 1]);
      if (delta != -128) line += delta;
      if (byte_offset >= start && byte_offset < end) return delta == -128 ? -1 : line;
      start = end;
    }
    return -1;
  }
  // 3.11+ location table: entries of a header byte (1, code:4, length-1:3) and payload.
  size_t pos = 0;
  auto varint = [&](bool* ok) -> unsigned {
    unsigned value = 0;
    int shift = 0;
    for (;;) {
      if (pos >= n || shift > 28) {
        *ok = false;
        return 0;
      }
      uint8_t b = t[pos++];
      value |= static_cast<unsigned>(b & 63) << shift;
      shift += 6;
      if ((b & 64) == 0) return value;
    }
  };
  auto svarint = [&](bool* ok) -> int {
    unsigned v = varint(ok);
    return (v & 1) ? -static_cast<int>(v >> 1) : static_cast<int>(v >> 1);
  };
  int end = 0;
  while (pos < n) {
    uint8_t head = t[pos++];
    if ((head & 0x80) == 0) return -1;
    int code = (head >> 3) & 15;
    int units = (head & 7) + 1;
    bool ok = true;
    int delta = 0;
    bool none = false;
    if (code == 15) {
      none = true;
    } else if (code == 14) {
      delta = svarint(&ok);
      varint(&ok);
      varint(&ok);
      varint(&ok);
    } else if (code == 13) {
      delta = svarint(&ok);
    } else if (code >= 10) {
      delta = code - 10;
      pos += 2;
    } else {
      pos += 1;
    }
    if (!ok || pos > n) return -1;
    line += delta;
    end += units * 2;
    if (byte_offset < end) return none ? -1 : line;
  }
  return -1;
}

namespace {

// Calls visit(tstate, thread_id, native_thread_id, holds_gil) for each thread of each interpreter,
// within the limits. kUnavailable when no interpreter runs.
template <typename Visit>
Status for_each_thread(const Process& p, const GilFreeLimits& limits, GilWord* gil, Visit visit) {
  const CPythonOffsets& o = p.off;
  uintptr_t interp = p.ptr(p.runtime + o.runtime_interpreters_head);
  if (interp == 0)
    return Status(Code::kUnavailable, "no interpreter is running (reading _PyRuntime.interpreters.head)");
  *gil = read_gil(p, interp);
  int threads = 0;
  for (int i = 0; interp != 0 && i < limits.max_interpreters; ++i) {
    uintptr_t ts = p.ptr(interp + o.interp_threads_head);
    for (; ts != 0 && threads < limits.max_threads; ++threads) {
      unsigned long thread_id = 0;
      long native = 0;
      if (!p.value(ts + o.ts_thread_id, &thread_id)) break;
      if (o.ts_native_thread_id != kNoField) p.value(ts + o.ts_native_thread_id, &native);
      visit(ts, thread_id, native, gil->locked && ts == gil->holder);
      ts = p.ptr(at(ts, o.ts_next));
    }
    interp = p.ptr(at(interp, o.interp_next));
  }
  return {};
}

Result<GilFreeSnapshot> read_stacks(const Process& p, const GilFreeLimits& limits) {
  GilFreeSnapshot snap;
  snap.offsets_source = p.off.source;
  GilWord gil;
  Status st = for_each_thread(p, limits, &gil, [&](uintptr_t ts, unsigned long id, long native, bool holds) {
    if (holds) {
      snap.holder_thread_id = id;
      snap.holder_native_thread_id = native;
    }
    if (limits.native_thread_id != 0 && native != limits.native_thread_id) return;
    RawThread t;
    t.thread_id = id;
    t.native_thread_id = native;
    t.holds_gil = holds;
    RawSink sink{p, &t};
    walk_frames(p, ts, limits, sink);
    snap.threads.push_back(std::move(t));
  });
  if (!st.is_ok()) return st;
  snap.gil_locked = gil.locked;
  return snap;
}

}  // namespace

// The sampler's side of CodeCache: entries found or read.
struct CodeCacheAccess {
  static constexpr size_t kMaxLinesPerCode = 4096;

  static void start_sample(CodeCache* c) {
    if (c->codes_.size() < c->max_codes_ && c->bytes_ < c->max_bytes_) return;
    c->codes_.clear();
    c->by_address_.clear();
    c->bytes_ = 0;
    ++c->generation_;
  }

  // The id of the code object at `code`, read when the cache lacks it or holds another object
  // that had the same address. False when it does not check out (the stack changed).
  static bool resolve(const Process& p, uintptr_t code, const Block& b, CodeCache* c, uint32_t* id) {
    const CPythonOffsets& o = p.off;
    if (code == 0 || b.get<uintptr_t>(8) != p.code_type) return false;
    const uintptr_t name = b.get<uintptr_t>(o.code_qualname != kNoField ? o.code_qualname : o.code_name);
    const uintptr_t file = b.get<uintptr_t>(o.code_filename);
    const uintptr_t table = b.get<uintptr_t>(o.code_linetable);
    const int first = b.get<int>(o.code_firstlineno);
    if (auto it = c->by_address_.find(code); it != c->by_address_.end()) {
      const CodeCache::Code& e = c->codes_[it->second];
      if (e.name == name && e.file == file && e.table == table && e.firstlineno == first) {
        *id = it->second;
        return true;
      }
    }
    CodeCache::Code e;
    e.address = code;
    e.name = name;
    e.file = file;
    e.table = table;
    e.firstlineno = first;
    if (!read_str(p, name, &e.func) || !read_str(p, file, &e.file_name)) return false;
    if (!read_bytes_object(p, table, &e.linetable)) e.linetable.clear();  // lines fall back to the first
    c->bytes_ += sizeof e + e.func.size() + e.file_name.size() + e.linetable.size();
    *id = static_cast<uint32_t>(c->codes_.size());
    c->codes_.push_back(std::move(e));
    c->by_address_[code] = *id;
    return true;
  }

  static int line(const Process& p, CodeCache* c, uint32_t id, int byte_offset) {
    CodeCache::Code& e = c->codes_[id];
    if (auto it = e.lines.find(byte_offset); it != e.lines.end()) return it->second;
    int line = e.firstlineno;
    if (!e.linetable.empty()) {
      int found = line_for_offset(p.off.line_table, e.linetable.data(), e.linetable.size(), e.firstlineno,
                                  byte_offset);
      if (found > 0) line = found;
    }
    if (e.lines.size() < kMaxLinesPerCode) {
      e.lines.emplace(byte_offset, line);
      c->bytes_ += 32;
    }
    return line;
  }
};

namespace {

// Frames as CodeCache ids: sample(). The walk only collects each frame's code object and
// instruction; resolve() then reads every code object's header in one process_vm_readv.
struct SampleSink {
  struct Pending {
    uintptr_t code;
    int byte_offset;
    uintptr_t generator;
  };
  std::vector<Pending>* pending;
  bool* truncated;
  size_t size() const { return pending->size(); }
  void truncate() { *truncated = true; }
  void fail(const std::string&) { *truncated = true; }
  void shim(uintptr_t) {}
  bool frame(uintptr_t code, int byte_offset, bool, uintptr_t generator) {
    pending->push_back({code, byte_offset, generator});
    return true;
  }

  // The pending frames as CodeCache ids, up to the first whose code object does not check out
  // (the stack changed under the walk).
  static void resolve(const Process& p, const std::vector<Pending>& pending, CodeCache* cache,
                      std::vector<Block>* blocks, bool generators, SampledThread* t) {
    blocks->resize(pending.size());
    std::vector<uintptr_t> addresses;
    addresses.reserve(pending.size());
    for (const Pending& f : pending) addresses.push_back(f.code);
    const size_t read = read_blocks(p.pid != 0 ? p.pid : self_pid(), addresses.data(), addresses.size(),
                                    p.code_span, sizeof(Block), reinterpret_cast<uint8_t*>(blocks->data()));
    for (size_t i = 0; i < pending.size(); ++i) {
      uint32_t id = 0;
      if (i >= read || !CodeCacheAccess::resolve(p, pending[i].code, (*blocks)[i], cache, &id)) {
        t->truncated = true;
        return;
      }
      if (generators && pending[i].generator != 0 && t->generators.size() < kMaxSampledGenerators) {
        t->generators.push_back({pending[i].generator, static_cast<uint32_t>(t->frames.size())});
      }
      t->frames.push_back({id, CodeCacheAccess::line(p, cache, id, pending[i].byte_offset)});
    }
  }
};

}  // namespace

Result<InterpreterReader> InterpreterReader::open(const PythonProcess& target) {
  PROBING_RETURN_IF_ERROR(check_supported(target.version));
  PROBING_RETURN_IF_ERROR(check_not_free_threaded(target.version, target.free_threaded));
  if (target.pid == 0) PROBING_RETURN_IF_ERROR(safe_memory_available());
  auto p = std::make_shared<Process>();
  p->pid = target.pid;
  p->runtime = target.runtime;
  p->unicode_type = target.unicode_type;
  p->code_type = target.code_type;
  p->bytes_type = target.bytes_type;
  p->frame_type = target.frame_type;
  if (p->runtime == 0 || p->unicode_type == 0 || p->code_type == 0 || p->bytes_type == 0) {
    return Status(Code::kInvalidArgument,
                  "reading an interpreter needs _PyRuntime and the str, code and bytes types");
  }
  Result<CPythonOffsets> off = cpython_offsets(target.version, p->runtime, p->pid);
  if (!off.is_ok()) return off.status();
  p->off = *off;
  const CPythonOffsets& o = p->off;
  p->frame_span = span_of({o.frame_code, o.frame_previous, o.frame_instr_ptr, o.frame_lasti, o.frame_owner,
                           o.frame_is_entry, o.frame_gen});
  p->code_span =
      span_of({o.code_filename, o.code_name, o.code_qualname, o.code_linetable, o.code_firstlineno});
  if (p->frame_span == 0 || p->code_span == 0) {
    return Status(Code::kUnsupported,
                  "this interpreter's frame or code fields lie past what the reader copies");
  }
  return InterpreterReader(std::move(p));
}

Result<GilFreeSnapshot> InterpreterReader::stacks(const GilFreeLimits& limits) const {
  return read_stacks(*p_, limits);
}

Status InterpreterReader::sample(const GilFreeLimits& limits, CodeCache* cache, StackSample* out) const {
  const Process& p = *p_;
  CodeCacheAccess::start_sample(cache);
  thread_local std::vector<SampleSink::Pending> pending;  // scratch, kept between samples
  thread_local std::vector<Block> blocks;
  size_t used = 0;
  GilWord gil;
  Status st = for_each_thread(p, limits, &gil, [&](uintptr_t ts, unsigned long id, long native, bool holds) {
    if (limits.native_thread_id != 0 && native != limits.native_thread_id) return;
    if (used == out->threads.size()) out->threads.emplace_back();
    SampledThread& t = out->threads[used++];
    t.thread_id = id;
    t.native_thread_id = native;
    t.holds_gil = holds;
    t.truncated = false;
    t.frames.clear();
    t.generators.clear();
    pending.clear();
    SampleSink sink{&pending, &t.truncated};
    walk_frames(p, ts, limits, sink);
    SampleSink::resolve(p, pending, cache, &blocks, limits.generators, &t);
  });
  out->threads.resize(used);
  out->gil_locked = gil.locked;
  return st;
}

const CPythonOffsets& InterpreterReader::offsets() const { return p_->off; }

GilState InterpreterReader::gil() const {
  const Process& p = *p_;
  const CPythonOffsets& o = p.off;
  GilWord word = read_gil(p, p.ptr(p.runtime + o.runtime_interpreters_head));
  GilState g;
  g.locked = word.locked;
  if (word.holder != 0) {
    if (!p.value(word.holder + o.ts_thread_id, &g.thread_id)) g.thread_id = 0;
    if (o.ts_native_thread_id != kNoField) p.value(word.holder + o.ts_native_thread_id, &g.native_thread_id);
  }
  return g;
}

unsigned long InterpreterReader::main_thread_ident() const {
  const Process& p = *p_;
  const CPythonOffsets& o = p.off;
  unsigned long ident = 0;
  if (o.runtime_main_thread != kNoField && p.value(p.runtime + o.runtime_main_thread, &ident)) return ident;
  if (o.ts_native_thread_id == kNoField) return 0;
  // 3.13+: the thread whose kernel tid, as the process sees it (its own pid namespace), is its pid.
  const long main_tid = p.pid != 0 ? pid_in_own_namespace(p.pid) : static_cast<long>(::getpid());
  uintptr_t interp = p.ptr(p.runtime + o.runtime_interpreters_head);
  uintptr_t ts = interp != 0 ? p.ptr(interp + o.interp_threads_head) : 0;
  for (int i = 0; ts != 0 && i < 4096; ++i) {
    long native = 0;
    if (p.value(ts + o.ts_native_thread_id, &native) && native == main_tid &&
        p.value(ts + o.ts_thread_id, &ident)) {
      return ident;
    }
    ts = p.ptr(ts + o.ts_next);
  }
  return 0;
}

}  // namespace probing::layout
