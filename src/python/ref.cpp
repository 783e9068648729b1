#include "python/ref.h"

namespace probing::python {

std::string fetch_error_text(const CApi& api) {
  if (api.PyErr_Occurred() == nullptr) return "unknown Python error";
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  api.PyErr_Fetch(&type, &value, &tb);
  PyRef t(api, type), v(api, value), b(api, tb);
  std::string text = "Python error";
  if (v) {
    PyRef s(api, api.PyObject_Str(v.get()));
    if (s) text = utf8(api, s.get());
    api.PyErr_Clear();
  } else if (t) {  // raised as a bare class (an interrupt set with PyThreadState_SetAsyncExc): its name
    PyRef name(api, api.PyObject_GetAttrString(t.get(), "__name__"));
    if (name) text = utf8(api, name.get());
    api.PyErr_Clear();
  }
  return text;
}

std::string utf8(const CApi& api, PyObject* str) {
  long size = 0;
  const char* data = str != nullptr ? api.PyUnicode_AsUTF8AndSize(str, &size) : nullptr;
  if (data == nullptr) {
    api.PyErr_Clear();
    return {};
  }
  return {data, static_cast<size_t>(size)};
}

Result<PyRef> run_embedded_source(const CApi& api, const char* source, const char* module_name) {
  // The globals are a module's own dict, the module kept in it as __probing_module__: a caller
  // that must be found by import (TorchDynamo imports a function's __name__ to read its globals)
  // can register it in sys.modules. Nothing here does.
  PyRef builtins(api, api.PyImport_ImportModule("builtins"));
  PyRef name(api, api.PyUnicode_FromStringAndSize(
                      module_name, static_cast<long>(std::char_traits<char>::length(module_name))));
  if (!builtins || !name) return Status(Code::kInternal, fetch_error_text(api));
  PyRef module_type(api, api.PyObject_GetAttrString(builtins.get(), "__class__"));
  if (!module_type) return Status(Code::kInternal, fetch_error_text(api));
  PyRef module(api, api.PyObject_CallFunctionObjArgs(module_type.get(), name.get(), nullptr));
  if (!module) return Status(Code::kInternal, fetch_error_text(api));
  PyRef ns = PyRef::borrow(api, api.PyModule_GetDict(module.get()));
  if (!ns || api.PyDict_SetItemString(ns.get(), "__builtins__", builtins.get()) != 0 ||
      api.PyDict_SetItemString(ns.get(), "__probing_module__", module.get()) != 0) {
    return Status(Code::kInternal, fetch_error_text(api));
  }
  // Compiled as "<probing NAME>", so that its frames say whose they are in a traceback or a
  // backtrace of the program (the torch tracer's wrappers run on the program's threads).
  const std::string file = std::string("<probing ") + module_name + ">";
  auto text = [&api](const char* t, size_t n) {
    return PyRef(api, api.PyUnicode_FromStringAndSize(t, static_cast<long>(n)));
  };
  PyRef compile(api, api.PyObject_GetAttrString(builtins.get(), "compile"));
  PyRef exec(api, api.PyObject_GetAttrString(builtins.get(), "exec"));
  PyRef src = text(source, std::char_traits<char>::length(source));
  PyRef filename = text(file.data(), file.size());
  PyRef mode = text("exec", 4);
  if (!compile || !exec || !src || !filename || !mode) return Status(Code::kInternal, fetch_error_text(api));
  PyRef code(api,
             api.PyObject_CallFunctionObjArgs(compile.get(), src.get(), filename.get(), mode.get(), nullptr));
  PyRef done = code ? PyRef(api, api.PyObject_CallFunctionObjArgs(exec.get(), code.get(), ns.get(), nullptr))
                    : PyRef();
  if (!done) return Status(Code::kInternal, fetch_error_text(api));
  return ns;
}

}  // namespace probing::python
