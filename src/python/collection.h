// Automatic garbage collection held off for a while, and why the agent needs that.
#pragma once

#include "python/ref.h"

namespace probing::python {

// Automatic collection off while it lives, and back on after if it was on before (nested ones
// leave it to the outermost). Made before anything allocates. REQUIRES: GIL held, for its whole
// life.
//
// A collection runs finalizers, which are Python code, and any allocation may start one (at once
// on 3.9-3.11, at the next bytecode on 3.12+). Two things need it held off:
// - Counting objects (gc_census.h): a finalizer would change what is being counted.
// - Reading other threads' frames (sys._current_frames(), f_back, f_locals). CPython 3.11 makes a
//   frame's Python object on the first request for it, and a collection run by that allocation
//   can let the GIL go (at a finalizer's bytecode) to the thread that owns the frame, which may
//   return from it before the object is linked to it: the object is left pointing into that
//   thread's frame stack, which the thread goes on reusing, so reading it crashes and its link
//   corrupts a later frame. On every version it keeps the program's finalizers off the agent's
//   thread, where a deadline's interrupt would stop them halfway.
// While it lives, a gc.disable() or gc.enable() of the program's own is undone at its end; it lives
// for one capture (milliseconds, at most the capture's deadline).
class CollectionPause {
 public:
  explicit CollectionPause(const CApi& api);
  ~CollectionPause();
  CollectionPause(const CollectionPause&) = delete;
  CollectionPause& operator=(const CollectionPause&) = delete;

 private:
  const CApi& api_;
  PyRef enable_;  // gc.enable, before 3.10
  bool was_enabled_ = false;
};

}  // namespace probing::python
