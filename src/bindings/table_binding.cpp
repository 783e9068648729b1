#include "bindings/table_binding.h"

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

#include "core/settings.h"
#include "sql/engine.h"
#include "sql/tables/tables.h"

namespace probing::bindings {
namespace {

using sql::ColumnStore;
using sql::Engine;
using sql::TableInfo;
using sql::Cell;
using sql::ColumnDef;
using sql::ColumnType;

using python::CApi;
using python::PyObject;

constexpr const char* kCapsule = "probing.table";
constexpr size_t kMaxColumns = 64;
constexpr size_t kMaxTables = 256;
using python::kMethFastcall;
using python::kMethO;
using python::MethodDef;

const CApi* g_api = nullptr;
std::atomic<bool> g_forked{false};

// One recorded table as Python sees it. The store is made by the first append, with the keys of
// that row as its columns. Handles live for the life of the process.
struct TableHandle {
  std::string name;
  size_t max_rows = 0;
  size_t max_bytes = 0;
  std::mutex mu;  // making the store
  std::atomic<ColumnStore*> store{nullptr};
  std::vector<std::string> columns;  // fixed once store is set
};

std::mutex g_handles_mu;
std::map<std::string, TableHandle*>& handles() {
  static auto* m = new std::map<std::string, TableHandle*>;
  return *m;
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

PyObject* raise(PyObject* type, const std::string& message) {
  g_api->PyErr_SetString(type, message.c_str());
  return nullptr;
}

bool is_type(PyObject* obj, void* type) {
  void* t = python::type_of(obj);
  return t == type || g_api->PyType_IsSubtype(t, type);
}

std::string_view text_of(PyObject* str) {
  long n = 0;
  const char* s = g_api->PyUnicode_AsUTF8AndSize(str, &n);
  if (s == nullptr) return {};
  return {s, static_cast<size_t>(n)};
}

// Python value -> cell. The text of a str stays valid while the row does (the caller's).
bool to_cell(PyObject* v, Cell* out, const TableHandle& h, std::string_view column) {
  const CApi& api = *g_api;
  void* t = python::type_of(v);
  if (v == api.None) {
    *out = std::monostate{};
  } else if (t == api.PyBool_Type) {
    *out = static_cast<long long>(v != nullptr && api.PyLong_AsLongLong(v) != 0);
  } else if (t == api.PyFloat_Type) {
    *out = api.PyFloat_AsDouble(v);
  } else if (t == api.PyLong_Type || is_type(v, api.PyLong_Type)) {
    long long i = api.PyLong_AsLongLong(v);
    if (i == -1 && api.PyErr_Occurred() != nullptr) return false;  // OverflowError
    *out = i;
  } else if (t == api.PyUnicode_Type || is_type(v, api.PyUnicode_Type)) {
    long n = 0;
    const char* s = api.PyUnicode_AsUTF8AndSize(v, &n);
    if (s == nullptr) return false;
    *out = std::string_view(s, static_cast<size_t>(n));
  } else {
    // numpy scalars, 0-d tensors and anything else with __float__.
    double d = api.PyFloat_AsDouble(v);
    if (d == -1.0 && api.PyErr_Occurred() != nullptr) {
      api.PyErr_Clear();
      raise(api.exc_type_error, "probing.table('" + h.name + "'): the value of '" + std::string(column) +
                                    "' must be an int, float, str, bool or None");
      return false;
    }
    *out = d;
  }
  return true;
}

// Makes the store from the first row's keys. REQUIRES: GIL held.
ColumnStore* make_store(TableHandle& h, PyObject* row) {
  const CApi& api = *g_api;
  std::lock_guard<std::mutex> lock(h.mu);
  if (ColumnStore* s = h.store.load()) return s;
  std::vector<ColumnDef> columns;
  long pos = 0;
  PyObject *key, *value;
  while (api.PyDict_Next(row, &pos, &key, &value)) {
    if (!is_type(key, api.PyUnicode_Type)) {
      raise(api.exc_type_error, "probing.table('" + h.name + "'): column names must be str");
      return nullptr;
    }
    std::string name(text_of(key));
    if (name.empty() || columns.size() >= kMaxColumns) {
      raise(api.exc_value_error, "probing.table('" + h.name + "'): columns must be 1 to 64 non-empty names");
      return nullptr;
    }
    ColumnType type = ColumnType::kText;
    void* t = python::type_of(value);
    if (t == api.PyFloat_Type) type = ColumnType::kReal;
    else if (t == api.PyBool_Type || is_type(value, api.PyLong_Type)) type = ColumnType::kInteger;
    else if (value != api.None && !is_type(value, api.PyUnicode_Type)) type = ColumnType::kReal;
    columns.push_back({name, type, "set by the first row appended"});
  }
  if (columns.empty()) {
    raise(api.exc_value_error, "probing.table('" + h.name + "'): the first row must have at least one column");
    return nullptr;
  }
  ColumnStore::Limits limits;
  limits.max_rows = h.max_rows ? h.max_rows : static_cast<size_t>(settings().get_int("store.max_rows"));
  limits.max_bytes = h.max_bytes ? h.max_bytes : static_cast<size_t>(settings().get_int("store.max_bytes"));
  auto store = std::make_shared<ColumnStore>("python", h.name, columns, limits);
  Status st = Engine::get().add_store(store, "recorded by probing.table('" + h.name + "')");
  if (!st.is_ok()) {
    raise(api.exc_value_error, "probing.table('" + h.name + "'): " + st.message());
    return nullptr;
  }
  for (const ColumnDef& c : columns) h.columns.push_back(c.name);
  h.store.store(store.get());  // the engine keeps it alive
  return store.get();
}

// table.append(row): METH_O with the handle's capsule as self.
PyObject* table_append(PyObject* self, PyObject* row) noexcept {
  try {
    const CApi& api = *g_api;
    auto* h = static_cast<TableHandle*>(api.PyCapsule_GetPointer(self, kCapsule));
    if (h == nullptr) return nullptr;
    if (g_forked.load(std::memory_order_relaxed)) {
      api.Py_IncRef(api.None);
      return api.None;
    }
    if (!is_type(row, api.PyDict_Type)) {
      return raise(api.exc_type_error, "probing.table('" + h->name + "').append takes a dict: {column: value}");
    }
    ColumnStore* store = h->store.load(std::memory_order_acquire);
    if (store == nullptr && (store = make_store(*h, row)) == nullptr) return nullptr;
    const size_t n = h->columns.size();
    Cell cells[kMaxColumns];
    bool seen[kMaxColumns] = {};
    long pos = 0;
    size_t item = 0;
    PyObject *key, *value;
    while (api.PyDict_Next(row, &pos, &key, &value)) {
      std::string_view k = is_type(key, api.PyUnicode_Type) ? text_of(key) : std::string_view();
      // Rows usually come with the keys in the same order as the first one.
      size_t c = item < n && h->columns[item] == k ? item : n;
      for (size_t i = 0; c == n && i < n; ++i) {
        if (h->columns[i] == k) c = i;
      }
      ++item;
      if (c == n) {
        std::string cols;
        for (const std::string& name : h->columns) cols += (cols.empty() ? "" : ", ") + name;
        return raise(api.exc_value_error, "probing.table('" + h->name + "') has no column '" + std::string(k) +
                                              "' (its columns, set by the first row: " + cols + ")");
      }
      if (!to_cell(value, &cells[c], *h, k)) return nullptr;
      seen[c] = true;
    }
    for (size_t i = 0; i < n; ++i) {
      if (!seen[i]) cells[i] = std::monostate{};
    }
    Status st = store->append(std::span<const Cell>(cells, n));
    if (!st.is_ok()) return raise(api.exc_value_error, st.message());
    api.Py_IncRef(api.None);
    return api.None;
  } catch (const std::exception& e) {
    return raise(g_api->exc_value_error, std::string("probing.table: ") + e.what());
  } catch (...) {
    return raise(g_api->exc_value_error, "probing.table: internal error");
  }
}

MethodDef g_append_def{"append", reinterpret_cast<void*>(table_append), static_cast<int>(kMethO),
                       "append(row: dict) -> None\n\nRecords one row; keys are column names."};

// The append builtin bound to `h`. REQUIRES: GIL held.
PyObject* append_function(TableHandle* h) {
  PyObject* capsule = g_api->PyCapsule_New(h, kCapsule, nullptr);
  if (capsule == nullptr) return nullptr;
  PyObject* fn = g_api->PyCFunction_NewEx(&g_append_def, capsule, nullptr);
  g_api->Py_DecRef(capsule);
  return fn;
}

// make_appender(name, max_rows, max_bytes) -> the table's append function.
PyObject* make_appender(PyObject*, PyObject* const* args, long nargs) noexcept {
  try {
    const CApi& api = *g_api;
    if (nargs != 3 || !is_type(args[0], api.PyUnicode_Type)) {
      return raise(api.exc_type_error, "make_appender(name: str, max_rows: int, max_bytes: int)");
    }
    std::string name(text_of(args[0]));
    long long max_rows = api.PyLong_AsLongLong(args[1]);
    long long max_bytes = api.PyLong_AsLongLong(args[2]);
    if (api.PyErr_Occurred() != nullptr) return nullptr;
    if (!valid_name(name)) {
      return raise(api.exc_value_error, "probing.table: '" + name +
                                            "' is not a table name (letters, digits and _, at most 64, not "
                                            "starting with a digit)");
    }
    if (max_rows < 0 || max_bytes < 0) return raise(api.exc_value_error, "probing.table: limits must be positive");
    {
      // A built-in table's name (python.backtrace, python.torch_trace, ...) is refused here, at
      // creation, not at the first append.
      std::lock_guard<std::mutex> lock(g_handles_mu);
      if (handles().find(name) == handles().end()) {
        for (const TableInfo& t : Engine::get().tables()) {
          if (t.schema == "python" && t.name == name) {
            return raise(api.exc_value_error, "probing.table: python." + name +
                                                  " is a built-in table; give your table another name");
          }
        }
      }
    }
    TableHandle* h;
    {
      std::lock_guard<std::mutex> lock(g_handles_mu);
      auto it = handles().find(name);
      if (it == handles().end()) {
        if (handles().size() >= kMaxTables) {
          return raise(api.exc_value_error, "probing.table: at most " + std::to_string(kMaxTables) + " tables");
        }
        h = new TableHandle;
        h->name = name;
        h->max_rows = static_cast<size_t>(max_rows);
        h->max_bytes = static_cast<size_t>(max_bytes);
        handles().emplace(name, h);
      } else {
        h = it->second;
      }
    }
    if (ColumnStore* s = h->store.load(); s != nullptr && (max_rows > 0 || max_bytes > 0)) {
      ColumnStore::Limits limits;
      limits.max_rows = max_rows > 0 ? static_cast<size_t>(max_rows) : static_cast<size_t>(settings().get_int("store.max_rows"));
      limits.max_bytes = max_bytes > 0 ? static_cast<size_t>(max_bytes) : static_cast<size_t>(settings().get_int("store.max_bytes"));
      s->set_limits(limits);
    }
    return append_function(h);
  } catch (...) {
    return raise(g_api->exc_value_error, "probing.table: internal error");
  }
}

// agent_table(name) -> the append function of a table the agent made (python.spans, ...).
PyObject* agent_table(PyObject*, PyObject* const* args, long nargs) noexcept try {
  const CApi& api = *g_api;
  if (nargs != 1 || !is_type(args[0], api.PyUnicode_Type)) return raise(api.exc_type_error, "agent_table(name: str)");
  std::string name(text_of(args[0]));
  if (name != "spans" && name != "events" && name != "torch_trace") {
    return raise(api.exc_value_error, "no agent table '" + name + "'");
  }
  std::shared_ptr<ColumnStore> store = Engine::get().find_store("python", name);
  if (store == nullptr) return raise(api.exc_value_error, "the agent has no table python." + name);
  return appender_for(store.get());
} catch (...) {
  return raise(g_api->exc_value_error, "probing: internal error");
}

MethodDef g_agent_table_def{"agent_table", reinterpret_cast<void*>(agent_table), static_cast<int>(kMethFastcall),
                            "agent_table(name) -> append function of python.<name>"};

MethodDef g_make_appender_def{"make_appender", reinterpret_cast<void*>(make_appender), static_cast<int>(kMethFastcall),
                              "make_appender(name, max_rows, max_bytes) -> append function"};

}  // namespace

PyObject* appender_for(ColumnStore* store) noexcept {
  try {
    Result<const CApi*> api = python::load_capi();
    if (!api.is_ok()) return nullptr;
    g_api = *api;
    std::lock_guard<std::mutex> lock(g_handles_mu);
    std::string key = "\n" + store->name();  // not a valid probing.table name: no clash
    auto it = handles().find(key);
    TableHandle* h;
    if (it == handles().end()) {
      h = new TableHandle;
      h->name = store->name();
      for (const ColumnDef& c : store->columns()) h->columns.push_back(c.name);
      h->store.store(store);
      handles().emplace(key, h);
    } else {
      h = it->second;
    }
    return append_function(h);
  } catch (...) {
    return nullptr;
  }
}

void on_fork_child() noexcept { g_forked.store(true); }

PyObject* native_functions() noexcept try {
  Result<const CApi*> api = python::load_capi();
  if (!api.is_ok()) return nullptr;
  g_api = *api;
  const CApi& a = **api;
  // The package may ask before the agent's own thread has set up (probing.init(), then at once
  // probing.table()): both steps are idempotent.
  declare_builtin_settings(settings());
  (void)sql::add_builtin_tables();
  PyObject* d = a.PyDict_New();
  if (d == nullptr) return nullptr;
  for (MethodDef* def : {&g_make_appender_def, &g_agent_table_def}) {
    PyObject* fn = a.PyCFunction_NewEx(def, nullptr, nullptr);
    if (fn == nullptr || a.PyDict_SetItemString(d, def->name, fn) != 0) {
      if (fn != nullptr) a.Py_DecRef(fn);
      a.Py_DecRef(d);
      return nullptr;
    }
    a.Py_DecRef(fn);
  }
  return d;
} catch (...) {
  return nullptr;
}

}  // namespace probing::bindings
