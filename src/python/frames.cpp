#include "python/frames.h"

#include <sys/stat.h>

#include <fstream>
#include <map>

#include "core/proc_files.h"
#include "python/gil_free.h"
#include "python/helpers.h"
#include "python/ref.h"

namespace probing::python {

extern const char kBacktraceHelpersSource[];

namespace {

// _locals_snapshot(frame): frame.f_locals, as a dict the frame does not keep. On 3.9-3.12 reading
// f_locals makes a dict of the frame's locals and keeps it on the frame, where it holds every local
// the function lets go of afterwards (a tensor, a file) until the frame returns or f_locals is read
// again. When the frame had no such dict, the one made is taken off it again (with 3.11-3.12's
// f_fast_as_locals put back as it was), as if it had never been read; a dict it had (made by the
// program's locals(), a tracer, a debugger) is refreshed, as any read of f_locals does, and left.
// Nothing is written unless the slot the offsets name holds exactly the dict f_locals returned. 3.13+
// keep no dict (f_locals is a proxy) and have no slot in the offsets. METH_O. REQUIRES: GIL held.
PyObject* locals_snapshot(PyObject*, PyObject* frame) noexcept {
  Result<const CApi*> loaded = load_capi();
  if (!loaded.is_ok()) return nullptr;  // not reached: the helper calling it runs on this API
  const CApi& api = **loaded;
  PyObject** slot = nullptr;
  char* made_mark = nullptr;  // 3.11-3.12's f_fast_as_locals
  const Result<layout::InterpreterReader>& reader = this_interpreter();
  if (reader.is_ok() && type_of(frame) == api.PyFrame_Type) {
    const layout::CPythonOffsets& o = reader->offsets();
    char* object = reinterpret_cast<char*>(frame);
    if (o.frame_locals == layout::kNoField) {
      // 3.13+: nothing kept
    } else if (o.frame_model == layout::FrameModel::kFrameObject) {
      slot = reinterpret_cast<PyObject**>(object + o.frame_locals);
    } else if (o.frame_object_frame != layout::kNoField &&
               o.frame_object_fast_as_locals != layout::kNoField) {
      char* data = *reinterpret_cast<char**>(object + o.frame_object_frame);
      if (data != nullptr) {
        slot = reinterpret_cast<PyObject**>(data + o.frame_locals);
        made_mark = object + o.frame_object_fast_as_locals;
      }
    }
  }
  PyObject* before = slot != nullptr ? *slot : nullptr;
  const char mark_before = made_mark != nullptr ? *made_mark : 0;
  PyObject* locals = api.PyObject_GetAttrString(frame, "f_locals");
  if (locals != nullptr && slot != nullptr && before == nullptr && *slot == locals) {
    *slot = nullptr;
    if (made_mark != nullptr) *made_mark = mark_before;
    api.Py_DecRef(locals);  // the frame's reference; the caller gets ours
  }
  return locals;
}

MethodDef g_locals_snapshot_def{"_locals_snapshot", reinterpret_cast<void*>(locals_snapshot),
                                static_cast<int>(kMethO), nullptr};
MethodDef* const kBacktraceNatives[] = {&g_locals_snapshot_def, nullptr};
const HelperSource kBacktraceHelpers{kBacktraceHelpersSource, "probing._backtrace", kBacktraceNatives};

// Each thread's state as the kernel reports it now ("sleeping in futex", "running"), where its
// kernel tid is known.
void add_states(nlohmann::json& threads) {
  for (auto& t : threads) {
    const auto tid = t.find("native_thread_id");
    if (tid == t.end() || !tid->is_number_integer()) continue;
    std::string state = thread_activity(0, static_cast<pid_t>(tid->get<long long>()));
    if (!state.empty()) t["state"] = std::move(state);
  }
}

// Source lines for the GIL-free answer, read without Python. Bounded: at most 8 MiB read from
// one file (counted as read: /proc files report size 0), 32 MiB in all, 256 files.
class SourceLines {
 public:
  static constexpr size_t kMaxFileBytes = 8 << 20;
  static constexpr size_t kMaxTotalBytes = 32 << 20;

  std::string line(const std::string& file, int lineno) {
    if (lineno <= 0 || file.empty() || file[0] == '<') return {};
    auto it = files_.find(file);
    if (it == files_.end()) {
      std::vector<std::string> lines;
      struct stat st {};
      if (files_.size() < 256 && ::stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<size_t>(st.st_size) < kMaxFileBytes) {
        std::ifstream in(file);
        std::string text;
        size_t file_bytes = 0;
        while (file_bytes < kMaxFileBytes && total_bytes_ < kMaxTotalBytes && std::getline(in, text)) {
          file_bytes += text.size() + 1;
          total_bytes_ += text.size() + 1;
          lines.push_back(std::move(text));
        }
      }
      it = files_.emplace(file, std::move(lines)).first;
    }
    if (static_cast<size_t>(lineno) > it->second.size()) return {};
    const std::string& s = it->second[static_cast<size_t>(lineno) - 1];
    size_t b = s.find_first_not_of(" \t");
    size_t e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  }

 private:
  std::map<std::string, std::vector<std::string>> files_;
  size_t total_bytes_ = 0;
};

nlohmann::json holder_json(unsigned long thread_id, long native, const std::string& name) {
  return {{"thread_id", thread_id},
          {"native_thread_id", native == 0 ? nlohmann::json(nullptr) : nlohmann::json(native)},
          {"name", name.empty() ? nlohmann::json(nullptr) : nlohmann::json(name)}};
}

void add_depth_note(nlohmann::json& thread, int max_depth) {
  if (thread.value("truncated", false)) {
    thread["note"] = "the stack is deeper than " + std::to_string(max_depth) +
                     " frames; only the innermost " + std::to_string(max_depth) + " are shown";
  }
}

}  // namespace

Result<nlohmann::json> capture_backtrace_gil_free(const BacktraceOptions& options, const std::string& why) {
  layout::GilFreeLimits limits;
  limits.max_frames = options.max_depth;
  Result<layout::GilFreeSnapshot> snap = read_stacks_gil_free(limits);
  if (!snap.is_ok()) return snap.status().with_context(why + "; and reading the stacks without the GIL failed");
  long main_tid = static_cast<long>(::getpid());
  SourceLines sources;
  nlohmann::json threads = nlohmann::json::array();
  unsigned long main_ident = 0;
  for (const layout::RawThread& t : snap->threads) {
    if (t.native_thread_id == main_tid) main_ident = t.thread_id;
  }
  if (main_ident == 0 && !snap->threads.empty()) main_ident = snap->threads.back().thread_id;  // the oldest
  bool found = false;
  for (const layout::RawThread& t : snap->threads) {
    bool is_main = t.thread_id == main_ident;
    if (!options.all) {
      if (options.thread != 0) {
        if (static_cast<long long>(t.thread_id) != options.thread && t.native_thread_id != options.thread) continue;
      } else if (!is_main) {
        continue;
      }
    } else if (t.frames.empty() && !t.holds_gil) {
      continue;  // an agent thread waiting for the GIL, or a thread between two Python calls
    }
    found = true;
    nlohmann::json frames = nlohmann::json::array();
    int depth = 0;
    for (const layout::RawFrame& f : t.frames) {
      std::string src = sources.line(f.file, f.lineno);
      frames.push_back({{"depth", depth++},
                        {"func", f.func},
                        {"file", f.file},
                        {"lineno", f.lineno},
                        {"source", src.empty() ? nlohmann::json(nullptr) : nlohmann::json(src)},
                        {"frame_type", "Python"}});
    }
    std::string name = thread_name_for(t.thread_id, t.native_thread_id);
    nlohmann::json j = {{"thread_id", t.thread_id},
                        {"native_thread_id", t.native_thread_id == 0 ? nlohmann::json(nullptr) : nlohmann::json(t.native_thread_id)},
                        {"name", name.empty() ? nlohmann::json(nullptr) : nlohmann::json(name)},
                        {"daemon", nullptr},
                        {"is_main", is_main},
                        {"holds_gil", t.holds_gil},
                        {"frames", std::move(frames)},
                        {"truncated", t.truncated}};
    add_depth_note(j, options.max_depth);
    if (!t.error.empty()) j["note"] = t.error;
    threads.push_back(std::move(j));
  }
  if (!found && options.thread != 0) {
    return Status(Code::kNotFound, "no Python thread " + std::to_string(options.thread));
  }
  nlohmann::json notes = nlohmann::json::array();
  notes.push_back(why + "; the stacks were read without the GIL (" + snap->offsets_source +
                  " offsets): no locals, no daemon flags, thread names from the last live backtrace");
  if (options.locals) notes.push_back("locals cannot be shown without the GIL");
  add_states(threads);
  return nlohmann::json{{"threads", std::move(threads)},
                        {"gil_free", true},
                        {"gil_holder", snap->holder_thread_id != 0
                                           ? holder_json(snap->holder_thread_id, snap->holder_native_thread_id,
                                                         thread_name_for(snap->holder_thread_id, snap->holder_native_thread_id))
                                           : nlohmann::json(nullptr)},
                        {"notes", std::move(notes)}};
}

namespace {
thread_local bool t_user_reprs = true;
}  // namespace

bool user_reprs_allowed() noexcept { return t_user_reprs; }

ScopedUserReprs::ScopedUserReprs(bool allowed) noexcept : saved_(t_user_reprs) { t_user_reprs = allowed; }

ScopedUserReprs::~ScopedUserReprs() { t_user_reprs = saved_; }

Result<nlohmann::json> capture_backtrace(PythonRuntime& runtime, const BacktraceOptions& options) {
  double budget_s = std::min(options.run_timeout_s * 0.75, options.locals_budget_s);
  nlohmann::json args = {options.thread,     options.all ? 1 : 0,    options.locals ? 1 : 0,
                         options.max_depth,  options.repr_chars,     budget_s,
                         static_cast<long long>(main_thread_ident()), options.user_reprs ? 1 : 0};
  HelperCall call(options.gil_timeout_s, options.run_timeout_s);
  call.reads_other_threads = true;
  Result<nlohmann::json> reply = call_helper(runtime, kBacktraceHelpers, "capture", args, call);
  if (Code code = reply.status().code(); code == Code::kTimeout || code == Code::kUnavailable) {
    Result<nlohmann::json> j = capture_backtrace_gil_free(options, reply.status().message());
    if (j.is_ok()) (*j)["python"] = runtime.version().text;
    return j;
  }
  if (!reply.is_ok()) return reply.status().with_context("the capture failed");
  nlohmann::json& j = *reply;
  if (!j.is_object()) return Status(Code::kInternal, "the backtrace is not a JSON object");
  std::vector<std::pair<unsigned long, std::string>> names;
  for (const auto& pair : j["names"]) {
    if (pair.is_array() && pair.size() == 2 && pair[0].is_number_unsigned() && pair[1].is_string()) {
      names.emplace_back(pair[0].get<unsigned long>(), pair[1].get<std::string>());
    }
  }
  remember_thread_names(names);
  j.erase("names");
  if (options.thread != 0 && j["threads"].empty()) {
    return Status(Code::kNotFound, "no Python thread " + std::to_string(options.thread));
  }
  for (auto& t : j["threads"]) add_depth_note(t, options.max_depth);
  add_states(j["threads"]);
  nlohmann::json notes = nlohmann::json::array();
  j["gil_free"] = false;
  j["gil_holder"] = nullptr;
  j["notes"] = std::move(notes);
  j["python"] = runtime.version().text;
  return j;
}

}  // namespace probing::python
