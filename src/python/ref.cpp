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
  }
  return text;
}

std::string utf8(const CApi& api, PyObject* str) {
  long size = 0;
  const char* data = api.PyUnicode_AsUTF8AndSize(str, &size);
  if (data == nullptr) {
    api.PyErr_Clear();
    return {};
  }
  return {data, static_cast<size_t>(size)};
}

Result<PyRef> run_embedded_source(const CApi& api, const char* source, const char* module_name) {
  PyRef ns(api, api.PyDict_New());
  PyRef builtins(api, api.PyImport_ImportModule("builtins"));
  PyRef name(api, api.PyUnicode_FromStringAndSize(module_name, static_cast<long>(std::char_traits<char>::length(module_name))));
  if (!ns || !builtins || !name) return Status(Code::kInternal, fetch_error_text(api));
  if (api.PyDict_SetItemString(ns.get(), "__builtins__", builtins.get()) != 0 ||
      api.PyDict_SetItemString(ns.get(), "__name__", name.get()) != 0) {
    return Status(Code::kInternal, fetch_error_text(api));
  }
  PyRef done(api, api.PyRun_StringFlags(source, kPyFileInput, ns.get(), ns.get(), nullptr));
  if (!done) return Status(Code::kInternal, fetch_error_text(api));
  return ns;
}

}  // namespace probing::python
