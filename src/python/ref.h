// PyRef owns one reference to a Python object. REQUIRES: the GIL is held whenever a PyRef that
// holds an object is reset or destroyed.
#pragma once

#include <string>
#include <utility>

#include "python/capi.h"

namespace probing::python {

class PyRef {
 public:
  PyRef() = default;
  // Takes ownership of a new reference (may be null).
  PyRef(const CApi& api, PyObject* owned) : api_(&api), obj_(owned) {}
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  PyRef(PyRef&& o) noexcept : api_(o.api_), obj_(std::exchange(o.obj_, nullptr)) {}
  PyRef& operator=(PyRef&& o) noexcept {
    if (this != &o) {
      reset();
      api_ = o.api_;
      obj_ = std::exchange(o.obj_, nullptr);
    }
    return *this;
  }
  ~PyRef() { reset(); }

  // A new reference to a borrowed object.
  static PyRef borrow(const CApi& api, PyObject* borrowed) {
    if (borrowed != nullptr) api.Py_IncRef(borrowed);
    return {api, borrowed};
  }

  PyObject* get() const noexcept { return obj_; }
  // Hands the reference over to the caller (for a function that returns or steals it).
  PyObject* release() noexcept { return std::exchange(obj_, nullptr); }
  explicit operator bool() const noexcept { return obj_ != nullptr; }
  // Without the GIL (a worker unwound by CPython's pthread_exit at interpreter exit) the
  // reference is leaked rather than touched, and so is any reference dropped while the
  // interpreter finalizes: before 3.12, PyGILState_Check answers 1 on every thread once
  // finalization has deleted its thread-state key, and a decref then (a container's dealloc
  // asks for the thread state) aborts the host. The key is deleted only after the finalizing
  // flag is set, and the flag stays set, so asking in this order cannot miss it.
  void reset() noexcept {
    if (obj_ == nullptr) return;
    PyObject* obj = std::exchange(obj_, nullptr);
    if (api_->PyGILState_Check() && !api_->is_finalizing()) api_->Py_DecRef(obj);
  }

 private:
  const CApi* api_ = nullptr;
  PyObject* obj_ = nullptr;
};

// Fetches and clears the pending Python error; returns "Type: message" text (or a fallback).
// REQUIRES: GIL held.
std::string fetch_error_text(const CApi& api);

// UTF-8 text of a str object; empty for null or on error (cleared). REQUIRES: GIL held.
std::string utf8(const CApi& api, PyObject* str);

// Runs embedded Python `source` in a new private namespace (the dict of a new module named
// `module_name`, not in sys.modules, which the namespace holds as __probing_module__) and returns
// that namespace. REQUIRES: GIL held.
Result<PyRef> run_embedded_source(const CApi& api, const char* source, const char* module_name);

}  // namespace probing::python
