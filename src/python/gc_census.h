// The objects the garbage collector tracks, counted by type (python.objects).
#pragma once

#include <vector>

#include "core/status.h"
#include "python/ref.h"

namespace probing::python {

struct TypeCount {
  PyRef type;
  long long count = 0;
  long long size_bytes = 0;  // 0 unless sizes were asked for
};

struct Census {
  std::vector<TypeCount> types;  // in the order first met
  long long seen = 0;            // objects counted
  long long total = 0;           // objects tracked when the census began
};

// Counts every object gc.get_objects() returns, by type, for at most `budget_s` seconds; with
// `sizes`, adds their shallow sizes: sys.getsizeof for instances of built-in types, whose
// __sizeof__ is C code, and object.__sizeof__ (the instance's own block) for instances of classes,
// whose __sizeof__ could be Python code.
//
// While it holds references to the objects it runs no Python code and lets no other thread run
// any: automatic collection is off for that while (as it was found after), and nothing it calls
// releases the GIL. Holding an extra reference across a GIL switch is not harmless: a PyTorch
// tensor whose Python object the C++ tensor has taken back (refcount 1, owned by C++) warns
// "Deallocating Tensor that still has live PyObject references" and is stubbed out if C++ frees it
// meanwhile. Threads running without the GIL free them too: a PyTorch backward pass does, so while
// a thread is in one the census is refused (kUnavailable, saying kInBackward), not taken.
// REQUIRES: GIL held.
Result<Census> take_census(const CApi& api, double budget_s, bool sizes);

// What take_census's refusal during a backward pass says, to be told apart from other failures.
inline constexpr const char* kInBackward = "a thread is in a PyTorch backward pass";

}  // namespace probing::python
