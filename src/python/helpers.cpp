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
  constexpr size_t kMaxArgs = 8;
  struct Outcome {
    std::string text;
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
    PyRef text(api,
               api.PyObject_CallFunctionObjArgs(fn, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]));
    if (!text) {
      outcome->error = fetch_error_text(api);
      return;
    }
    outcome->text = utf8(api, text.get());
  };
  auto interrupt_type = [helper](const CApi& api) { return helper_attribute(api, helper, "ProbingTimeout"); };
  PythonExecutor::Limits limits = PythonExecutor::make_limits(call.gil_timeout_s, call.run_timeout_s);
  Status st = runtime.executor().run(work, limits, interrupt_type, call.interrupted, call.tag);
  if (!st.is_ok()) return st;
  if (!outcome->error.empty()) return Status(Code::kInternal, outcome->error);
  nlohmann::json j = nlohmann::json::parse(outcome->text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return Status(Code::kInternal, std::string(helper.module_name) + "." + name + " gave no JSON");
  return j;
}

}  // namespace probing::python
