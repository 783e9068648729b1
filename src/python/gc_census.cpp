#include "python/gc_census.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/proc_files.h"
#include "python/collection.h"
#include "python/gil_free.h"

namespace probing::python {
namespace {

constexpr unsigned long kPyTpflagsHeaptype = 1UL << 9;
constexpr long kDeadlineEvery = 4096;  // objects between two looks at the clock
constexpr size_t kMaxOwners = 100000;  // modules (and optimizers) the tensor census hands on

// sys.modules[module] (a new reference), or null; never imports, so no import hook runs.
PyRef imported(const CApi& api, const char* module) {
  PyRef name(api, api.PyUnicode_FromStringAndSize(module,
                                                  static_cast<long>(std::char_traits<char>::length(module))));
  PyRef m = name ? PyRef(api, api.PyImport_GetModule(name.get())) : PyRef();
  if (!m) api.PyErr_Clear();
  return m;
}

// The named function of a module (imported first if it has not been), or an error.
Result<PyRef> module_function(const CApi& api, const char* module, const char* name) {
  PyRef m = imported(api, module);
  if (!m) m = PyRef(api, api.PyImport_ImportModule(module));
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
// held throughout and no Python code run in between, for at most `budget_s`, then then(), the
// objects still held; sets *seen and *total. Refused while a thread is in a backward pass
// (gc_census.h says why).
template <class Visit, class Then>
Status for_each_tracked(const CApi& api, double budget_s, long long* seen, long long* total, Visit visit,
                        Then then) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_s));
  CollectionPause off(api);
  Result<PyRef> get_objects = module_function(api, "gc", "get_objects");
  if (!get_objects.is_ok()) return get_objects.status();
  // Nothing here releases the GIL, so no thread can start a backward pass once this one has
  // looked: one already running is the danger.
  if (in_backward(api)) {
    return Status(Code::kUnavailable,
                  std::string(kInBackward) +
                      ", which frees tensors without the GIL: the objects are not counted "
                      "while it runs (counting would hold references to them); try again");
  }
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
  then();
  return Status::ok();  // the references to the objects are dropped here, before anything else can run
}

}  // namespace

Result<Census> take_census(const CApi& api, double budget_s, bool sizes) {
  CollectionPause off(api);
  Result<PyRef> getsizeof = module_function(api, "sys", "getsizeof");
  if (!getsizeof.is_ok()) return getsizeof.status();
  PyRef object_sizeof(
      api, api.PyObject_GetAttrString(static_cast<PyObject*>(api.PyBaseObject_Type), "__sizeof__"));
  if (!object_sizeof) return Status(Code::kInternal, "object.__sizeof__: " + fetch_error_text(api));
  Census census;
  std::unordered_map<void*, size_t> index;  // type -> its place in census.types
  Status st = for_each_tracked(
      api, budget_s, &census.seen, &census.total,
      [&](PyObject* o) {
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
      },
      [] {});
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
  PyRef tensor;                                     // torch.Tensor
  PyRef parameter;                                  // torch.nn.Parameter, or null
  PyRef disabled;                                   // torch._C._disabled_torch_function_impl
  PyRef disabled_dispatch;                          // torch._C._disabled_torch_dispatch_impl, or null
  PyRef shape, dtype, device, requires_grad, grad;  // bound __get__ of the getset descriptors
  // Method descriptors: numel(t), _is_view(t), untyped_storage(t) or _storage(t).
  PyRef numel, is_view, storage;
  PyRef data_ptr, nbytes;                // of torch._C.StorageBase
  PyRef module, optimizer;               // torch.nn.Module and torch.optim.Optimizer, or null
  std::unordered_map<void*, int> kinds;  // type -> one of the kinds below

  static constexpr int kNotTensor = 0, kPlain = 1, kParameter = 2, kUnreadable = 3, kModule = 4,
                       kOptimizer = 5;

  // A borrowed item of an imported module's namespace (never a getattr on the module), or the
  // module itself for a null name; null when it is not there.
  static PyObject* module_item(const CApi& api, const char* module, const char* name) {
    PyRef m = imported(api, module);  // sys.modules keeps it alive
    if (!m || name == nullptr) return m.get();
    // Its __dict__ through the generic getter: sys.modules may hold an object that is no module.
    PyRef d(api, api.PyObject_GenericGetDict(m.get(), nullptr));
    if (!d) {
      api.PyErr_Clear();
      return nullptr;
    }
    return api.PyDict_GetItemString(d.get(), name);  // the module's own dict keeps it alive
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
    // A subclass with a __torch_function__ of its own runs Python code on every attribute; one
    // with a __torch_dispatch__ of its own (a wrapper subclass) may, for its sizes or device.
    if (type != tensor.get()) {
      PyRef tf = attr(static_cast<PyObject*>(type), "__torch_function__");
      if (!tf || tf.get() != disabled.get()) it->second = kUnreadable;
      PyRef td = disabled_dispatch ? attr(static_cast<PyObject*>(type), "__torch_dispatch__") : PyRef();
      if (td && td.get() != disabled_dispatch.get()) it->second = kUnreadable;
    }
    return it->second;
  }
};

// PyTorch's torch-function handling off on this thread while it lives (torch._C.DisableTorchFunction,
// entered and left through its C methods). Otherwise every getter hands the call to a
// TorchFunctionMode the program has on this thread (torch.set_default_device installs one), whose
// __torch_function__ is Python code; on the main thread that is the program's own mode stack.
class TorchFunctionOff {
 public:
  static Result<TorchFunctionOff> enter(const CApi& api, PyObject* torch_c_dict) {
    TorchFunctionOff off(api);
    PyObject* guard_type = api.PyDict_GetItemString(torch_c_dict, "DisableTorchFunction");
    if (guard_type == nullptr) {  // an old PyTorch: refused only where a mode is on
      PyObject* enabled = api.PyDict_GetItemString(torch_c_dict, "_is_torch_function_mode_enabled");
      if (enabled != nullptr && call_int(api, enabled, nullptr) != 0) {
        return Status(Code::kUnavailable,
                      "a TorchFunctionMode is active on this thread and this PyTorch cannot set it aside");
      }
      return off;
    }
    PyRef guard(api, api.PyObject_CallFunctionObjArgs(guard_type, nullptr));
    PyRef enter = guard ? PyRef(api, api.PyObject_GetAttrString(guard.get(), "__enter__")) : PyRef();
    off.exit_ = enter ? PyRef(api, api.PyObject_GetAttrString(guard.get(), "__exit__")) : PyRef();
    PyRef entered = off.exit_ ? PyRef(api, api.PyObject_CallFunctionObjArgs(enter.get(), nullptr)) : PyRef();
    if (!entered) {
      off.exit_ = PyRef();
      return Status(Code::kInternal, "torch._C.DisableTorchFunction: " + fetch_error_text(api));
    }
    return off;
  }
  TorchFunctionOff(TorchFunctionOff&&) = default;
  ~TorchFunctionOff() {
    if (!exit_) return;
    PyRef r(api_, api_.PyObject_CallFunctionObjArgs(exit_.get(), api_.None, api_.None, api_.None, nullptr));
    if (!r) api_.PyErr_Clear();
  }

 private:
  explicit TorchFunctionOff(const CApi& api) : api_(api) {}
  const CApi& api_;
  PyRef exit_;  // the entered guard's bound __exit__
};

// Names the census's tensors from dicts alone: __main__'s globals, modules' _parameters, _buffers
// and _modules, optimizers' state. Of the program's objects only their instance __dict__ is read
// (PyObject_GenericGetDict: no __getattr__, property or other code of theirs runs), and nothing
// here runs Python code, so no dict changes while it is walked.
class Namer {
 public:
  using Clock = std::chrono::steady_clock;
  Namer(const CApi& api, TorchAccess& t, const std::unordered_map<PyObject*, size_t>& storage_of,
        std::vector<TensorStorage>& storages, Clock::time_point deadline)
      : api_(api), t_(t), storage_of_(storage_of), storages_(storages), deadline_(deadline) {}

  // Every global of __main__: a model is walked, a tensor named, an optimizer kept for last.
  void name_globals() {
    PyObject* main = TorchAccess::module_item(api_, "__main__", nullptr);
    PyRef globals = main != nullptr ? instance_dict(main) : PyRef();
    for_each_item(globals.get(), [&](const std::string& name, PyObject* v) {
      const int kind = t_.kind_of(type_of(v));
      if (kind == TorchAccess::kModule) {
        walk_module(v, name, 0);
      } else if (kind == TorchAccess::kOptimizer) {
        optimizers_.push_back({name, v});
      } else {
        add(v, name);
      }
    });
  }

  // Models no global reaches (built inside main(), say): each outermost one by its class name.
  void name_unreached_modules(const std::vector<PyObject*>& modules) {
    std::unordered_set<PyObject*> children;
    for (PyObject* m : modules) {
      PyRef d = instance_dict(m);
      PyObject* sub = d ? api_.PyDict_GetItemString(d.get(), "_modules") : nullptr;
      for_each_item(sub, [&](const std::string&, PyObject* child) { children.insert(child); });
    }
    for (PyObject* m : modules) {
      if (!walked_.contains(m) && !children.contains(m)) walk_module(m, class_name(m), 0);
    }
  }

  // Optimizer state, named after the parameter it belongs to: optimizer.state[model.w].exp_avg.
  void name_optimizer_state(const std::vector<PyObject*>& optimizers) {
    std::unordered_set<PyObject*> named;
    for (const auto& named_optimizer : optimizers_) named.insert(named_optimizer.second);
    for (PyObject* o : optimizers) {
      if (!named.contains(o)) optimizers_.push_back({class_name(o), o});
    }
    for (const auto& named_optimizer : optimizers_) {  // not a structured binding: a lambda uses it
      const std::string& name = named_optimizer.first;
      PyRef d = instance_dict(named_optimizer.second);
      PyObject* state = d ? api_.PyDict_GetItemString(d.get(), "state") : nullptr;
      long i = 0;
      for_each_entry(state, [&](PyObject* parameter, PyObject* entry) {
        auto it = parameter_names_.find(parameter);
        const std::string owner = it != parameter_names_.end() ? it->second : std::to_string(i);
        ++i;
        for_each_item(entry, [&](const std::string& key, PyObject* v) {
          add(v, name + ".state[" + owner + "]." + key);
        });
      });
    }
  }

  // A parameter's gradient, named after it: model.head.weight.grad.
  void name_gradients(const std::vector<std::pair<PyObject*, size_t>>& gradients) {
    for (const auto& [parameter, storage] : gradients) {
      auto it = parameter_names_.find(parameter);
      if (it != parameter_names_.end()) add_name(storage, it->second + ".grad");
    }
  }

 private:
  static constexpr size_t kMaxNames = 3;
  static constexpr int kMaxDepth = 64;
  static constexpr unsigned long kDictSubclass = 1UL << 29, kUnicodeSubclass = 1UL << 28;

  bool late() const { return Clock::now() > deadline_; }
  bool is(PyObject* o, unsigned long flag) const {
    return o != nullptr && (api_.PyType_GetFlags(type_of(o)) & flag) != 0;
  }
  PyRef instance_dict(PyObject* o) const {
    PyRef d(api_, api_.PyObject_GenericGetDict(o, nullptr));
    if (!d) api_.PyErr_Clear();
    return is(d.get(), kDictSubclass) ? std::move(d) : PyRef();
  }
  std::string class_name(PyObject* o) const {
    PyRef n(api_, api_.PyObject_GetAttrString(static_cast<PyObject*>(type_of(o)), "__name__"));
    if (!n) api_.PyErr_Clear();
    return utf8(api_, n.get());
  }
  // f(key, value) for each entry of a dict (borrowed), until the deadline.
  template <class F>
  void for_each_entry(PyObject* dict, F f) const {
    if (!is(dict, kDictSubclass)) return;
    long pos = 0;
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    while (!late() && api_.PyDict_Next(dict, &pos, &key, &value) != 0) f(key, value);
  }
  // The same for the entries with a str key, given as UTF-8.
  template <class F>
  void for_each_item(PyObject* dict, F f) const {
    for_each_entry(dict, [&](PyObject* key, PyObject* value) {
      if (is(key, kUnicodeSubclass) && value != nullptr && value != api_.None) f(utf8(api_, key), value);
    });
  }

  void walk_module(PyObject* m, const std::string& prefix, int depth) {
    if (depth > kMaxDepth || late()) return;
    walked_.insert(m);
    PyRef d = instance_dict(m);
    if (!d) return;
    for (const char* kind : {"_parameters", "_buffers"}) {
      const bool parameters = kind[1] == 'p';
      for_each_item(api_.PyDict_GetItemString(d.get(), kind), [&](const std::string& name, PyObject* v) {
        add(v, prefix + "." + name);
        if (parameters) parameter_names_.try_emplace(v, prefix + "." + name);
      });
    }
    for_each_item(api_.PyDict_GetItemString(d.get(), "_modules"),
                  [&](const std::string& name, PyObject* child) {
                    if (t_.kind_of(type_of(child)) == TorchAccess::kModule)
                      walk_module(child, prefix + "." + name, depth + 1);
                  });
  }

  void add(PyObject* tensor, const std::string& name) {
    auto it = storage_of_.find(tensor);
    if (it != storage_of_.end()) add_name(it->second, name);
  }
  void add_name(size_t storage, const std::string& name) {
    std::vector<std::string>& names = storages_[storage].names;
    if (names.size() < kMaxNames && std::find(names.begin(), names.end(), name) == names.end()) {
      names.push_back(name);
    }
  }

  const CApi& api_;
  TorchAccess& t_;
  const std::unordered_map<PyObject*, size_t>& storage_of_;
  std::vector<TensorStorage>& storages_;
  const Clock::time_point deadline_;
  std::unordered_set<PyObject*> walked_;                        // modules named from somewhere
  std::unordered_map<PyObject*, std::string> parameter_names_;  // parameter -> its first name
  std::vector<std::pair<std::string, PyObject*>> optimizers_;   // named, in the order found
};

// "torch.Size([128, 32])" -> "[128, 32]", "torch.float32" -> "float32".
std::string strip(std::string text, std::string_view prefix, std::string_view suffix = "") {
  if (text.starts_with(prefix) && text.ends_with(suffix) && text.size() >= prefix.size() + suffix.size()) {
    text = text.substr(prefix.size(), text.size() - prefix.size() - suffix.size());
  }
  return text;
}

}  // namespace

Result<TensorCensus> take_tensor_census(const CApi& api, double budget_s, double names_budget_s) {
  CollectionPause off(api);
  TensorCensus census;
  PyObject* torch_c = TorchAccess::module_item(api, "torch", "_C");
  if (torch_c == nullptr) return census;  // torch is not imported (and is not imported here)
  census.torch = true;
  TorchAccess t(api);
  PyRef c_dict_ref(api, api.PyObject_GenericGetDict(torch_c, nullptr));
  if (!c_dict_ref) return Status(Code::kInternal, "torch._C.__dict__: " + fetch_error_text(api));
  PyObject* c_dict = c_dict_ref.get();
  Result<TorchFunctionOff> torch_function_off = TorchFunctionOff::enter(api, c_dict);
  if (!torch_function_off.is_ok()) return torch_function_off.status();
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
  t.disabled_dispatch = PyRef::borrow(api, api.PyDict_GetItemString(c_dict, "_disabled_torch_dispatch_impl"));
  t.tensor = PyRef::borrow(api, TorchAccess::module_item(api, "torch", "Tensor"));
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
  std::unordered_map<PyObject*, size_t> storage_of;           // tensor object -> its storage
  // Each storage's tensor whose shape is shown: the base rather than a view, then the largest.
  std::vector<std::pair<bool, long long>> shown;
  std::vector<PyObject*> modules, optimizers;           // borrowed from the census's list
  std::vector<PyRef> gradients_held;                    // objects the grad getter may have made
  std::vector<std::pair<PyObject*, size_t>> gradients;  // parameter -> its gradient's storage
  // Reads one tensor (once), folding it into its storage; the storage's place, or -1.
  auto read = [&](PyObject* o, int kind) -> long {
    if (auto known = storage_of.find(o); known != storage_of.end()) return static_cast<long>(known->second);
    PyRef storage = t.call(t.storage.get(), o);  // fails for sparse and other storage-less layouts
    const long long address = storage ? t.integer(t.data_ptr.get(), storage.get()) : -1;
    const long long bytes = storage ? t.integer(t.nbytes.get(), storage.get()) : -1;
    if (address <= 0 || bytes <= 0) {  // empty, or no storage to read
      if (address < 0 || bytes < 0) ++census.unread;
      return -1;
    }
    std::string device = t.text(t.device.get(), o);
    auto [it, fresh] = index.try_emplace({device, address}, census.storages.size());
    if (fresh) {
      census.storages.push_back({});
      shown.push_back({false, -1});
    }
    storage_of.emplace(o, it->second);
    TensorStorage& s = census.storages[it->second];
    s.address = address;
    s.bytes = bytes;
    s.device = std::move(device);
    ++s.objects;
    if (kind == TorchAccess::kParameter) s.parameter = true;
    PyRef rg = t.call(t.requires_grad.get(), o);
    if (rg && api.PyObject_IsTrue(rg.get()) == 1) s.requires_grad = true;
    PyRef view = t.call(t.is_view.get(), o);
    const std::pair<bool, long long> rank{view && api.PyObject_IsTrue(view.get()) == 0,
                                          t.integer(t.numel.get(), o)};
    if (rank > shown[it->second]) {
      shown[it->second] = rank;
      s.shape = strip(t.text(t.shape.get(), o), "torch.Size(", ")");
      s.dtype = strip(t.text(t.dtype.get(), o), "torch.");
    }
    return static_cast<long>(it->second);
  };
  Status st = for_each_tracked(
      api, budget_s, &census.seen, &census.total,
      [&](PyObject* o) {
        const int kind = t.kind_of(type_of(o));
        if (kind == TorchAccess::kNotTensor) return true;
        if (kind == TorchAccess::kModule || kind == TorchAccess::kOptimizer) {
          std::vector<PyObject*>& owners = kind == TorchAccess::kModule ? modules : optimizers;
          if (owners.size() < kMaxOwners) owners.push_back(o);
          return true;
        }
        if (kind == TorchAccess::kUnreadable) {
          ++census.unread;
          return true;
        }
        if (read(o, kind) >= 0 && kind == TorchAccess::kParameter) {
          PyRef grad = t.call(t.grad.get(), o);
          const int grad_kind = grad ? t.kind_of(type_of(grad.get())) : TorchAccess::kNotTensor;
          const long g = grad_kind == TorchAccess::kPlain ? read(grad.get(), grad_kind) : -1;
          if (g >= 0) gradients.push_back({o, static_cast<size_t>(g)});
          if (grad) gradients_held.push_back(std::move(grad));
        }
        return true;
      },
      [&] {  // with every object still held: the pointers above stay theirs
        const auto deadline = Namer::Clock::now() + std::chrono::duration_cast<Namer::Clock::duration>(
                                                        std::chrono::duration<double>(names_budget_s));
        Namer namer(api, t, storage_of, census.storages, deadline);
        namer.name_globals();
        namer.name_unreached_modules(modules);
        namer.name_optimizer_state(optimizers);
        namer.name_gradients(gradients);
        gradients_held.clear();
      });
  if (!st.is_ok()) return st;
  std::stable_sort(census.storages.begin(), census.storages.end(),
                   [](const TensorStorage& a, const TensorStorage& b) { return a.bytes > b.bytes; });
  return census;
}

namespace {

// The main thread's kernel tid: from its thread state (3.11+), else the process's first thread's.
pid_t main_thread_tid(unsigned long ident) {
  const Result<layout::InterpreterReader>& reader = this_interpreter();
  if (reader.is_ok()) {
    layout::GilFreeLimits limits;
    limits.max_frames = 1;
    Result<layout::GilFreeSnapshot> snapshot = reader->stacks(limits);
    if (snapshot.is_ok()) {
      for (const layout::RawThread& t : snapshot->threads) {
        if (t.thread_id == ident && t.native_thread_id > 0) return static_cast<pid_t>(t.native_thread_id);
      }
    }
  }
  return ::getpid();
}

}  // namespace

bool main_thread_parked_outside_torch(const CApi& api, std::string* where) {
  static constexpr const char* kWaits[] = {"selectors.py", "threading.py",  "queue.py",
                                           "socket.py",    "subprocess.py", "multiprocessing/connection.py"};
  const unsigned long main = main_thread_ident();
  CollectionPause pause(api);  // sys._current_frames() makes the frames' objects
  Result<PyRef> current = module_function(api, "sys", "_current_frames");
  PyObject* os = TorchAccess::module_item(api, "os", nullptr);
  PyRef os_file = os != nullptr ? PyRef(api, api.PyObject_GetAttrString(os, "__file__")) : PyRef();
  PyRef frames =
      current.is_ok() ? PyRef(api, api.PyObject_CallFunctionObjArgs(current->get(), nullptr)) : PyRef();
  PyRef key(api, api.PyLong_FromLongLong(static_cast<long long>(main)));
  if (main == 0 || !frames || !os_file || !key) {
    api.PyErr_Clear();
    *where = "(its stack cannot be read)";
    return false;
  }
  PyObject* frame = nullptr;  // borrowed from frames
  long pos = 0;
  PyObject* k = nullptr;
  PyObject* v = nullptr;
  while (frame == nullptr && api.PyDict_Next(frames.get(), &pos, &k, &v) != 0) {
    if (api.PyLong_AsLongLong(k) == static_cast<long long>(main)) frame = v;
  }
  api.PyErr_Clear();
  if (frame == nullptr) {
    *where = "(it has no Python frame)";
    return false;
  }
  PyRef code(api, api.PyObject_GetAttrString(frame, "f_code"));
  const std::string file = code ? str_attr(api, code.get(), "co_filename") : "";
  const std::string function = code ? str_attr(api, code.get(), "co_name") : "";
  api.PyErr_Clear();
  const std::string os_path = utf8(api, os_file.get());
  const std::string stdlib = os_path.substr(0, os_path.rfind('/') + 1);  // ".../lib/python3.X/"
  const std::string activity = thread_activity(0, main_thread_tid(main));
  *where = "in " + function + " (" + file + ")" + (activity.empty() ? "" : ", " + activity);
  const bool wait_site = !stdlib.empty() && std::any_of(std::begin(kWaits), std::end(kWaits),
                                                        [&](const char* w) { return file == stdlib + w; });
  return wait_site && activity.starts_with("sleeping in ");
}

}  // namespace probing::python
