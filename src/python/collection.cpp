#include "python/collection.h"

namespace probing::python {
namespace {

// gc.<name>() as a truth value: 1, 0, or -1 on an error (cleared).
int call_gc(const CApi& api, PyObject* gc, const char* name) {
  PyRef fn(api, api.PyObject_GetAttrString(gc, name));
  PyRef r = fn ? PyRef(api, api.PyObject_CallFunctionObjArgs(fn.get(), nullptr)) : PyRef();
  int truth = r ? api.PyObject_IsTrue(r.get()) : -1;
  if (truth < 0) api.PyErr_Clear();
  return truth;
}

}  // namespace

CollectionPause::CollectionPause(const CApi& api) : api_(api) {
  if (api.PyGC_Disable != nullptr) {  // 3.10+
    was_enabled_ = api.PyGC_Disable() == 1;
    return;
  }
  PyRef gc(api, api.PyImport_ImportModule("gc"));  // built in: no import hook's code runs
  enable_ = gc ? PyRef(api, api.PyObject_GetAttrString(gc.get(), "enable")) : PyRef();
  if (!enable_) {
    api.PyErr_Clear();
    return;
  }
  was_enabled_ = call_gc(api, gc.get(), "isenabled") == 1;
  if (was_enabled_) call_gc(api, gc.get(), "disable");
}

CollectionPause::~CollectionPause() {
  if (!was_enabled_) return;
  if (api_.PyGC_Enable != nullptr) {
    api_.PyGC_Enable();
  } else if (enable_) {
    PyRef r(api_, api_.PyObject_CallFunctionObjArgs(enable_.get(), nullptr));
    if (!r) api_.PyErr_Clear();
  }
}

}  // namespace probing::python
