// The CPython API, resolved at run time. probing never links against libpython and never
// includes Python.h: one build serves CPython 3.9-3.13 whether libpython is a shared library or
// linked into the executable. Only functions that exist, with the same signature, in every
// supported version are listed here; version differences live in compat.h.
#pragma once

#include <string>

#include "core/status.h"
#include "layout/version.h"

namespace probing::python {

// Opaque: the agent never looks inside a PyObject through these declarations.
struct PyObject;
using PyGILStateState = int;  // PyGILState_STATE is an int-sized enum in every version

// CPython's PyMethodDef, whose layout is part of the stable ABI, and its calling conventions.
struct MethodDef {
  const char* name;
  void* function;
  int flags;
  const char* doc;
};
constexpr int kMethVarargs = 0x0001;
constexpr int kMethKeywords = 0x0002;
constexpr int kMethNoArgs = 0x0004;
constexpr int kMethO = 0x0008;
constexpr int kMethFastcall = 0x0080;

// Start symbols of PyRun_StringFlags.
constexpr int kPyFileInput = 257;
constexpr int kPyEvalInput = 258;

struct CApi {
  int (*Py_IsInitialized)();
  const char* (*Py_GetVersion)();
  PyGILStateState (*PyGILState_Ensure)();
  void (*PyGILState_Release)(PyGILStateState);
  int (*PyGILState_Check)();
  unsigned long (*PyThread_get_thread_ident)();
  int (*PyThreadState_SetAsyncExc)(unsigned long, PyObject*);
  int (*Py_AddPendingCall)(int (*)(void*), void*);  // use add_pending_call_to_main() instead
  void* (*PyEval_SaveThread)();                     // returns the PyThreadState*
  void (*PyEval_RestoreThread)(void*);
  int (*is_finalizing)();  // Py_IsFinalizing (3.13+) or _Py_IsFinalizing (3.9-3.12)

  PyObject* (*PyRun_StringFlags)(const char*, int, PyObject*, PyObject*, void*);
  PyObject* (*PyImport_ImportModule)(const char*);
  PyObject* (*PyModule_GetDict)(PyObject*);  // borrowed
  PyObject* (*PyDict_New)();
  PyObject* (*PyDict_GetItemString)(PyObject*, const char*);  // borrowed
  int (*PyDict_SetItemString)(PyObject*, const char*, PyObject*);
  PyObject* (*PyUnicode_FromStringAndSize)(const char*, long);
  const char* (*PyUnicode_AsUTF8AndSize)(PyObject*, long*);
  PyObject* (*PyLong_FromLongLong)(long long);
  PyObject* (*PyFloat_FromDouble)(double);
  PyObject* (*PyObject_CallFunctionObjArgs)(PyObject*, ...);
  PyObject* (*PyObject_Str)(PyObject*);
  PyObject* (*PyObject_GetAttrString)(PyObject*, const char*);
  int (*PyObject_IsTrue)(PyObject*);
  PyObject* (*PyList_New)(long);
  long (*PyList_Size)(PyObject*);
  PyObject* (*PyList_GetItem)(PyObject*, long);  // borrowed
  int (*PyList_Append)(PyObject*, PyObject*);
  PyObject* (*PySequence_List)(PyObject*);  // list(iterable)
  unsigned long (*PyType_GetFlags)(void* type);
  void (*Py_IncRef)(PyObject*);
  void (*Py_DecRef)(PyObject*);
  PyObject* (*PyErr_Occurred)();  // borrowed
  void (*PyErr_Fetch)(PyObject**, PyObject**, PyObject**);
  void (*PyErr_Clear)();
  void (*PyErr_Restore)(PyObject*, PyObject*, PyObject*);  // steals the three references
  PyObject* (*PyImport_GetModule)(PyObject* name);         // sys.modules[name] or null; never imports

  // For the native functions the agent hands to Python code (probing.table().append).
  PyObject* (*PyCFunction_NewEx)(void* method_def, PyObject* self, PyObject* module);
  PyObject* (*PyCapsule_New)(void* pointer, const char* name, void (*destructor)(PyObject*));
  void* (*PyCapsule_GetPointer)(PyObject* capsule, const char* name);
  int (*PyDict_Next)(PyObject* dict, long* pos, PyObject** key, PyObject** value);  // borrowed
  long long (*PyLong_AsLongLong)(PyObject*);
  double (*PyFloat_AsDouble)(PyObject*);
  int (*PyType_IsSubtype)(void* type, void* base);
  PyObject* (*PyObject_GenericGetDict)(PyObject*,
                                       void* context);  // an instance's __dict__, no code of its run
  void (*PyErr_SetString)(PyObject* type, const char* message);
  // For the torch tracer's hooks and wrappers (torch/hooks.cpp).
  PyObject* (*PyObject_Call)(PyObject* callable, PyObject* args, PyObject* kwargs);
  PyObject* (*PyWeakref_NewRef)(PyObject* object, PyObject* callback);
  PyObject* (*PyInstanceMethod_New)(PyObject* function);  // binds as a method when set on a class
  int (*PyErr_ExceptionMatches)(PyObject* type);
  // Type objects and singletons (addresses of the interpreter's own objects).
  void* PyLong_Type;
  void* PyFloat_Type;
  void* PyUnicode_Type;
  void* PyBool_Type;
  void* PyDict_Type;
  void* PyFrame_Type;
  void* PyBaseObject_Type;  // `object`
  PyObject* None;
  PyObject* exc_type_error;   // *PyExc_TypeError
  PyObject* exc_value_error;  // *PyExc_ValueError
  PyObject* exc_exception;    // *PyExc_Exception
  bool free_threaded;         // a Py_GIL_DISABLED build (layout/version.h: kFreeThreadedSymbol is exported)
  // 3.9-3.11's _PyEval_AddPendingCall(interp, func, arg) and PyInterpreterState_Main(); either may
  // be null (not exported).
  int (*add_pending_call_3)(void* interp, int (*)(void*), void*);
  void* (*PyInterpreterState_Main)();
  // 3.10+'s PyGC_Disable() and PyGC_Enable(), each returning whether collection was on; null before.
  int (*PyGC_Disable)();
  int (*PyGC_Enable)();
  // For probes on 3.9-3.11 (probes/probes.cpp): a thread's trace function, set on any thread with
  // the GIL held (_PyEval_SetTrace, exported there), the threads of an interpreter, and a frame's
  // code and line. Null where not exported.
  int (*PyEval_SetTraceOf)(void* tstate, int (*func)(PyObject*, PyObject*, int, PyObject*), PyObject* obj);
  void* (*PyInterpreterState_ThreadHead)(void* interp);
  void* (*PyThreadState_Next)(void* tstate);
  void* (*PyThreadState_Get)();
  PyObject* (*PyFrame_GetCode)(PyObject* frame);  // a new reference
  int (*PyFrame_GetLineNumber)(PyObject* frame);
};

// Py_TYPE(obj): the type pointer follows the reference count in every supported (default,
// GIL-ful) build of 3.9-3.13.
inline void* type_of(PyObject* obj) {
  return *reinterpret_cast<void**>(reinterpret_cast<char*>(obj) + sizeof(long));
}

// Resolves the API from the running process. kUnavailable when the process is not Python
// (no Py_IsInitialized anywhere); kUnsupported when a required function is missing.
// The result lives for the life of the process.
Result<const CApi*> load_capi();

// The interpreter's version, from Py_GetVersion(), read once and kept. Once: CPython formats that
// text into a static buffer when first asked (3.13 marks it done before writing it), so two
// threads asking at once can read it half written.
Result<layout::PythonVersion> interpreter_version(const CApi& api);

// Queues `func(arg)` to run on the main thread with the GIL, between two bytecodes, from a thread
// that holds no thread state; -1 when it cannot be queued (the queue is full, or no safe way).
// Not Py_AddPendingCall on 3.9-3.11: that picks the interpreter through the thread state of
// whichever thread holds the GIL at that moment, which an agent request's thread frees when it
// lets the GIL go, so a caller without the GIL read freed memory (and crashed when it had been
// reused). 3.12+'s Py_AddPendingCall names the main interpreter itself.
int add_pending_call_to_main(const CApi& api, int (*func)(void*), void* arg);

// Whether this process has a CPython runtime loaded at all (cheap; no resolution of the rest).
bool process_has_python() noexcept;

}  // namespace probing::python
