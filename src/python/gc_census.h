// The objects the garbage collector tracks, counted by type (python.objects).
#pragma once

#include <string>
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

// One storage of live tensors (python.tensors): the tensor objects that view it are folded in.
struct TensorStorage {
  long long address = 0;  // the storage's data pointer
  long long bytes = 0;    // its size
  std::string device;     // "cpu", "cuda:0", ...
  std::string shape;      // "[128, 32]", of its base tensor, else its largest view
  std::string dtype;      // "float32", of the same
  bool requires_grad = false;
  bool parameter = false;          // one of them is an nn.Parameter
  long long objects = 0;           // tensor objects on it
  std::vector<std::string> names;  // up to 3 that reach it (see take_tensor_census)
};

struct TensorCensus {
  bool torch = false;                   // torch was imported (it is never imported by the census)
  std::vector<TensorStorage> storages;  // largest first
  long long unread = 0;  // tensors not read: a subclass whose __torch_function__ runs Python, no storage
  long long seen = 0;    // objects looked at
  long long total = 0;   // objects tracked when the census began
};

// The live tensors that have a Python object, by storage, from the same walk as take_census and
// under the same rules (no Python code runs, the GIL is never let go, refused during a backward
// pass): their attributes are read through torch's own C descriptors, never a subclass's, and
// instances of subclasses with a __torch_function__ of their own are counted, not read. Tensors
// that only C++ holds (autograd's saved tensors, a DataLoader's pinned batches) are not seen.
//
// Then, for at most `names_budget_s`, the names that reach them, from dicts alone: __main__'s
// globals, modules' parameters (and their gradients), buffers and submodules, optimizers' state;
// a model or optimizer no global reaches is named by its class (MLP.encoder.0.weight).
//
// Run it on the main thread (PythonExecutor::run_on_main_thread), where no PyTorch operation of
// that thread can be changing the tensors it reads: from any other thread, the main thread's
// operations run beside it with the GIL let go, and reading a tensor they change can crash.
// REQUIRES: GIL held.
Result<TensorCensus> take_tensor_census(const CApi& api, double budget_s, double names_budget_s);

// Whether the main thread is parked, with the GIL let go, in a wait of the standard library that
// runs no PyTorch: its innermost frame is in the standard library's selectors.py (an event loop or
// server with nothing to do), threading.py, queue.py, socket.py, subprocess.py or
// multiprocessing/connection.py, and the kernel has it asleep in a system call. While this thread
// holds the GIL it cannot come back from there, so a tensor census may run here instead of on it.
// Not told apart: a C function of PyTorch that such a file calls back (a Thread target run on
// the main thread); and nothing here says what other threads run.
// `*where` says where it is: "in recv (/usr/lib/python3.11/socket.py), sleeping in recvfrom". REQUIRES: GIL
// held, not on the main thread.
bool main_thread_parked_outside_torch(const CApi& api, std::string* where);

// What take_census's refusal during a backward pass says, to be told apart from other failures.
inline constexpr const char* kInBackward = "a thread is in a PyTorch backward pass";

}  // namespace probing::python
