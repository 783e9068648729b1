#include "torch/hooks.h"

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "python/capi.h"
#include "python/crash.h"
#include "sql/column_store.h"
#include "sql/engine.h"

namespace probing::torch {
namespace {

using python::CApi;
using python::MethodDef;
using python::PyObject;
using sql::Cell;

int64_t monotonic_ns() {  // the clock of time.perf_counter_ns(), which torch_trace.py reads
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

double unix_time() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Unix time less the monotonic clock's, in seconds: a row's start in unix time from the one clock
// read its call makes. Read again at every step (and top-level call), so a change of the wall
// clock shows from the next one.
double g_wall_offset = 0;

void read_wall_offset() { g_wall_offset = unix_time() - static_cast<double>(monotonic_ns()) / 1e9; }

double wall_time(int64_t ns) { return g_wall_offset + static_cast<double>(ns) / 1e9; }

// PyWeakReference.wr_object, right after the object header in every GIL build of 3.9-3.15; Py_None
// once the referent is gone.
constexpr size_t kWeakrefReferent = 2 * sizeof(void*);

PyObject* referent(PyObject* weakref) {
  return *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(weakref) + kWeakrefReferent);
}

// A module call whose post hook has not run yet.
struct Entry {
  PyObject* module;     // a reference of ours
  int64_t start_ns;     // -1: not timed (a step not sampled, a call captured into a CUDA graph)
  double start_time;    // unix time (CUDA; on the CPU it is worked out from start_ns)
  int64_t children_ns;  // the time of its traced children (CPU)
  PyObject* cuda;       // CUDA: what _cuda_start returned (its start event, its children's rows)
  PyObject* before;     // torch.module_backward: its inputs' autograd nodes before its forward, or null
};

// The calls in progress on one thread. Every thread's stack is listed (stacks()), so that stopping
// releases the modules all of them hold; a thread that ends with entries left (a forward that
// raised) hands their references to orphans(), released at the next start, stop or step (they need
// the GIL, which a thread's end does not have).
struct ThreadStack {
  uint64_t generation = 0;  // of the install the entries belong to
  bool capturing = false;   // the top-level call is being captured into a CUDA graph
  std::vector<Entry> entries;
};

// Guards the two lists below (a thread's end runs without the GIL). Made anew in a forked child,
// where another thread may have held it.
std::mutex* g_stacks_mu = new std::mutex;
std::vector<ThreadStack*>& stacks() {
  static auto* v = new std::vector<ThreadStack*>;
  return *v;
}
std::vector<PyObject*>& orphans() {
  static auto* v = new std::vector<PyObject*>;
  return *v;
}

struct ThreadStackOwner {
  ThreadStack* stack = nullptr;
  ~ThreadStackOwner() {
    if (stack == nullptr) return;
    std::lock_guard<std::mutex> lock(*g_stacks_mu);
    auto& all = stacks();
    all.erase(std::remove(all.begin(), all.end(), stack), all.end());
    for (const Entry& e : stack->entries) {
      orphans().push_back(e.module);
      if (e.cuda != nullptr) orphans().push_back(e.cuda);
      if (e.before != nullptr) orphans().push_back(e.before);
    }
    delete stack;
  }
};
thread_local ThreadStackOwner t_stack;

// A call timed from here (an optimizer step, a backward pass, the wait for a batch).
struct Timing {
  bool timing = false;  // false: the step is not traced, or the call is captured into a CUDA graph
  int64_t start_ns = 0;
  double start_time = 0;
  PyObject* cuda = nullptr;  // ours, on CUDA: what _cuda_start returned (its start event)
};
constexpr size_t kMaxOpenSteps = 16;

struct Named {
  PyObject* weakref;  // ours; tells a module from a later one at the same address
  std::string name;
  sql::ColumnStore::TextHint hint;  // where the name is in the store's open chunk
};

struct Tracer {
  const CApi* api = nullptr;
  sql::ColumnStore* store = nullptr;  // python.torch_trace; the engine keeps it for the process
  bool on = false;
  bool forked = false;      // a forked child: no row is written (a DataLoader worker's hooks go)
  uint64_t generation = 1;  // bumped by every start and stop: older stacks are dropped
  long long step = 0;
  long long seq = 0;
  long long period = 1;  // one step in `period` is traced; 0: none
  bool traced = true;    // the current step is
  bool cuda = false;     // time with CUDA events, through torch_trace.py
  long long rows = 0;    // appended here
  // torch_trace.py's functions (kept from one start to the next, never released while a hook
  // may be calling one).
  PyObject* top_level = nullptr;    // (module) -> 0 (not traced here), 1, 2 (captured)
  PyObject* name_in = nullptr;      // (module, parent or None) -> str
  PyObject* cuda_start = nullptr;   // (check_capture) -> [event, children] or None
  PyObject* cuda_finish = nullptr;  // (name, stage, started, parent's, start time, module or None)
  PyObject* after_step = nullptr;   // () after an optimizer step (a step hook, or one wrapped here)
  PyObject* running = nullptr;      // (module) -> whether its forward runs on this thread already
  // While torch.module_backward is on, else null: (inputs) -> their autograd nodes, before a
  // traced call's forward; (name, those nodes, output, start ns, end ns, had traced children)
  // after it. For calls under a model. The `kept` ones hold the references (never released: a
  // hook may be calling one).
  PyObject* backward_inputs = nullptr;
  PyObject* track_backward = nullptr;
  PyObject* backward_inputs_kept = nullptr;
  PyObject* track_backward_kept = nullptr;
  std::unordered_map<PyObject*, Named> names;
  size_t sweep_at = 1024;
  sql::ColumnStore::TextHint forward_hint;  // of "forward"
  // 2.x's optimizer steps begun and not ended (a step that raised runs no post hook: its entry is
  // dropped when kMaxOpenSteps are open); the last optimizer class seen and its name (ours).
  std::vector<Timing> steps;
  // The top model (torch_trace.py's S.primary_root, which keeps it; known_name() checks that the
  // module at this address is still it): its name labels the backward pass's row.
  PyObject* primary = nullptr;
  PyObject* step_type = nullptr;
  PyObject* step_name = nullptr;
  sql::ColumnStore::TextHint step_hint;  // of "step"
};

Tracer& tracer() {
  static auto* t = new Tracer;  // never destroyed: hooks may run during exit
  return *t;
}

}  // namespace

void init_tracer(const CApi& api) { tracer().api = &api; }

void on_fork_child() noexcept {
  Tracer& t = tracer();
  t.forked = true;
  g_stacks_mu = new std::mutex;  // the old one is left as it was
}

namespace {

PyObject* none(const CApi& api) {
  api.Py_IncRef(api.None);
  return api.None;
}

void release(const CApi& api, Entry& e) {
  api.Py_DecRef(e.module);
  if (e.cuda != nullptr) api.Py_DecRef(e.cuda);
  if (e.before != nullptr) api.Py_DecRef(e.before);
}

// Takes the entries from `from` up off the stack, then releases them: a release can run a
// finalizer that calls a module on this thread, which must find the stack consistent.
void clear_entries(const CApi& api, ThreadStack& s, size_t from = 0) {
  if (from >= s.entries.size()) return;
  std::vector<Entry> gone(s.entries.begin() + static_cast<std::ptrdiff_t>(from), s.entries.end());
  s.entries.resize(from);
  for (Entry& e : gone) release(api, e);
}

void release_orphans(const CApi& api) {
  std::vector<PyObject*> gone;
  {
    std::lock_guard<std::mutex> lock(*g_stacks_mu);
    if (orphans().empty()) return;
    gone.swap(orphans());
  }
  for (PyObject* o : gone) api.Py_DecRef(o);
}

// This thread's stack, emptied if it belongs to an earlier start (or stop).
ThreadStack& this_thread(Tracer& t) {
  if (t_stack.stack == nullptr) {
    auto* made = new ThreadStack;
    std::lock_guard<std::mutex> lock(*g_stacks_mu);
    stacks().push_back(made);
    t_stack.stack = made;
  }
  ThreadStack& s = *t_stack.stack;
  if (s.generation != t.generation) {
    s.generation = t.generation;
    s.capturing = false;
    clear_entries(*t.api, s);
  }
  return s;
}

// Every thread's entries released (at stop), with the references orphaned by threads that ended.
void clear_all_stacks(const CApi& api) {
  std::vector<Entry> gone;
  {
    std::lock_guard<std::mutex> lock(*g_stacks_mu);
    for (ThreadStack* s : stacks()) {
      gone.insert(gone.end(), s->entries.begin(), s->entries.end());
      s->entries.clear();
    }
  }
  for (Entry& e : gone) release(api, e);
  release_orphans(api);
}

// Calls into torch_trace.py return an error only for what is not an Exception (KeyboardInterrupt,
// SystemExit, an asynchronous exception): that one is the program's and goes on to it, as it
// would through any Python hook. Anything else is cleared.
bool keep_error(const CApi& api) {
  if (api.PyErr_Occurred() == nullptr) return false;
  if (api.PyErr_ExceptionMatches(api.exc_exception)) {
    api.PyErr_Clear();
    return false;
  }
  return true;
}

// The text of a str; empty for anything else. A null `str` (a call that raised) leaves the error
// as it is: it may be an interrupt to pass on.
std::string_view text_of(const CApi& api, PyObject* str) {
  if (str == nullptr || python::type_of(str) != api.PyUnicode_Type) return {};
  long n = 0;
  const char* p = api.PyUnicode_AsUTF8AndSize(str, &n);
  if (p == nullptr) {  // not encodable (lone surrogates)
    api.PyErr_Clear();
    return {};
  }
  return {p, static_cast<size_t>(n)};
}

void clear_names(Tracer& t) {
  for (auto& [module, named] : t.names) t.api->Py_DecRef(named.weakref);
  t.names.clear();
  t.sweep_at = 1024;
}

Named* known_name(Tracer& t, PyObject* module) {
  auto it = t.names.find(module);
  if (it == t.names.end()) return nullptr;
  if (referent(it->second.weakref) != module) {  // that module is gone; this one is new
    t.api->Py_DecRef(it->second.weakref);
    t.names.erase(it);
    return nullptr;
  }
  return &it->second;
}

void set_name(Tracer& t, PyObject* module, std::string_view name) {
  const CApi& api = *t.api;
  PyObject* ref = api.PyWeakref_NewRef(module, nullptr);
  if (ref == nullptr) {  // a module without weak references: named again on each call
    api.PyErr_Clear();
    return;
  }
  try {
    auto [it, made] = t.names.try_emplace(module);
    if (!made) api.Py_DecRef(it->second.weakref);
    it->second = Named{ref, std::string(name), {}};
  } catch (...) {  // out of memory: named again at its next call
    api.Py_DecRef(ref);
    return;
  }
  if (t.names.size() >= t.sweep_at) {  // forget the modules that are gone
    for (auto i = t.names.begin(); i != t.names.end();) {
      if (referent(i->second.weakref) != i->first) {
        api.Py_DecRef(i->second.weakref);
        i = t.names.erase(i);
      } else {
        ++i;
      }
    }
    t.sweep_at = 2 * t.names.size() + 1024;
  }
}

// Calls one of torch_trace.py's functions (they catch their own failures and switch tracing off);
// null when it raised, with the error left set only where keep_error() says so.
PyObject* call(const CApi& api, PyObject* fn, PyObject* a = nullptr, PyObject* b = nullptr,
               PyObject* c = nullptr, PyObject* d = nullptr, PyObject* e = nullptr, PyObject* f = nullptr) {
  PyObject* r = api.PyObject_CallFunctionObjArgs(fn, a, b, c, d, e, f, nullptr);
  if (r == nullptr) keep_error(api);
  return r;
}

// `name_hint`, `stage_hint`: the writer's memos of the two texts (or null).
void append_row(Tracer& t, std::string_view name, sql::ColumnStore::TextHint* name_hint,
                std::string_view stage, sql::ColumnStore::TextHint* stage_hint, int64_t ns, const Cell& self,
                double start_time) noexcept {
  const Cell cells[] = {
      t.step,                         // step
      t.seq,                          // seq
      name,                           // module
      stage,                          // stage
      static_cast<double>(ns) / 1e9,  // duration: a whole number of ns reads back from the store
      self,                           // self_duration
      std::monostate{},               // allocated (CUDA rows are written by torch_trace.py)
      std::monostate{},               // max_allocated
      start_time,                     // time
  };
  sql::ColumnStore::TextHint* const hints[] = {nullptr, nullptr, name_hint, stage_hint};
  if (t.forked) {  // the store's lock may have been copied held; the parent reads no row of ours
    ++t.seq;
    return;
  }
  try {
    if (t.store->append(cells, hints).is_ok()) ++t.rows;
  } catch (...) {  // out of memory: the row is lost, not the program
  }
  ++t.seq;
}

// The name of a module for its row: kept (valid until the names change; `hint` is then its memo),
// or worked out by torch_trace.py into `storage` (a module made after its model was named is
// named under the parent it runs in). Empty: the module gets no row.
std::string_view name_of(Tracer& t, PyObject* module, PyObject* parent, std::string& storage,
                         sql::ColumnStore::TextHint** hint) noexcept {
  if (Named* known = known_name(t, module)) {
    *hint = &known->hint;
    return known->name;
  }
  *hint = nullptr;
  const CApi& api = *t.api;
  PyObject* r = call(api, t.name_in, module, parent != nullptr ? parent : api.None);
  std::string_view name = text_of(api, r);
  try {
    storage.assign(name.empty() && r != api.None ? std::string_view("?") : name);
  } catch (...) {
    storage.clear();
  }
  if (r != nullptr) api.Py_DecRef(r);
  return storage;
}

// torch.module_backward: torch_trace.py hooks the autograd nodes of a traced call's outputs, so
// that its backward gets a row of its own. Any error but an interrupt is cleared.
void track_backward(Tracer& t, std::string_view name, PyObject* before, PyObject* output, int64_t start_ns,
                    int64_t end_ns, bool had_children) {
  const CApi& api = *t.api;
  PyObject* n = api.PyUnicode_FromStringAndSize(name.data(), static_cast<long>(name.size()));
  PyObject* from = api.PyLong_FromLongLong(start_ns);
  PyObject* to = api.PyLong_FromLongLong(end_ns);
  PyObject* parent = api.PyLong_FromLongLong(had_children ? 1 : 0);
  if (n != nullptr && from != nullptr && to != nullptr && parent != nullptr) {
    if (PyObject* r = call(api, t.track_backward, n, before, output, from, to, parent)) api.Py_DecRef(r);
  }
  for (PyObject* o : {n, from, to, parent}) {
    if (o != nullptr) api.Py_DecRef(o);
  }
  keep_error(api);
}

// ---- the forward hooks ----

// Deeper than this, calls are not traced (a runaway recursion through modules).
constexpr size_t kMaxDepth = 4096;

// A call on an empty stack: torch_trace.py names the model and counts the step. False when this
// thread's calls are not traced (a DataLoader worker: tracing is gone).
bool enter_top_level(Tracer& t, ThreadStack& s, PyObject* module) {
  const CApi& api = *t.api;
  PyObject* r = call(api, t.top_level, module);
  if (r == nullptr) return false;  // an interrupt stays set for the caller
  long long v = api.PyLong_AsLongLong(r);
  api.Py_DecRef(r);
  api.PyErr_Clear();
  s.capturing = v == 2;
  read_wall_offset();
  return v != 0 && t.on && s.generation == t.generation;
}

// A module called while an entry of its own is on this thread's stack: a recursion, or a call
// after a forward of it raised. PyTorch before 2.1 runs no post hook for a forward that raised,
// so its entry and those above it stay; without an optimizer step to clear them (an inference
// server that answers a bad request with an exception) the stack would never be empty again and
// no step be counted. torch_trace.py's `running` tells the two apart from the Python stack (only
// in this case: a scan of a few pointers otherwise). False when tracing stopped meanwhile, or on
// an interrupt (left set).
bool drop_entries_left_by_a_raise(Tracer& t, ThreadStack& s, PyObject* module) {
  size_t i = s.entries.size();
  while (i > 0 && s.entries[i - 1].module != module) --i;
  if (i == 0 || t.running == nullptr) return true;
  const CApi& api = *t.api;
  const uint64_t generation = t.generation;
  PyObject* r = call(api, t.running, module);
  if (r == nullptr) return false;
  const int running = api.PyObject_IsTrue(r);
  api.Py_DecRef(r);
  if (running < 0) return false;
  if (!running && generation == t.generation && s.generation == generation) clear_entries(api, s, i - 1);
  return t.on && generation == t.generation && s.generation == generation;
}

// register_module_forward_pre_hook(hook): hook(module, inputs). METH_FASTCALL.
PyObject* forward_pre(PyObject*, PyObject* const* args, long nargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (!t.on || nargs < 1) return none(api);
  ThreadStack& s = this_thread(t);
  PyObject* module = args[0];
  if (!s.entries.empty() && !drop_entries_left_by_a_raise(t, s, module)) {
    return api.PyErr_Occurred() != nullptr ? nullptr : none(api);
  }
  if (s.entries.empty() && !enter_top_level(t, s, module)) {
    return api.PyErr_Occurred() != nullptr ? nullptr : none(api);
  }
  Entry e{module, -1, 0.0, 0, nullptr, nullptr};
  if (s.entries.size() >= kMaxDepth) return none(api);
  if (t.traced && !s.capturing) {
    const uint64_t generation = t.generation;
    if (t.cuda) {
      e.cuda = call(api, t.cuda_start, api.None);
      if (api.PyErr_Occurred() != nullptr) return nullptr;
      if (!t.on || generation != t.generation || s.generation != generation) {  // stopped meanwhile
        if (e.cuda != nullptr) api.Py_DecRef(e.cuda);
        return none(api);
      }
    }
    if (!t.cuda && t.backward_inputs != nullptr && !s.entries.empty() && nargs >= 2) {
      e.before = call(api, t.backward_inputs, args[1]);     // null or None: no backward row
      if (api.PyErr_Occurred() != nullptr) return nullptr;  // an interrupt
      if (e.before == api.None || !t.on || generation != t.generation || s.generation != generation) {
        if (e.before != nullptr) api.Py_DecRef(e.before);
        e.before = nullptr;
        if (!t.on || generation != t.generation || s.generation != generation) return none(api);
      }
    }
    if (!t.cuda || (e.cuda != nullptr && e.cuda != api.None)) {
      e.start_ns = monotonic_ns();
      e.start_time = t.cuda ? wall_time(e.start_ns) : 0.0;
    } else if (e.cuda != nullptr) {
      api.Py_DecRef(e.cuda);
      e.cuda = nullptr;
    }
  }
  api.Py_IncRef(module);
  try {
    s.entries.push_back(e);
  } catch (...) {
    release(api, e);
  }
  return none(api);
}

// register_module_forward_hook(hook): hook(module, inputs, output). METH_FASTCALL.
PyObject* forward_post(PyObject*, PyObject* const* args, long nargs) noexcept {
  int64_t end_ns = monotonic_ns();
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (!t.on || nargs < 1) return none(api);
  ThreadStack& s = this_thread(t);
  PyObject* module = args[0];
  // Its entry, and above it those of modules whose forward raised (no post hook ran for them).
  // None when its pre hook never ran: tracing started during its forward.
  size_t i = s.entries.size();
  while (i > 0 && s.entries[i - 1].module != module) --i;
  if (i == 0) return none(api);
  Entry e = s.entries[i - 1];  // its references are ours now
  std::vector<Entry> above(s.entries.begin() + static_cast<std::ptrdiff_t>(i), s.entries.end());
  s.entries.resize(i - 1);
  for (Entry& x : above) release(api, x);
  if (e.start_ns >= 0) {
    std::string storage;
    sql::ColumnStore::TextHint* hint = nullptr;
    std::string_view name =
        name_of(t, module, s.entries.empty() ? nullptr : s.entries.back().module, storage, &hint);
    if (name.empty()) {
      // no row; its time stays in its parent's own
    } else if (e.cuda == nullptr) {
      int64_t ns = end_ns - e.start_ns;
      if (!s.entries.empty()) s.entries.back().children_ns += ns;
      append_row(t, name, hint, "forward", &t.forward_hint, ns, static_cast<double>(ns - e.children_ns) / 1e9,
                 wall_time(e.start_ns));
      // (A top model's backward is the pass's own row.)
      if (t.track_backward != nullptr && e.before != nullptr && nargs >= 3) {
        track_backward(t, name, e.before, args[2], e.start_ns, end_ns, e.children_ns > 0);
      }
    } else {
      PyObject* n = api.PyUnicode_FromStringAndSize(name.data(), static_cast<long>(name.size()));
      PyObject* stage = api.PyUnicode_FromStringAndSize("forward", 7);
      PyObject* when = api.PyFloat_FromDouble(e.start_time);
      // the parent's entry may have moved if the call ran code that entered a module: looked up again
      PyObject* parent_cuda =
          !s.entries.empty() && s.entries.back().cuda != nullptr ? s.entries.back().cuda : api.None;
      if (n != nullptr && stage != nullptr && when != nullptr) {
        PyObject* r = call(api, t.cuda_finish, n, stage, e.cuda, parent_cuda, when, module);
        if (r != nullptr) api.Py_DecRef(r);
      }
      for (PyObject* o : {n, stage, when}) {
        if (o != nullptr) api.Py_DecRef(o);
      }
      keep_error(api);
    }
  }
  release(api, e);
  return api.PyErr_Occurred() != nullptr ? nullptr : none(api);
}

// ---- timing a call: backward, a DataLoader's wait ----

constexpr const char* kTimedCapsule = "probing.torch.timed";

struct Timed {
  PyObject* fn;
  PyObject* label;  // the row's module: a str, or a function of the call's arguments
  std::string stage;
  sql::ColumnStore::TextHint stage_hint;
};

void free_timed(PyObject* capsule) noexcept {
  const CApi& api = *tracer().api;
  auto* timed = static_cast<Timed*>(api.PyCapsule_GetPointer(capsule, kTimedCapsule));
  if (timed == nullptr) {
    api.PyErr_Clear();
    return;
  }
  api.Py_DecRef(timed->fn);
  api.Py_DecRef(timed->label);
  delete timed;
}

PyObject* raise(const CApi& api, const char* message) {
  api.PyErr_SetString(api.exc_value_error, message);
  return nullptr;
}

// Begins timing a call when the step is traced (on CUDA, with torch_trace.py's start event; not
// while the stream is captured into a CUDA graph). False when that call raised what goes on to
// the program (an interrupt).
bool begin_timing(Tracer& t, Timing* tm) {
  const CApi& api = *t.api;
  *tm = {};
  if (!t.on || !t.traced) return true;
  if (t.cuda) {
    PyObject* yes = api.PyLong_FromLongLong(1);
    PyObject* started = yes != nullptr ? call(api, t.cuda_start, yes) : nullptr;
    if (yes != nullptr) api.Py_DecRef(yes);
    if (started == nullptr || started == api.None) {  // captured (or failed): not timed
      if (started != nullptr) api.Py_DecRef(started);
      return api.PyErr_Occurred() == nullptr;
    }
    tm->cuda = started;
  }
  tm->timing = true;
  tm->start_ns = monotonic_ns();
  tm->start_time = wall_time(tm->start_ns);
  return true;
}

// Lets go of what `tm` held, writing no row.
void drop_timing(const CApi& api, Timing& tm) {
  if (tm.cuda != nullptr) api.Py_DecRef(tm.cuda);
  tm = {};
}

// Ends it, at end_ns: a row of `stage` named `label` (a str) while tracing is on, and lets go of
// what `tm` held.
void end_timing(Tracer& t, Timing& tm, PyObject* label, std::string_view stage,
                sql::ColumnStore::TextHint* stage_hint, int64_t end_ns) {
  const CApi& api = *t.api;
  if (tm.timing && t.on && api.PyErr_Occurred() == nullptr) {
    if (tm.cuda == nullptr) {
      std::string_view name = text_of(api, label);
      append_row(t, name.empty() ? std::string_view("?") : name, nullptr, stage, stage_hint,
                 end_ns - tm.start_ns, std::monostate{}, tm.start_time);
    } else {
      PyObject* stage_str = api.PyUnicode_FromStringAndSize(stage.data(), static_cast<long>(stage.size()));
      PyObject* when = api.PyFloat_FromDouble(tm.start_time);
      if (label != nullptr && stage_str != nullptr && when != nullptr) {
        if (PyObject* r = call(api, t.cuda_finish, label, stage_str, tm.cuda, api.None, when, api.None)) {
          api.Py_DecRef(r);
        }
      }
      if (stage_str != nullptr) api.Py_DecRef(stage_str);
      if (when != nullptr) api.Py_DecRef(when);
      keep_error(api);  // a failed str or float: cleared
    }
  }
  drop_timing(api, tm);
}

// The wrapper: fn(*args, **kwargs), its exceptions untouched, and a row when the step is traced.
// METH_VARARGS | METH_KEYWORDS.
PyObject* timed_call(PyObject* self, PyObject* args, PyObject* kwargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  auto* timed = static_cast<Timed*>(api.PyCapsule_GetPointer(self, kTimedCapsule));
  if (timed == nullptr) return nullptr;
  Timing tm;
  if (!begin_timing(t, &tm)) return nullptr;
  PyObject* result = api.PyObject_Call(timed->fn, args, kwargs);
  const int64_t end_ns = monotonic_ns();
  if (result == nullptr) {  // fn's exception goes to the caller as it is
    drop_timing(api, tm);
    return nullptr;
  }
  // The backward pass's row on the CPU, without torch.module_backward (whose rows its label
  // function writes first): the top model's name, known here.
  Named* top = tm.timing && t.on && tm.cuda == nullptr && t.primary != nullptr &&
                       t.backward_inputs == nullptr && timed->stage == "backward"
                   ? known_name(t, t.primary)
                   : nullptr;
  if (top != nullptr && !top->name.empty()) {
    append_row(t, top->name, &top->hint, timed->stage, &timed->stage_hint, end_ns - tm.start_ns,
               std::monostate{}, tm.start_time);
    drop_timing(api, tm);
  }
  PyObject* label = timed->label;
  bool own = false;
  if (tm.timing && t.on && python::type_of(label) != api.PyUnicode_Type) {
    label = call(api, label, args);
    own = label != nullptr;
  }
  end_timing(t, tm, label, timed->stage, &timed->stage_hint, end_ns);  // none after an interrupt
  if (own) api.Py_DecRef(label);
  // After fn returned: the step counted (stage step), or fn's result dropped for an interrupt that
  // came in torch_trace.py's code.
  if (api.PyErr_Occurred() == nullptr && t.on && timed->stage == "step") {
    if (PyObject* r = call(api, t.after_step)) api.Py_DecRef(r);
  }
  if (api.PyErr_Occurred() != nullptr) {
    api.Py_DecRef(result);
    return nullptr;
  }
  return result;
}

MethodDef g_timed_call_def{"traced", reinterpret_cast<void*>(timed_call),
                           python::kMethVarargs | python::kMethKeywords, nullptr};

// PyTorch 2.x's global optimizer step hooks, (optimizer, args, kwargs) -> None: a row of stage
// step named by the optimizer's class, and torch_trace.py's after_step once it ended.
PyObject* step_pre(PyObject*, PyObject* const*, long nargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 3) return raise(api, "_native_step_pre(optimizer, args, kwargs)");
  Timing tm;
  if (!begin_timing(t, &tm)) return nullptr;
  if (t.steps.size() >= kMaxOpenSteps) {  // steps that raised left theirs
    drop_timing(api, t.steps.front());
    t.steps.erase(t.steps.begin());
  }
  try {
    t.steps.push_back(tm);
  } catch (...) {  // out of memory: not timed
    drop_timing(api, tm);
  }
  return none(api);
}

PyObject* step_post(PyObject*, PyObject* const* args, long nargs) noexcept {
  const int64_t end_ns = monotonic_ns();
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 3) return raise(api, "_native_step_post(optimizer, args, kwargs)");
  if (!t.steps.empty()) {
    Timing tm = t.steps.back();
    t.steps.pop_back();
    auto* type = static_cast<PyObject*>(python::type_of(args[0]));
    if (tm.timing && t.on && type != t.step_type) {
      PyObject* name = api.PyObject_GetAttrString(type, "__name__");
      if (name == nullptr) keep_error(api);
      if (t.step_type != nullptr) api.Py_DecRef(t.step_type);
      if (t.step_name != nullptr) api.Py_DecRef(t.step_name);
      api.Py_IncRef(type);
      t.step_type = type;
      t.step_name = name;
    }
    end_timing(t, tm, t.step_name, "step", &t.step_hint, end_ns);
  }
  if (api.PyErr_Occurred() == nullptr && t.on) {
    if (PyObject* r = call(api, t.after_step)) api.Py_DecRef(r);
  }
  return api.PyErr_Occurred() != nullptr ? nullptr : none(api);
}

// ---- what torch_trace.py calls ----

// _native_start(top_level, name_in, cuda_start, cuda_finish, after_step, running): tracing on,
// from a new generation (no thread keeps entries of an earlier install's calls), no names kept.
PyObject* native_start(PyObject*, PyObject* const* args, long nargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 6) {
    return raise(api, "_native_start(top_level, name_in, cuda_start, cuda_finish, after_step, running)");
  }
  if (t.store == nullptr) {
    std::shared_ptr<sql::ColumnStore> store = sql::Engine::get().find_store("python", "torch_trace");
    if (store == nullptr) return raise(api, "python.torch_trace is not registered");
    t.store = store.get();  // the engine keeps its stores for the life of the process
  }
  PyObject** slots[] = {&t.top_level, &t.name_in, &t.cuda_start, &t.cuda_finish, &t.after_step, &t.running};
  for (long i = 0; i < nargs; ++i) {
    api.Py_IncRef(args[i]);
    if (*slots[i] != nullptr) api.Py_DecRef(*slots[i]);
    *slots[i] = args[i];
  }
  clear_names(t);
  ++t.generation;
  t.primary = nullptr;
  t.cuda = false;
  read_wall_offset();
  t.on = true;
  release_orphans(api);
  return none(api);
}

PyObject* native_stop(PyObject*, PyObject*) noexcept {
  Tracer& t = tracer();
  t.on = false;
  ++t.generation;
  clear_all_stacks(*t.api);  // the modules every thread's calls in progress held
  for (Timing& tm : t.steps) drop_timing(*t.api, tm);
  t.steps.clear();
  t.primary = nullptr;
  clear_names(t);
  return none(*t.api);
}

// _native_new_step() -> the new step's number; this thread's stack starts empty.
PyObject* native_new_step(PyObject*, PyObject*) noexcept {
  Tracer& t = tracer();
  read_wall_offset();
  ++t.step;
  t.seq = 0;
  t.traced = t.period == 1 || (t.period > 1 && t.step % t.period == 0);
  clear_entries(*t.api, this_thread(t));
  release_orphans(*t.api);
  return t.api->PyLong_FromLongLong(t.step);
}

// _native_set_period(n): one step in n traced; 0 for none.
PyObject* native_set_period(PyObject*, PyObject* arg) noexcept {
  Tracer& t = tracer();
  long long period = t.api->PyLong_AsLongLong(arg);
  if (period < 0) return t.api->PyErr_Occurred() != nullptr ? nullptr : raise(*t.api, "a period is >= 0");
  t.period = period;
  t.traced = period == 1 || (period > 1 && t.step % period == 0);
  return none(*t.api);
}

PyObject* native_set_cuda(PyObject*, PyObject* arg) noexcept {
  Tracer& t = tracer();
  int on = t.api->PyObject_IsTrue(arg);
  if (on < 0) return nullptr;
  t.cuda = on != 0;
  return none(*t.api);
}

PyObject* int_list(const CApi& api, std::initializer_list<long long> values) {
  PyObject* list = api.PyList_New(0);
  for (long long v : values) {
    PyObject* item = list != nullptr ? api.PyLong_FromLongLong(v) : nullptr;
    if (item == nullptr || api.PyList_Append(list, item) != 0) {
      if (item != nullptr) api.Py_DecRef(item);
      if (list != nullptr) api.Py_DecRef(list);
      return nullptr;
    }
    api.Py_DecRef(item);
  }
  return list;
}

// _native_counters() -> [step, seq, traced, rows appended here]
PyObject* native_counters(PyObject*, PyObject*) noexcept {
  Tracer& t = tracer();
  return int_list(*t.api, {t.step, t.seq, t.traced ? 1 : 0, t.rows});
}

// _native_take_seq() -> [step, seq] for a row torch_trace.py writes itself (CUDA); the next seq.
PyObject* native_take_seq(PyObject*, PyObject*) noexcept {
  Tracer& t = tracer();
  return int_list(*t.api, {t.step, t.seq++});
}

// _native_record(name, stage, start_ns, start_time[, end_ns, self_s]): a CPU row of a call that
// ends now, or at end_ns; start_time None: from start_ns.
PyObject* native_record(PyObject*, PyObject* const* args, long nargs) noexcept {
  int64_t end_ns = monotonic_ns();
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 4 && nargs != 6) {
    return raise(api, "_native_record(name, stage, start_ns, start_time[, end_ns, self_s])");
  }
  std::string_view name = text_of(api, args[0]);
  std::string_view stage = text_of(api, args[1]);
  long long start_ns = api.PyLong_AsLongLong(args[2]);
  double start_time = args[3] == api.None ? wall_time(start_ns) : api.PyFloat_AsDouble(args[3]);
  Cell self = std::monostate{};
  if (nargs == 6) {
    end_ns = api.PyLong_AsLongLong(args[4]);
    self = api.PyFloat_AsDouble(args[5]);
  }
  if (api.PyErr_Occurred() != nullptr) return nullptr;
  if (t.store != nullptr) append_row(t, name, nullptr, stage, nullptr, end_ns - start_ns, self, start_time);
  return none(api);
}

// _native_set_backward(inputs, track), both None for off: torch.module_backward on (the functions
// each traced call under a model is handed to, before and after its forward) or off.
PyObject* native_set_backward(PyObject*, PyObject* const* args, long nargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 2) return raise(api, "_native_set_backward(inputs, track)");
  if (args[0] == api.None || args[1] == api.None) {
    t.backward_inputs = t.track_backward = nullptr;
    return none(api);
  }
  // The ones before stay referenced: a hook may be calling them.
  for (auto [fn, kept] :
       {std::pair{args[0], &t.backward_inputs_kept}, std::pair{args[1], &t.track_backward_kept}}) {
    if (fn != *kept) {
      api.Py_IncRef(fn);
      *kept = fn;
    }
  }
  t.backward_inputs = args[0];
  t.track_backward = args[1];
  return none(api);
}

// _native_name(module) -> its kept name, or None.
PyObject* native_name(PyObject*, PyObject* module) noexcept {
  Tracer& t = tracer();
  const Named* named = known_name(t, module);
  if (named == nullptr) return none(*t.api);
  return t.api->PyUnicode_FromStringAndSize(named->name.data(), static_cast<long>(named->name.size()));
}

// _native_set_name(module, name): kept while the module lives (or until tracing stops). None: the
// module gets no rows (code a compiled module runs).
PyObject* native_set_name(PyObject*, PyObject* const* args, long nargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 2) return raise(api, "_native_set_name(module, name)");
  std::string_view name = text_of(api, args[1]);
  if (name.empty() && args[1] != api.None) return raise(api, "a module's name is a non-empty str or None");
  set_name(t, args[0], name);
  return none(api);
}

// _native_timed(fn, stage, label) -> a builtin that calls fn and writes a row of `stage` named
// `label` (a str, or a function of the call's positional arguments). Stage "step" counts a step
// after the call.
PyObject* native_timed(PyObject*, PyObject* const* args, long nargs) noexcept {
  Tracer& t = tracer();
  const CApi& api = *t.api;
  if (nargs != 3) return raise(api, "_native_timed(fn, stage, label)");
  std::string_view stage = text_of(api, args[1]);
  if (stage.empty()) return raise(api, "_native_timed: the stage is a str");
  Timed* timed = nullptr;
  try {
    timed = new Timed{args[0], args[2], std::string(stage), {}};
  } catch (...) {
    return raise(api, "_native_timed: out of memory");
  }
  PyObject* capsule = api.PyCapsule_New(timed, kTimedCapsule, free_timed);
  if (capsule == nullptr) {
    delete timed;
    return nullptr;
  }
  api.Py_IncRef(timed->fn);
  api.Py_IncRef(timed->label);
  PyObject* fn = api.PyCFunction_NewEx(&g_timed_call_def, capsule, nullptr);
  api.Py_DecRef(capsule);
  return fn;
}

// _native_set_primary(module): the top model, whose name labels the backward pass's row.
PyObject* native_set_primary(PyObject*, PyObject* module) noexcept {
  Tracer& t = tracer();
  t.primary = module != t.api->None ? module : nullptr;
  return none(*t.api);
}

// _native_crash_capture_again(): the crash handlers back in front of PyTorch's, in a DataLoader
// worker that has just set its own (python/crash.h).
PyObject* native_crash_capture_again(PyObject*, PyObject*) noexcept {
  python::capture_crashes_again();
  return none(*tracer().api);
}

// _native_method(builtin) -> it as a method: set on a class, it gets the instance first.
PyObject* native_method(PyObject*, PyObject* fn) noexcept { return tracer().api->PyInstanceMethod_New(fn); }

template <typename F>
MethodDef def(const char* name, F* fn, int flags) {
  return MethodDef{name, reinterpret_cast<void*>(fn), flags, nullptr};
}

constexpr int kFast = python::kMethFastcall;
constexpr int kO = python::kMethO;
constexpr int kNone = python::kMethNoArgs;

MethodDef g_defs[] = {
    def("_native_pre", forward_pre, kFast),
    def("_native_post", forward_post, kFast),
    def("_native_start", native_start, kFast),
    def("_native_stop", native_stop, kNone),
    def("_native_new_step", native_new_step, kNone),
    def("_native_set_period", native_set_period, kO),
    def("_native_set_cuda", native_set_cuda, kO),
    def("_native_counters", native_counters, kNone),
    def("_native_take_seq", native_take_seq, kNone),
    def("_native_record", native_record, kFast),
    def("_native_name", native_name, kO),
    def("_native_set_name", native_set_name, kFast),
    def("_native_timed", native_timed, kFast),
    def("_native_method", native_method, kO),
    def("_native_set_backward", native_set_backward, kFast),
    def("_native_crash_capture_again", native_crash_capture_again, kNone),
    def("_native_step_pre", step_pre, kFast),
    def("_native_step_post", step_post, kFast),
    def("_native_set_primary", native_set_primary, kO),
};

}  // namespace

python::MethodDef* const kTracerNatives[] = {&g_defs[0],  &g_defs[1],  &g_defs[2],  &g_defs[3],  &g_defs[4],
                                             &g_defs[5],  &g_defs[6],  &g_defs[7],  &g_defs[8],  &g_defs[9],
                                             &g_defs[10], &g_defs[11], &g_defs[12], &g_defs[13], &g_defs[14],
                                             &g_defs[15], &g_defs[16], &g_defs[17], &g_defs[18], nullptr};

}  // namespace probing::torch
