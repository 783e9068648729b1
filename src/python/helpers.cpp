#include "python/helpers.h"

#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "python/collection.h"
#include "python/ref.h"

namespace probing::python {
namespace {

// Compiled namespaces by module name. Only touched with the GIL held; a helper's first load runs
// Python (which lets the GIL go now and then), so two threads may load one at once: the first to
// finish is kept.
std::map<std::string, PyRef>& namespaces() {
  static auto* m = new std::map<std::string, PyRef>;  // never freed: see PyRef
  return *m;
}

PyRef to_python(const CApi& api, const nlohmann::json& v);
Result<nlohmann::json> from_python(const CApi& api, PyObject* v, int depth = 0);

}  // namespace

Result<PyObject*> helper_namespace(const CApi& api, const HelperSource& helper) {
  auto& all = namespaces();
  auto it = all.find(helper.module_name);
  if (it == all.end()) {
    Result<PyRef> loaded = run_embedded_source(api, helper.source, helper.module_name);
    if (!loaded.is_ok()) return loaded.status().with_context(std::string("loading ") + helper.module_name);
    for (MethodDef* const* def = helper.natives; def != nullptr && *def != nullptr; ++def) {
      PyRef fn(api, api.PyCFunction_NewEx(*def, nullptr, nullptr));
      if (!fn || api.PyDict_SetItemString(loaded->get(), (*def)->name, fn.get()) != 0) {
        return Status(Code::kInternal, std::string("loading ") + helper.module_name + ": its native " +
                                           (*def)->name + ": " + fetch_error_text(api));
      }
    }
    it = all.emplace(helper.module_name, std::move(loaded).value()).first;
  }
  return it->second.get();
}

namespace {

PyRef to_python(const CApi& api, const nlohmann::json& v) {
  if (v.is_number_integer()) return {api, api.PyLong_FromLongLong(v.get<long long>())};
  if (v.is_number()) return {api, api.PyFloat_FromDouble(v.get<double>())};
  if (v.is_boolean()) return {api, api.PyLong_FromLongLong(v.get<bool>() ? 1 : 0)};
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    return {api, api.PyUnicode_FromStringAndSize(s.data(), static_cast<long>(s.size()))};
  }
  return PyRef::borrow(api, api.None);
}

// A helper's plain result read natively, so that a helper needs no `json` (whose import, with
// `re`'s, was most of a first backtrace's cost in a process that had neither): dicts with str
// keys, lists, tuples, str, int, float, bool and None, nested at most 64 deep. Anything else is
// an error naming its type: a repr is the helper's job. Scalars and dicts must be of the exact
// built-in type; lists and tuples are told by CPython's Py_TPFLAGS_*_SUBCLASS bits (the same in
// every supported version), so a helper must return plain ones (the helpers return nothing else).
Result<nlohmann::json> from_python(const CApi& api, PyObject* v, int depth) {
  constexpr unsigned long kList = 1UL << 25, kTuple = 1UL << 26;
  constexpr int kMaxDepth = 64;
  if (depth > kMaxDepth) return Status(Code::kInternal, "the helper's result nests too deep");
  void* type = type_of(v);
  if (v == api.None) return nlohmann::json(nullptr);
  if (type == api.PyBool_Type) return nlohmann::json(api.PyObject_IsTrue(v) == 1);
  if (type == api.PyLong_Type) {
    long long n = api.PyLong_AsLongLong(v);
    if (n == -1 && api.PyErr_Occurred() != nullptr) {
      api.PyErr_Clear();  // past 64 bits: as its decimal text, as a client could read it
      PyRef text(api, api.PyObject_Str(v));
      if (!text) return Status(Code::kInternal, fetch_error_text(api));
      std::string digits = utf8(api, text.get());
      nlohmann::json big = nlohmann::json::parse(digits, nullptr, /*allow_exceptions=*/false);
      return big.is_discarded() ? nlohmann::json(digits) : big;
    }
    // As the JSON parser reads numbers: a non-negative one is unsigned (callers check that).
    return n >= 0 ? nlohmann::json(static_cast<unsigned long long>(n)) : nlohmann::json(n);
  }
  if (type == api.PyFloat_Type) return nlohmann::json(api.PyFloat_AsDouble(v));
  if (type == api.PyUnicode_Type) {
    long size = 0;
    const char* s = api.PyUnicode_AsUTF8AndSize(v, &size);
    if (s == nullptr) {  // a lone surrogate (a file name read with surrogateescape)
      api.PyErr_Clear();
      return nlohmann::json("<text that is not UTF-8>");
    }
    return nlohmann::json(std::string(s, static_cast<size_t>(size)));
  }
  if (type == api.PyDict_Type) {
    nlohmann::json out = nlohmann::json::object();
    long pos = 0;
    PyObject *key = nullptr, *value = nullptr;
    while (api.PyDict_Next(v, &pos, &key, &value)) {
      if (type_of(key) != api.PyUnicode_Type)
        return Status(Code::kInternal, "a helper's dict key is not a str");
      long size = 0;
      const char* k = api.PyUnicode_AsUTF8AndSize(key, &size);
      if (k == nullptr) return Status(Code::kInternal, fetch_error_text(api));
      Result<nlohmann::json> item = from_python(api, value, depth + 1);
      if (!item.is_ok()) return item.status();
      out[std::string(k, static_cast<size_t>(size))] = std::move(item).value();
    }
    return out;
  }
  unsigned long flags = api.PyType_GetFlags(type);
  if ((flags & kTuple) != 0) {
    PyRef list(api, api.PySequence_List(v));
    if (!list) return Status(Code::kInternal, fetch_error_text(api));
    return from_python(api, list.get(), depth);
  }
  if ((flags & kList) != 0) {
    nlohmann::json out = nlohmann::json::array();
    for (long i = 0, n = api.PyList_Size(v); i < n; ++i) {
      Result<nlohmann::json> item = from_python(api, api.PyList_GetItem(v, i), depth + 1);
      if (!item.is_ok()) return item.status();
      out.push_back(std::move(item).value());
    }
    return out;
  }
  PyRef name(api, api.PyObject_GetAttrString(reinterpret_cast<PyObject*>(type), "__name__"));
  std::string type_name = name ? utf8(api, name.get()) : "?";
  if (!name) api.PyErr_Clear();
  return Status(Code::kInternal, "a helper returned a " + type_name + ", which is not plain data");
}

}  // namespace

PyObject* helper_attribute(const CApi& api, const HelperSource& helper, const char* name) {
  // Never loads the helper: that runs its imports, which wait on import locks with the GIL let go,
  // and an executor's interrupt (the caller) holds its job's lock meanwhile.
  auto it = namespaces().find(helper.module_name);
  return it != namespaces().end() ? api.PyDict_GetItemString(it->second.get(), name) : nullptr;
}

Result<nlohmann::json> call_helper(PythonRuntime& runtime, const HelperSource& helper, const char* function,
                                   const nlohmann::json& args, const HelperCall& call) {
  MakeArgs make_args = [args](const CApi& api) -> Result<std::vector<PyRef>> {
    std::vector<PyRef> refs;
    for (const auto& a : args) {
      refs.push_back(to_python(api, a));
      if (!refs.back()) return Status(Code::kInternal, "preparing the call: " + fetch_error_text(api));
    }
    return refs;
  };
  return call_helper(runtime, helper, function, std::move(make_args), call);
}

Result<nlohmann::json> call_helper(PythonRuntime& runtime, const HelperSource& helper, const char* function,
                                   MakeArgs make_args, const HelperCall& call) {
  constexpr size_t kMaxArgs = 10;
  struct Outcome {
    bool is_text = false;  // a str result, JSON text; any other is read by from_python
    std::string text;
    nlohmann::json value;
    std::string error;
  };
  auto outcome = std::make_shared<Outcome>();
  std::string name = function;
  auto work = [outcome, helper, name, make_args = std::move(make_args),
               reads_other_threads = call.reads_other_threads](const CApi& api) {
    std::optional<CollectionPause> pause;
    if (reads_other_threads) pause.emplace(api);
    Result<PyObject*> ns = helper_namespace(api, helper);
    if (!ns.is_ok()) {
      outcome->error = ns.status().message();
      return;
    }
    PyObject* fn = api.PyDict_GetItemString(*ns, name.c_str());  // borrowed
    if (fn == nullptr) {
      outcome->error = std::string(helper.module_name) + " has no " + name;
      return;
    }
    Result<std::vector<PyRef>> refs = make_args(api);
    if (!refs.is_ok()) {
      outcome->error = refs.status().message();
      return;
    }
    if (refs->size() > kMaxArgs) {
      outcome->error = "too many arguments";
      return;
    }
    PyObject* p[kMaxArgs + 1] = {};  // the first nullptr ends the argument list
    for (size_t i = 0; i < refs->size(); ++i) p[i] = (*refs)[i].get();
    PyRef result(api, api.PyObject_CallFunctionObjArgs(fn, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                                                       p[8], p[9], p[10]));
    if (!result) {
      outcome->error = fetch_error_text(api);
      return;
    }
    if (type_of(result.get()) == api.PyUnicode_Type) {
      outcome->is_text = true;
      outcome->text = utf8(api, result.get());
      return;
    }
    Result<nlohmann::json> value = from_python(api, result.get());
    if (value.is_ok()) {
      outcome->value = std::move(value).value();
    } else {
      outcome->error = value.status().message();
    }
  };
  auto interrupt_type = [helper](const CApi& api) { return helper_attribute(api, helper, "ProbingTimeout"); };
  PythonExecutor::Limits limits = PythonExecutor::make_limits(call.gil_timeout_s, call.run_timeout_s);
  Status st = runtime.executor().run(work, limits, interrupt_type, call.interrupted, call.tag);
  if (!st.is_ok()) return st;
  if (!outcome->error.empty()) return Status(Code::kInternal, outcome->error);
  if (!outcome->is_text) return std::move(outcome->value);
  nlohmann::json j = nlohmann::json::parse(outcome->text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return Status(Code::kInternal, std::string(helper.module_name) + "." + name + " gave no JSON");
  return j;
}

}  // namespace probing::python
