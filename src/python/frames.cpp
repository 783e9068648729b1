#include "python/frames.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <vector>

#include "core/proc_files.h"
#include "python/gil_free.h"
#include "python/helpers.h"
#include "python/ref.h"

namespace probing::python {

extern const char kBacktraceHelpersSource[];

namespace {

// locals_snapshot(frame): frame.f_locals, as a dict the frame does not keep. On 3.9-3.12 reading
// f_locals makes a dict of the frame's locals and keeps it on the frame, where it holds every local
// the function lets go of afterwards (a tensor, a file) until the frame returns or f_locals is read
// again. When the frame had no such dict, the one made is taken off it again (with 3.11-3.12's
// f_fast_as_locals put back as it was), as if it had never been read; a dict it had (made by the
// program's locals(), a tracer, a debugger) is refreshed, as any read of f_locals does, and left.
// Nothing is written unless the slot the offsets name holds exactly the dict f_locals returned. 3.13+
// keep no dict (f_locals is a proxy) and have no slot in the offsets. A new reference, or null with
// the error set. REQUIRES: GIL held.
PyObject* locals_snapshot(const CApi& api, PyObject* frame) noexcept {
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

// Appends `owned` to `list` and lets it go; false (error set) when either fails.
bool append_owned(const CApi& api, PyObject* list, PyObject* owned) {
  if (owned == nullptr) return false;
  const int rc = api.PyList_Append(list, owned);
  api.Py_DecRef(owned);
  return rc == 0;
}

// A frame's locals as a list of (name, value), or null (no error set) when they are not a dict
// or a FrameLocalsProxy (`proxy_type`): a class body's own mapping is not asked, its items()
// would run code of the program's.
PyObject* locals_items(const CApi& api, PyObject* frame, PyObject* proxy_type) {
  PyRef locals(api, locals_snapshot(api, frame));
  if (locals && (type_of(locals.get()) == api.PyDict_Type || type_of(locals.get()) == proxy_type)) {
    PyRef items(api, api.PyObject_GetAttrString(locals.get(), "items"));
    PyRef view = items ? PyRef(api, api.PyObject_CallFunctionObjArgs(items.get(), nullptr)) : PyRef();
    if (PyObject* list = view ? api.PySequence_List(view.get()) : nullptr) return list;
  }
  api.PyErr_Clear();
  return nullptr;
}

// [frame, f_lineno, f_lasti, f_globals, items or None] of one frame: what is read of it later.
PyObject* seen_frame(const CApi& api, PyObject* frame, bool with_locals, PyObject* proxy_type) {
  PyObject* entry = api.PyList_New(0);
  if (entry == nullptr) return nullptr;
  api.Py_IncRef(frame);
  PyObject* items = with_locals ? locals_items(api, frame, proxy_type) : nullptr;
  if (items == nullptr) {
    items = api.None;
    api.Py_IncRef(items);
  }
  if (append_owned(api, entry, frame) &&
      append_owned(api, entry, api.PyObject_GetAttrString(frame, "f_lineno")) &&
      append_owned(api, entry, api.PyObject_GetAttrString(frame, "f_lasti")) &&
      append_owned(api, entry, api.PyObject_GetAttrString(frame, "f_globals")) &&
      append_owned(api, entry, items)) {
    return entry;
  }
  api.Py_DecRef(entry);
  return nullptr;
}

// _snapshot(current_frames, wanted, me, want_locals, max_depth, proxy_type): the frames of the
// threads of `wanted` (a list of idents; None: every thread but `me`), innermost first, as
// [[ident, [seen_frame...], truncated], ...], with their locals when want_locals is true (the
// innermost frame's always). current_frames is sys._current_frames; proxy_type is the type of an
// optimized frame's f_locals (FrameLocalsProxy on 3.13+, dict before).
//
// In C so that the GIL cannot go while it runs: no bytecode runs, so no switch interval hands the
// GIL to another thread halfway, and collection is off (HelperCall::reads_other_threads), so no
// finalizer runs. The frames are all running when they are read; what is read of them later
// (source lines, reprs, a lock's owner) is read from this. A frame that is no longer running is
// not safe to read on every interpreter: CPython 3.13.0-3.13.5 (gh-125723) free the locals of a
// generator closed while something holds its frame's object and leave them in place, so a later
// read meets freed objects; it crashed the target (SIGSEGV in PyTuple_Pack under
// FrameLocalsProxy.items()). METH_FASTCALL. REQUIRES: GIL held.
PyObject* snapshot(PyObject*, PyObject* const* args, long nargs) noexcept {
  Result<const CApi*> loaded = load_capi();
  if (!loaded.is_ok()) return nullptr;
  const CApi& api = **loaded;
  if (nargs != 6) {
    api.PyErr_SetString(api.exc_type_error, "_snapshot takes 6 arguments");
    return nullptr;
  }
  PyObject* wanted = args[1];
  const long long me = api.PyLong_AsLongLong(args[2]);
  const int want_locals = api.PyObject_IsTrue(args[3]);
  const long long max_depth = api.PyLong_AsLongLong(args[4]);
  PyObject* proxy_type = args[5];
  if (api.PyErr_Occurred() != nullptr) return nullptr;
  std::vector<long long> idents;
  if (wanted != api.None) {
    const long n = api.PyList_Size(wanted);
    if (n < 0) return nullptr;
    for (long i = 0; i < n; ++i) idents.push_back(api.PyLong_AsLongLong(api.PyList_GetItem(wanted, i)));
    if (api.PyErr_Occurred() != nullptr) return nullptr;
  }
  PyRef frames(api, api.PyObject_CallFunctionObjArgs(args[0], nullptr));
  PyRef out(api, api.PyList_New(0));
  if (!frames || !out) return nullptr;
  long pos = 0;
  PyObject* key = nullptr;
  PyObject* top = nullptr;
  while (api.PyDict_Next(frames.get(), &pos, &key, &top)) {
    const long long ident = api.PyLong_AsLongLong(key);
    if (api.PyErr_Occurred() != nullptr) return nullptr;
    if (ident == me ||
        (wanted != api.None && std::find(idents.begin(), idents.end(), ident) == idents.end())) {
      continue;
    }
    PyRef stack(api, api.PyList_New(0));
    if (!stack) return nullptr;
    PyRef frame = PyRef::borrow(api, top);
    long long depth = 0;
    for (; frame && frame.get() != api.None && depth < max_depth; ++depth) {
      if (!append_owned(api, stack.get(),
                        seen_frame(api, frame.get(), want_locals == 1 || depth == 0, proxy_type))) {
        return nullptr;
      }
      frame = PyRef(api, api.PyObject_GetAttrString(frame.get(), "f_back"));
      if (!frame) return nullptr;
    }
    const bool truncated = frame && frame.get() != api.None;
    PyRef thread(api, api.PyList_New(0));
    if (!thread || !append_owned(api, thread.get(), PyRef::borrow(api, key).release()) ||
        !append_owned(api, thread.get(), stack.release()) ||
        !append_owned(api, thread.get(), api.PyLong_FromLongLong(truncated ? 1 : 0)) ||
        !append_owned(api, out.get(), thread.release())) {
      return nullptr;
    }
  }
  return out.release();
}

MethodDef g_snapshot_def{"_snapshot", reinterpret_cast<void*>(snapshot), static_cast<int>(kMethFastcall),
                         nullptr};
MethodDef* const kBacktraceNatives[] = {&g_snapshot_def, nullptr};
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

Status load_backtrace_helper(PythonRuntime& runtime, double gil_timeout_s, std::shared_ptr<void> kept) {
  MakeArgs none = [kept = std::move(kept)](const CApi&) -> Result<std::vector<PyRef>> {
    return std::vector<PyRef>{};
  };
  return call_helper(runtime, kBacktraceHelpers, "loaded", std::move(none), HelperCall(gil_timeout_s, 2))
      .status();
}

Result<nlohmann::json> capture_backtrace(PythonRuntime& runtime, const BacktraceOptions& options) {
  double budget_s = std::min(options.run_timeout_s * 0.75, options.locals_budget_s);
  nlohmann::json args = {options.thread,     options.all ? 1 : 0,    options.locals ? 1 : 0,
                         options.max_depth,  options.repr_chars,     budget_s,
                         static_cast<long long>(main_thread_ident()), options.user_reprs ? 1 : 0};
  HelperCall call(options.gil_timeout_s, options.run_timeout_s);
  call.reads_other_threads = true;
  // Set when it ran past run_timeout_s and was interrupted: a repr that ran on is caught by the
  // helper (`<repr interrupted>`) and the answer stands; the interrupt landing anywhere else fails
  // the capture, and the stacks are read without the GIL instead.
  bool interrupted = false;
  call.interrupted = &interrupted;
  Result<nlohmann::json> reply = call_helper(runtime, kBacktraceHelpers, "capture", args, call);
  const bool failed_on_interrupt = !reply.is_ok() && interrupted;
  if (Code code = reply.status().code();
      code == Code::kTimeout || code == Code::kUnavailable || failed_on_interrupt) {
    std::string why = reply.status().message();
    if (failed_on_interrupt) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.3g", options.run_timeout_s);
      why = std::string("the capture with the GIL ran past its ") + secs + " s and was interrupted";
    }
    Result<nlohmann::json> j = capture_backtrace_gil_free(options, why);
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
