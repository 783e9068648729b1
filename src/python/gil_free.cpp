#include "python/gil_free.h"

#include <dlfcn.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <mutex>

#include "layout/relocate.h"
#include "python/capi.h"

namespace probing::python {
namespace {

uintptr_t symbol(const char* name) { return reinterpret_cast<uintptr_t>(dlsym(RTLD_DEFAULT, name)); }

// This process's interpreter as the reader needs it.
Result<layout::PythonProcess> this_process() {
  Result<const CApi*> api = load_capi();
  if (!api.is_ok()) return api.status();
  Result<layout::PythonVersion> v = interpreter_version(**api);
  if (!v.is_ok()) return v.status();
  layout::PythonProcess self;
  self.version = *v;
  self.free_threaded = (*api)->free_threaded;
  self.runtime = symbol("_PyRuntime");
  self.unicode_type = symbol("PyUnicode_Type");
  self.code_type = symbol("PyCode_Type");
  self.bytes_type = symbol("PyBytes_Type");
  self.frame_type = symbol("PyFrame_Type");
  if (self.runtime == 0 || self.unicode_type == 0 || self.code_type == 0 || self.bytes_type == 0) {
    return Status(Code::kUnavailable, "CPython's _PyRuntime or type objects are not visible to dlsym");
  }
  return self;
}

Result<layout::InterpreterReader> open_this_interpreter() {
  Result<layout::PythonProcess> self = this_process();
  if (!self.is_ok()) return self.status();
  return layout::InterpreterReader::open(*self);
}

std::mutex g_names_mu;
std::map<unsigned long, std::string>* g_names = nullptr;

}  // namespace

const Result<layout::InterpreterReader>& this_interpreter() {
  static std::once_flag once;
  static Result<layout::InterpreterReader>* reader = nullptr;  // never destroyed
  std::call_once(once, [] { reader = new Result<layout::InterpreterReader>(open_this_interpreter()); });
  return *reader;
}

Result<layout::GilFreeSnapshot> read_stacks_gil_free(const layout::GilFreeLimits& limits) {
  const Result<layout::InterpreterReader>& reader = this_interpreter();
  if (!reader.is_ok()) return reader.status();
  return reader->stacks(limits);
}

Result<layout::GilFreeSnapshot> read_descendant_stacks(pid_t pid, const layout::GilFreeLimits& limits) {
  Result<layout::PythonProcess> self = this_process();
  if (!self.is_ok()) return self.status();
  layout::PythonProcess child = *self;
  child.pid = pid;
  for (uintptr_t* address :
       {&child.runtime, &child.unicode_type, &child.code_type, &child.bytes_type, &child.frame_type}) {
    if (*address == 0) continue;
    Result<uintptr_t> there = layout::relocate_to(pid, *address);
    if (!there.is_ok()) return there.status();
    *address = *there;
  }
  Result<layout::InterpreterReader> reader = layout::InterpreterReader::open(child);
  if (!reader.is_ok()) return reader.status();
  return reader->stacks(limits);
}

Result<GilHolder> read_gil_holder() {
  const Result<layout::InterpreterReader>& reader = this_interpreter();
  if (!reader.is_ok()) return reader.status();
  layout::GilState gil = reader->gil();
  GilHolder h{gil.locked, gil.thread_id, gil.native_thread_id, ""};
  if (h.thread_id != 0) h.name = thread_name_for(h.thread_id, h.native_thread_id);
  return h;
}

unsigned long main_thread_ident() noexcept {
  try {
    const Result<layout::InterpreterReader>& reader = this_interpreter();
    return reader.is_ok() ? reader->main_thread_ident() : 0;
  } catch (...) {  // the reader may allocate on first use
    return 0;
  }
}

std::string describe_gil_holder() noexcept {
  try {
    Result<GilHolder> h = read_gil_holder();
    if (!h.is_ok() || !h->locked || h->thread_id == 0) return "";
    std::string text = "thread " + std::to_string(h->thread_id);
    if (h->native_thread_id != 0) text += " (tid " + std::to_string(h->native_thread_id);
    if (!h->name.empty()) text += std::string(h->native_thread_id != 0 ? ", " : " (") + "\"" + h->name + "\"";
    if (h->native_thread_id != 0 || !h->name.empty()) text += ")";
    return text;
  } catch (...) {
    return "";
  }
}

void remember_thread_names(const std::vector<std::pair<unsigned long, std::string>>& names) {
  std::lock_guard<std::mutex> lock(g_names_mu);
  if (g_names == nullptr) g_names = new std::map<unsigned long, std::string>;  // lives forever
  if (g_names->size() > 4096) g_names->clear();
  for (const auto& [id, name] : names) (*g_names)[id] = name.substr(0, 256);
}

std::string thread_name_for(unsigned long thread_id, long native_thread_id) {
  {
    std::lock_guard<std::mutex> lock(g_names_mu);
    if (g_names != nullptr) {
      auto it = g_names->find(thread_id);
      if (it != g_names->end()) return it->second;
    }
  }
  if (native_thread_id != 0 && native_thread_id == static_cast<long>(::getpid())) return "MainThread";
  if (native_thread_id > 0) {
    std::ifstream in("/proc/self/task/" + std::to_string(native_thread_id) + "/comm");
    std::string comm;
    if (std::getline(in, comm)) return comm;
  }
  return "";
}

}  // namespace probing::python
