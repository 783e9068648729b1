#include "python/gc_census.h"

#include <chrono>
#include <string>
#include <unordered_map>

namespace probing::python {
namespace {

constexpr unsigned long kPyTpflagsHeaptype = 1UL << 9;
constexpr long kDeadlineEvery = 4096;  // objects between two looks at the clock

// The named function of an imported module, or an error.
Result<PyRef> module_function(const CApi& api, const char* module, const char* name) {
  PyRef m(api, api.PyImport_ImportModule(module));
  if (!m) return Status(Code::kInternal, std::string("import ") + module + ": " + fetch_error_text(api));
  PyRef fn(api, api.PyObject_GetAttrString(m.get(), name));
  if (!fn) return Status(Code::kInternal, std::string(module) + "." + name + ": " + fetch_error_text(api));
  return fn;
}

// Calls fn(arg) (or fn() when arg is null) and returns the result as an integer; -1 on error
// (cleared).
long long call_int(const CApi& api, PyObject* fn, PyObject* arg) {
  PyRef r(api, api.PyObject_CallFunctionObjArgs(fn, arg, nullptr));
  if (!r) {
    api.PyErr_Clear();
    return -1;
  }
  long long v = api.PyLong_AsLongLong(r.get());
  if (v == -1 && api.PyErr_Occurred() != nullptr) api.PyErr_Clear();
  return v;
}

// Calls fn() for its effect; an error is cleared.
void call_void(const CApi& api, PyObject* fn) {
  PyRef r(api, api.PyObject_CallFunctionObjArgs(fn, nullptr));
  if (!r) api.PyErr_Clear();
}

// A string attribute of `o` as UTF-8, "" when it has none.
std::string str_attr(const CApi& api, PyObject* o, const char* name) {
  PyRef v(api, api.PyObject_GetAttrString(o, name));
  if (!v) {
    api.PyErr_Clear();
    return "";
  }
  long size = 0;
  const char* text = api.PyUnicode_AsUTF8AndSize(v.get(), &size);
  if (text == nullptr) {
    api.PyErr_Clear();
    return "";
  }
  return std::string(text, static_cast<size_t>(size));
}

// Whether a thread is inside a PyTorch backward pass (torch.autograd's backward or grad on its
// stack). Its C++ frees tensors without the GIL, Python objects included.
bool in_backward(const CApi& api) {
  Result<PyRef> current = module_function(api, "sys", "_current_frames");
  if (!current.is_ok()) return false;
  PyRef frames(api, api.PyObject_CallFunctionObjArgs(current->get(), nullptr));
  if (!frames) {
    api.PyErr_Clear();
    return false;
  }
  long pos = 0;
  PyObject* key = nullptr;
  PyObject* frame = nullptr;
  while (api.PyDict_Next(frames.get(), &pos, &key, &frame) != 0) {
    PyRef f = PyRef::borrow(api, frame);
    for (int depth = 0; f && depth < 256; ++depth) {
      PyRef code(api, api.PyObject_GetAttrString(f.get(), "f_code"));
      if (!code) break;
      const std::string name = str_attr(api, code.get(), "co_name");
      if ((name == "backward" || name == "grad" || name == "_engine_run_backward") &&
          str_attr(api, code.get(), "co_filename").find("torch/autograd/") != std::string::npos) {
        return true;
      }
      PyRef back(api, api.PyObject_GetAttrString(f.get(), "f_back"));
      if (!back) break;
      f = back.get() == api.None ? PyRef() : std::move(back);
    }
    api.PyErr_Clear();
  }
  return false;
}

}  // namespace

Result<Census> take_census(const CApi& api, double budget_s, bool sizes) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_s));
  Result<PyRef> isenabled = module_function(api, "gc", "isenabled");
  Result<PyRef> disable = module_function(api, "gc", "disable");
  Result<PyRef> enable = module_function(api, "gc", "enable");
  Result<PyRef> get_objects = module_function(api, "gc", "get_objects");
  Result<PyRef> getsizeof = module_function(api, "sys", "getsizeof");
  for (const Result<PyRef>* r : {&isenabled, &disable, &enable, &get_objects, &getsizeof}) {
    if (!r->is_ok()) return r->status();
  }
  PyRef object_sizeof(
      api, api.PyObject_GetAttrString(static_cast<PyObject*>(api.PyBaseObject_Type), "__sizeof__"));
  if (!object_sizeof) return Status(Code::kInternal, "object.__sizeof__: " + fetch_error_text(api));
  // Nothing here releases the GIL, so no thread can start a backward pass once this one has
  // looked: one already running is the danger.
  if (in_backward(api)) {
    return Status(Code::kUnavailable,
                  std::string(kInBackward) +
                      ", which frees tensors without the GIL: the objects are not counted "
                      "while it runs (counting would hold references to them); try again");
  }

  // Automatic collection is off while the references are held, and back on however this ends
  // (an allocation here may throw).
  struct CollectionOff {
    const CApi& api;
    PyObject* enable;
    bool was_enabled;
    ~CollectionOff() {
      if (was_enabled) call_void(api, enable);
    }
  } off{api, enable->get(), call_int(api, isenabled->get(), nullptr) == 1};
  if (off.was_enabled) call_void(api, disable->get());
  Census census;
  {
    PyRef objects(api, api.PyObject_CallFunctionObjArgs(get_objects->get(), nullptr));
    if (!objects) return Status(Code::kInternal, "gc.get_objects(): " + fetch_error_text(api));
    std::unordered_map<void*, size_t> index;  // type -> its place in census.types
    const long n = api.PyList_Size(objects.get());
    census.total = n;
    for (long i = 0; i < n; ++i) {
      if (i % kDeadlineEvery == 0 && i > 0 && Clock::now() > deadline) break;
      PyObject* o = api.PyList_GetItem(objects.get(), i);  // borrowed
      void* type = type_of(o);
      auto [it, fresh] = index.try_emplace(type, census.types.size());
      if (fresh) census.types.push_back({PyRef::borrow(api, static_cast<PyObject*>(type)), 0, 0});
      TypeCount& tc = census.types[it->second];
      ++tc.count;
      if (sizes) {
        bool builtin = (api.PyType_GetFlags(type) & kPyTpflagsHeaptype) == 0;
        long long size = call_int(api, builtin ? getsizeof->get() : object_sizeof.get(), o);
        if (size > 0) tc.size_bytes += size;
      }
      census.seen = i + 1;
    }
  }  // the references to the objects are dropped here, before anything else can run
  return census;
}

}  // namespace probing::python
