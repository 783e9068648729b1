#include "python/gc_census.h"

#include <chrono>
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
  PyRef object_sizeof(api, api.PyObject_GetAttrString(static_cast<PyObject*>(api.PyBaseObject_Type), "__sizeof__"));
  if (!object_sizeof) return Status(Code::kInternal, "object.__sizeof__: " + fetch_error_text(api));

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
