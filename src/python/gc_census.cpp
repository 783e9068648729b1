#include "python/gc_census.h"

#include <chrono>
#include <map>
#include <string>
#include <unordered_map>

namespace probing::python {
namespace {

constexpr unsigned long kPyTpflagsHeaptype = 1UL << 9;
constexpr long kDeadlineEvery = 4096;  // objects between two looks at the clock
constexpr size_t kMaxOwners = 100000;  // modules (and optimizers) the tensor census hands on

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
  return utf8(api, v.get());
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

// Calls visit(o) (borrowed; true to go on) for each object gc.get_objects() returns, with the GIL
// held throughout and no Python code run in between, for at most `budget_s`; sets *seen and
// *total. Refused while a thread is in a backward pass (gc_census.h says why).
template <class Visit>
Status for_each_tracked(const CApi& api, double budget_s, long long* seen, long long* total, Visit visit) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_s));
  Result<PyRef> isenabled = module_function(api, "gc", "isenabled");
  Result<PyRef> disable = module_function(api, "gc", "disable");
  Result<PyRef> enable = module_function(api, "gc", "enable");
  Result<PyRef> get_objects = module_function(api, "gc", "get_objects");
  for (const Result<PyRef>* r : {&isenabled, &disable, &enable, &get_objects}) {
    if (!r->is_ok()) return r->status();
  }
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
  PyRef objects(api, api.PyObject_CallFunctionObjArgs(get_objects->get(), nullptr));
  if (!objects) return Status(Code::kInternal, "gc.get_objects(): " + fetch_error_text(api));
  const long n = api.PyList_Size(objects.get());
  *total = n;
  *seen = 0;
  for (long i = 0; i < n; ++i) {
    if (i % kDeadlineEvery == 0 && i > 0 && Clock::now() > deadline) break;
    if (!visit(api.PyList_GetItem(objects.get(), i))) break;
    *seen = i + 1;
  }
  return Status::ok();  // the references to the objects are dropped here, before anything else can run
}

}  // namespace

Result<Census> take_census(const CApi& api, double budget_s, bool sizes) {
  Result<PyRef> getsizeof = module_function(api, "sys", "getsizeof");
  if (!getsizeof.is_ok()) return getsizeof.status();
  PyRef object_sizeof(
      api, api.PyObject_GetAttrString(static_cast<PyObject*>(api.PyBaseObject_Type), "__sizeof__"));
  if (!object_sizeof) return Status(Code::kInternal, "object.__sizeof__: " + fetch_error_text(api));
  Census census;
  std::unordered_map<void*, size_t> index;  // type -> its place in census.types
  Status st = for_each_tracked(api, budget_s, &census.seen, &census.total, [&](PyObject* o) {
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
    return true;
  });
  if (!st.is_ok()) return st;
  return census;
}

namespace {

// What the tensor census calls: torch's own C descriptors, taken from its C base classes, so that
// no Python override of a subclass runs (and no Python code at all: the GIL is never let go).
struct TorchAccess {
  explicit TorchAccess(const CApi& a) : api(a) {}
  const CApi& api;
  PyRef base;                                       // torch._C.TensorBase (_TensorBase before 2.0)
  PyRef parameter;                                  // torch.nn.Parameter, or null
  PyRef disabled;                                   // torch._C._disabled_torch_function_impl
  PyRef shape, dtype, device, requires_grad, grad;  // bound __get__ of the getset descriptors
  // Method descriptors: numel(t), _is_view(t), untyped_storage(t) or _storage(t).
  PyRef numel, is_view, storage;
  PyRef data_ptr, nbytes;                // of torch._C.StorageBase
  PyRef module, optimizer;               // torch.nn.Module and torch.optim.Optimizer, or null
  std::unordered_map<void*, int> kinds;  // type -> one of the kinds below

  static constexpr int kNotTensor = 0, kPlain = 1, kParameter = 2, kUnreadable = 3, kModule = 4,
                       kOptimizer = 5;

  // A borrowed item of a module's namespace (never a getattr on the module).
  static PyObject* module_item(const CApi& api, const char* module, const char* name) {
    PyRef sys(api, api.PyImport_ImportModule("sys"));
    PyRef modules = sys ? PyRef(api, api.PyObject_GetAttrString(sys.get(), "modules")) : PyRef();
    if (!modules) {
      api.PyErr_Clear();
      return nullptr;
    }
    PyObject* m = api.PyDict_GetItemString(modules.get(), module);
    return m != nullptr ? api.PyDict_GetItemString(api.PyModule_GetDict(m), name) : nullptr;
  }
  PyRef attr(PyObject* o, const char* name) {
    PyRef r(api, api.PyObject_GetAttrString(o, name));
    if (!r) api.PyErr_Clear();
    return r;
  }
  PyRef getter(PyObject* type, const char* name) {
    PyRef d = attr(type, name);
    return d ? attr(d.get(), "__get__") : PyRef();
  }
  PyRef call(PyObject* fn, PyObject* arg) {
    PyRef r(api, api.PyObject_CallFunctionObjArgs(fn, arg, nullptr));
    if (!r) api.PyErr_Clear();
    return r;
  }
  std::string text(PyObject* fn, PyObject* arg) {
    PyRef v = call(fn, arg);
    PyRef s = v ? PyRef(api, api.PyObject_Str(v.get())) : PyRef();
    return utf8(api, s.get());
  }
  long long integer(PyObject* fn, PyObject* arg) {
    PyRef v = call(fn, arg);
    if (!v) return -1;
    long long n = api.PyLong_AsLongLong(v.get());
    if (n == -1 && api.PyErr_Occurred() != nullptr) api.PyErr_Clear();
    return n;
  }
  int kind_of(void* type) {
    auto [it, fresh] = kinds.try_emplace(type, kNotTensor);
    if (!fresh) return it->second;
    if (module && api.PyType_IsSubtype(type, module.get()) != 0) return it->second = kModule;
    if (optimizer && api.PyType_IsSubtype(type, optimizer.get()) != 0) return it->second = kOptimizer;
    if (api.PyType_IsSubtype(type, base.get()) == 0) return it->second;
    if (parameter && api.PyType_IsSubtype(type, parameter.get()) != 0) {
      it->second = kParameter;
    } else {
      it->second = kPlain;
    }
    // A subclass with a __torch_function__ of its own runs Python code on every attribute.
    if (type != module_item(api, "torch", "Tensor")) {
      PyRef tf = attr(static_cast<PyObject*>(type), "__torch_function__");
      if (!tf || tf.get() != disabled.get()) it->second = kUnreadable;
    }
    return it->second;
  }
};

}  // namespace

Result<TensorCensus> take_tensor_census(const CApi& api, double budget_s) {
  TensorCensus census;
  PyObject* torch_c = TorchAccess::module_item(api, "torch", "_C");
  if (torch_c == nullptr) return census;  // torch is not imported (and is not imported here)
  census.torch = true;
  TorchAccess t(api);
  PyObject* c_dict = api.PyModule_GetDict(torch_c);
  PyObject* base = api.PyDict_GetItemString(c_dict, "TensorBase");
  if (base == nullptr) base = api.PyDict_GetItemString(c_dict, "_TensorBase");
  PyObject* storage_base = api.PyDict_GetItemString(c_dict, "StorageBase");
  PyObject* disabled = api.PyDict_GetItemString(c_dict, "_disabled_torch_function_impl");
  if (base == nullptr || storage_base == nullptr || disabled == nullptr) {
    return Status(Code::kUnsupported,
                  "this PyTorch has no torch._C.TensorBase, StorageBase or "
                  "_disabled_torch_function_impl");
  }
  t.base = PyRef::borrow(api, base);
  t.disabled = PyRef::borrow(api, disabled);
  t.parameter = PyRef::borrow(api, TorchAccess::module_item(api, "torch.nn.parameter", "Parameter"));
  t.module = PyRef::borrow(api, TorchAccess::module_item(api, "torch.nn.modules.module", "Module"));
  t.optimizer = PyRef::borrow(api, TorchAccess::module_item(api, "torch.optim.optimizer", "Optimizer"));
  t.shape = t.getter(base, "shape");
  t.dtype = t.getter(base, "dtype");
  t.device = t.getter(base, "device");
  t.requires_grad = t.getter(base, "requires_grad");
  t.grad = t.getter(base, "grad");
  t.numel = t.attr(base, "numel");
  t.is_view = t.attr(base, "_is_view");
  t.storage = t.attr(base, "untyped_storage");
  if (!t.storage) t.storage = t.attr(base, "_storage");
  t.data_ptr = t.attr(storage_base, "data_ptr");
  t.nbytes = t.attr(storage_base, "nbytes");
  if (!t.shape || !t.dtype || !t.device || !t.requires_grad || !t.grad || !t.numel || !t.is_view ||
      !t.storage || !t.data_ptr || !t.nbytes) {
    return Status(Code::kUnsupported, "this PyTorch's tensors lack the attributes python.tensors reads");
  }

  std::map<std::pair<std::string, long long>, size_t> index;  // (device, storage address) -> storage
  // Each storage's tensor whose shape is shown: the base rather than a view, then the largest.
  std::vector<std::pair<bool, long long>> shown;
  Status st = for_each_tracked(api, budget_s, &census.seen, &census.total, [&](PyObject* o) {
    const int kind = t.kind_of(type_of(o));
    if (kind == TorchAccess::kNotTensor) return true;
    if (kind == TorchAccess::kModule || kind == TorchAccess::kOptimizer) {  // Python's own objects
      std::vector<PyRef>& owners = kind == TorchAccess::kModule ? census.modules : census.optimizers;
      if (owners.size() < kMaxOwners) owners.push_back(PyRef::borrow(api, o));
      return true;
    }
    if (kind == TorchAccess::kUnreadable) {
      ++census.unread;
      return true;
    }
    PyRef storage = t.call(t.storage.get(), o);  // fails for sparse and other storage-less layouts
    const long long address = storage ? t.integer(t.data_ptr.get(), storage.get()) : -1;
    const long long bytes = storage ? t.integer(t.nbytes.get(), storage.get()) : -1;
    if (address <= 0 || bytes <= 0) {  // empty, or no storage to read
      if (address < 0 || bytes < 0) ++census.unread;
      return true;
    }
    std::string device = t.text(t.device.get(), o);
    auto [it, fresh] = index.try_emplace({device, address}, census.storages.size());
    if (fresh) {
      census.storages.push_back({});
      shown.push_back({false, -1});
    }
    TensorStorage& s = census.storages[it->second];
    s.address = address;
    s.bytes = bytes;
    s.device = std::move(device);
    ++s.objects;
    if (kind == TorchAccess::kParameter) {
      s.parameter = true;
      PyRef grad = t.call(t.grad.get(), o);
      PyRef grad_storage = grad && grad.get() != api.None ? t.call(t.storage.get(), grad.get()) : PyRef();
      if (grad_storage) {
        census.gradients.push_back({t.text(t.device.get(), grad.get()),
                                    t.integer(t.data_ptr.get(), grad_storage.get()),
                                    static_cast<long long>(reinterpret_cast<uintptr_t>(o))});
      }
    }
    PyRef rg = t.call(t.requires_grad.get(), o);
    if (rg && api.PyObject_IsTrue(rg.get()) == 1) s.requires_grad = true;
    PyRef view = t.call(t.is_view.get(), o);
    const std::pair<bool, long long> rank{view && api.PyObject_IsTrue(view.get()) == 0,
                                          t.integer(t.numel.get(), o)};
    if (rank > shown[it->second]) {
      shown[it->second] = rank;
      s.shape = t.text(t.shape.get(), o);
      s.dtype = t.text(t.dtype.get(), o);
    }
    return true;
  });
  if (!st.is_ok()) return st;
  return census;
}

}  // namespace probing::python
