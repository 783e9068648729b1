#include "python/capi.h"

#include <dlfcn.h>
#include <link.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "layout/version.h"

namespace probing::python {
namespace {

// Finds a libpython that was loaded RTLD_LOCAL (an application embedding Python through
// dlopen), whose symbols RTLD_DEFAULT cannot see. Returns a handle or nullptr.
void* find_local_libpython() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        const char* name = info->dlpi_name;
        if (name != nullptr && std::strstr(name, "libpython3") != nullptr) {
          *static_cast<std::string*>(data) = name;
          return 1;
        }
        return 0;
      },
      &found);
  if (found.empty()) return nullptr;
  return dlopen(found.c_str(), RTLD_LAZY | RTLD_NOLOAD);
}

void* lookup(void* handle, const char* name) {
  void* p = dlsym(RTLD_DEFAULT, name);
  if (p == nullptr && handle != nullptr) p = dlsym(handle, name);
  return p;
}

template <typename F>
bool resolve(void* handle, const char* name, F& out, std::string& missing) {
  out = reinterpret_cast<F>(lookup(handle, name));
  if (out == nullptr) {
    if (!missing.empty()) missing += ", ";
    missing += name;
  }
  return out != nullptr;
}

Result<const CApi*> load_once() {
  void* handle = nullptr;
  if (dlsym(RTLD_DEFAULT, "Py_IsInitialized") == nullptr) {
    handle = find_local_libpython();
    if (handle == nullptr || dlsym(handle, "Py_IsInitialized") == nullptr) {
      return Status(Code::kUnavailable, "this process has no CPython runtime");
    }
  }
  auto* api = new CApi{};  // lives for the life of the process
  std::string missing;
#define PROBING_RESOLVE(name) resolve(handle, #name, api->name, missing)
  PROBING_RESOLVE(Py_IsInitialized);
  PROBING_RESOLVE(Py_GetVersion);
  PROBING_RESOLVE(PyGILState_Ensure);
  PROBING_RESOLVE(PyGILState_Release);
  PROBING_RESOLVE(PyGILState_Check);
  PROBING_RESOLVE(PyThread_get_thread_ident);
  PROBING_RESOLVE(PyThreadState_SetAsyncExc);
  PROBING_RESOLVE(Py_AddPendingCall);
  PROBING_RESOLVE(PyEval_SaveThread);
  PROBING_RESOLVE(PyEval_RestoreThread);
  PROBING_RESOLVE(PyRun_StringFlags);
  PROBING_RESOLVE(PyImport_ImportModule);
  PROBING_RESOLVE(PyModule_GetDict);
  PROBING_RESOLVE(PyDict_New);
  PROBING_RESOLVE(PyDict_GetItemString);
  PROBING_RESOLVE(PyDict_SetItemString);
  PROBING_RESOLVE(PyUnicode_FromStringAndSize);
  PROBING_RESOLVE(PyUnicode_AsUTF8AndSize);
  PROBING_RESOLVE(PyLong_FromLongLong);
  PROBING_RESOLVE(PyFloat_FromDouble);
  PROBING_RESOLVE(PyObject_CallFunctionObjArgs);
  PROBING_RESOLVE(PyObject_Str);
  PROBING_RESOLVE(PyObject_GetAttrString);
  PROBING_RESOLVE(PyObject_IsTrue);
  PROBING_RESOLVE(PyList_New);
  PROBING_RESOLVE(PyList_Size);
  PROBING_RESOLVE(PyList_GetItem);
  PROBING_RESOLVE(PyList_Append);
  PROBING_RESOLVE(PySequence_List);
  PROBING_RESOLVE(PyType_GetFlags);
  PROBING_RESOLVE(Py_IncRef);
  PROBING_RESOLVE(Py_DecRef);
  PROBING_RESOLVE(PyErr_Occurred);
  PROBING_RESOLVE(PyErr_Fetch);
  PROBING_RESOLVE(PyErr_Clear);
  PROBING_RESOLVE(PyErr_Restore);
  PROBING_RESOLVE(PyImport_GetModule);
  PROBING_RESOLVE(PyCFunction_NewEx);
  PROBING_RESOLVE(PyCapsule_New);
  PROBING_RESOLVE(PyCapsule_GetPointer);
  PROBING_RESOLVE(PyDict_Next);
  PROBING_RESOLVE(PyLong_AsLongLong);
  PROBING_RESOLVE(PyFloat_AsDouble);
  PROBING_RESOLVE(PyType_IsSubtype);
  PROBING_RESOLVE(PyObject_GenericGetDict);
  PROBING_RESOLVE(PyErr_SetString);
  PROBING_RESOLVE(PyObject_Call);
  PROBING_RESOLVE(PyWeakref_NewRef);
  PROBING_RESOLVE(PyInstanceMethod_New);
  PROBING_RESOLVE(PyErr_ExceptionMatches);
  PROBING_RESOLVE(PyLong_Type);
  PROBING_RESOLVE(PyFloat_Type);
  PROBING_RESOLVE(PyUnicode_Type);
  PROBING_RESOLVE(PyBool_Type);
  PROBING_RESOLVE(PyDict_Type);
  PROBING_RESOLVE(PyFrame_Type);
  PROBING_RESOLVE(PyBaseObject_Type);
#undef PROBING_RESOLVE
  api->None = reinterpret_cast<PyObject*>(lookup(handle, "_Py_NoneStruct"));
  auto exception = [&](const char* name) -> PyObject* {
    auto* slot = reinterpret_cast<PyObject**>(lookup(handle, name));
    if (slot == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
    return slot == nullptr ? nullptr : *slot;
  };
  if (api->None == nullptr) missing += std::string(missing.empty() ? "" : ", ") + "_Py_NoneStruct";
  api->exc_type_error = exception("PyExc_TypeError");
  api->exc_value_error = exception("PyExc_ValueError");
  api->exc_exception = exception("PyExc_Exception");
  api->free_threaded = lookup(handle, layout::kFreeThreadedSymbol) != nullptr;
  api->add_pending_call_3 =
      reinterpret_cast<int (*)(void*, int (*)(void*), void*)>(lookup(handle, "_PyEval_AddPendingCall"));
  api->PyInterpreterState_Main = reinterpret_cast<void* (*)()>(lookup(handle, "PyInterpreterState_Main"));
  api->PyGC_Disable = reinterpret_cast<int (*)()>(lookup(handle, "PyGC_Disable"));
  api->PyGC_Enable = reinterpret_cast<int (*)()>(lookup(handle, "PyGC_Enable"));
  api->PyEval_SetTraceOf =
      reinterpret_cast<int (*)(void*, int (*)(PyObject*, PyObject*, int, PyObject*), PyObject*)>(
          lookup(handle, "_PyEval_SetTrace"));
  api->PyInterpreterState_ThreadHead =
      reinterpret_cast<void* (*)(void*)>(lookup(handle, "PyInterpreterState_ThreadHead"));
  api->PyThreadState_Next = reinterpret_cast<void* (*)(void*)>(lookup(handle, "PyThreadState_Next"));
  api->PyThreadState_Get = reinterpret_cast<void* (*)()>(lookup(handle, "PyThreadState_Get"));
  api->PyFrame_GetCode = reinterpret_cast<PyObject* (*)(PyObject*)>(lookup(handle, "PyFrame_GetCode"));
  api->PyFrame_GetLineNumber = reinterpret_cast<int (*)(PyObject*)>(lookup(handle, "PyFrame_GetLineNumber"));
  api->is_finalizing = reinterpret_cast<int (*)()>(lookup(handle, "Py_IsFinalizing"));
  if (api->is_finalizing == nullptr) {
    api->is_finalizing = reinterpret_cast<int (*)()>(lookup(handle, "_Py_IsFinalizing"));
  }
  if (api->is_finalizing == nullptr) {
    if (!missing.empty()) missing += ", ";
    missing += "Py_IsFinalizing";
  }
  if (!missing.empty()) {
    delete api;
    return Status(Code::kUnsupported, "the CPython runtime lacks " + missing);
  }
  return static_cast<const CApi*>(api);
}

}  // namespace

Result<const CApi*> load_capi() {
  static std::once_flag once;
  static Result<const CApi*>* result = nullptr;
  std::call_once(once, [] { result = new Result<const CApi*>(load_once()); });
  return *result;
}

Result<layout::PythonVersion> interpreter_version(const CApi& api) {
  static std::once_flag once;
  static Result<layout::PythonVersion>* version = nullptr;  // never destroyed: read by agent threads at exit
  std::call_once(once, [&api] {
    Result<layout::PythonVersion> v = layout::parse_version(api.Py_GetVersion());
    // Still half written by the interpreter's own first call: read it again, a moment later.
    for (int i = 0; i < 50 && !v.is_ok(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      v = layout::parse_version(api.Py_GetVersion());
    }
    version = new Result<layout::PythonVersion>(std::move(v));
  });
  return *version;
}

int add_pending_call_to_main(const CApi& api, int (*func)(void*), void* arg) {
  Result<layout::PythonVersion> v = interpreter_version(api);
  if (!v.is_ok()) return -1;
  if (v->major > 3 || v->minor >= 12) return api.Py_AddPendingCall(func, arg);
  if (api.add_pending_call_3 == nullptr || api.PyInterpreterState_Main == nullptr) return -1;
  void* main = api.PyInterpreterState_Main();  // null once finalization has deleted it
  return main != nullptr ? api.add_pending_call_3(main, func, arg) : -1;
}

bool process_has_python() noexcept {
  if (dlsym(RTLD_DEFAULT, "Py_IsInitialized") != nullptr) return true;
  void* handle = find_local_libpython();
  return handle != nullptr && dlsym(handle, "Py_IsInitialized") != nullptr;
}

}  // namespace probing::python
