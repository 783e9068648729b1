// The python.* live tables: stacks and threads (from the backtrace capture, which falls back to
// the GIL-free reader when the GIL is held), loaded modules and live objects.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include "core/proc_files.h"
#include "core/settings.h"
#include "layout/relocate.h"
#include "python/frames.h"
#include "python/gc_census.h"
#include "python/gil_free.h"
#include "python/helpers.h"
#include "sql/tables/tables.h"

namespace probing::sql {

extern const char kPythonTablesSource[];

namespace {

constexpr ColumnType kInt = ColumnType::kInteger;
constexpr ColumnType kText = ColumnType::kText;
constexpr ColumnType kReal = ColumnType::kReal;
constexpr python::HelperSource kHelpers{kPythonTablesSource, "probing._tables"};
constexpr int kMaxModules = 100000;
constexpr double kObjectsBudgetS = 0.5;
constexpr double kNamesBudgetS = 0.2;       // python.tensors' walk of names, after its census
constexpr double kMainThreadFirstS = 0.25;  // python.tensors waits this long on the main thread first
// Less than this left of the query's GIL budget: the GIL-bound part of a scan is not started.
constexpr double kMinGilBudgetS = 0.005;
constexpr char kGilBudgetSpent[] =
    "the query's GIL budget (query.gil_budget_s) was spent by its earlier scans";

Value json_value(const nlohmann::json& j) {
  if (j.is_number_integer()) return j.get<long long>();
  if (j.is_number()) return j.get<double>();
  if (j.is_boolean()) return static_cast<long long>(j.get<bool>());
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return std::monostate{};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A frame's locals ([{"name", "value", "kind"}...]) as the text of a JSON object name -> value,
// its keys in the order the function declares them (written out here: nlohmann's objects sort).
std::string locals_object_text(const nlohmann::json& locals) {
  auto quoted = [](const nlohmann::json& v) {
    return nlohmann::json(v.is_string() ? v : nlohmann::json(v.dump()))
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::string text = "{";
  for (const auto& local : locals) {
    if (!local.is_object()) continue;
    if (text.size() > 1) text += ", ";
    text += quoted(local.value("name", nlohmann::json(""))) + ": " +
            quoted(local.value("value", nlohmann::json()));
  }
  return text + "}";
}

Result<python::PythonRuntime*> runtime() {
  Result<python::PythonRuntime*> rt = python::PythonRuntime::get();
  if (!rt.is_ok()) return rt.status().with_context("Python is not available");
  return rt;
}

void add_capture_notices(const nlohmann::json& capture, LiveRows& out) {
  for (const auto& n : capture.value("notes", nlohmann::json::array())) {
    if (n.is_string()) out.notices.push_back(n.get<std::string>());
  }
}

// ---- python.backtrace ----

constexpr int kBacktraceThreadColumn = 5;

Result<LiveRows> fetch_backtrace(const ScanRequest& request) {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  python::BacktraceOptions options;
  LiveRows out;
  options.locals = request.uses(7);
  if (options.locals && request.gil_budget_s < kMinGilBudgetS) {
    options.locals = false;
    out.notices.push_back(kGilBudgetSpent + std::string("; locals are left out"));
  }
  options.locals_budget_s = std::min(options.locals_budget_s, request.gil_budget_s);
  options.gil_timeout_s = settings().get_double("backtrace.gil_timeout_s");
  for (const auto& [column, value] : request.equals) {
    if (column != kBacktraceThreadColumn) continue;
    const long long* tid = std::get_if<long long>(&value);
    if (tid == nullptr || *tid <= 0) return LiveRows{};  // no thread has that id
    options.thread = *tid;
  }
  Result<nlohmann::json> capture = python::capture_backtrace(**rt, options);
  if (capture.status().code() == Code::kNotFound) return LiveRows{};
  if (!capture.is_ok()) return capture.status();
  add_capture_notices(*capture, out);
  for (const auto& t : (*capture)["threads"]) {
    Value thread = json_value(t.value("thread_id", nlohmann::json()));
    for (const auto& f : t["frames"]) {
      Value locals;
      if (f.contains("locals") && f["locals"].is_array()) locals = locals_object_text(f["locals"]);
      out.rows.push_back(
          {json_value(f.value("func", nlohmann::json())), json_value(f.value("file", nlohmann::json())),
           json_value(f.value("lineno", nlohmann::json())), json_value(f.value("depth", nlohmann::json())),
           json_value(f.value("frame_type", nlohmann::json("Python"))), thread,
           json_value(f.value("source", nlohmann::json())), locals});
    }
    if (t.contains("note") && t["note"].is_string()) out.notices.push_back(t["note"].get<std::string>());
  }
  return out;
}

// ---- python.backtrace_tree ----

constexpr size_t kMaxTreeProcesses = 256;
constexpr int kMaxTreeDepth = 8;

// One process's stacks as rows: (pid, ppid, thread_id, native_thread_id, depth, func, file, lineno).
void add_tree_rows(pid_t pid, const layout::GilFreeSnapshot& snap, LiveRows& out) {
  std::optional<ProcStat> st = read_proc_stat(pid);
  const long long ppid = st ? static_cast<long long>(st->number(4)) : 0;
  for (const layout::RawThread& t : snap.threads) {
    long long depth = 0;
    for (const layout::RawFrame& f : t.frames) {
      out.rows.push_back({static_cast<long long>(pid), ppid != 0 ? Value(ppid) : Value(std::monostate{}),
                          static_cast<long long>(t.thread_id),
                          t.native_thread_id != 0 ? Value(static_cast<long long>(t.native_thread_id))
                                                  : Value(std::monostate{}),
                          depth++, f.func, f.file,
                          f.lineno >= 0 ? Value(static_cast<long long>(f.lineno)) : Value(std::monostate{})});
    }
  }
}

// This process and every descendant that runs its interpreter (forks; execs of the same python),
// read without the GIL and without stopping anything.
Result<LiveRows> fetch_backtrace_tree(const ScanRequest&) {
  LiveRows out;
  Result<layout::GilFreeSnapshot> own = python::read_stacks_gil_free({});
  if (!own.is_ok()) return own.status();
  add_tree_rows(::getpid(), *own, out);
  const std::vector<pid_t> kids = layout::descendants(kMaxTreeProcesses, kMaxTreeDepth);
  for (pid_t pid : kids) {
    Result<layout::GilFreeSnapshot> snap = python::read_descendant_stacks(pid, {});
    if (snap.is_ok()) {
      add_tree_rows(pid, *snap, out);
    } else if (std::optional<ProcStat> st = read_proc_stat(pid); st && st->state() != 'Z') {
      out.notices.push_back("process " + std::to_string(pid) + " not read: " + snap.status().message());
    }
  }
  if (kids.size() >= kMaxTreeProcesses) {
    out.notices.push_back("only the first " + std::to_string(kMaxTreeProcesses) + " descendants are read");
  }
  return out;
}

// ---- python.threads ----

Result<LiveRows> fetch_threads(const ScanRequest&) {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  python::BacktraceOptions options;
  options.all = true;
  options.gil_timeout_s = settings().get_double("backtrace.gil_timeout_s");
  Result<nlohmann::json> capture = python::capture_backtrace(**rt, options);
  if (!capture.is_ok()) return capture.status();
  LiveRows out;
  add_capture_notices(*capture, out);
  for (const auto& t : (*capture)["threads"]) {
    const nlohmann::json& frames = t["frames"];
    nlohmann::json top = frames.empty() ? nlohmann::json::object() : frames[0];
    out.rows.push_back(
        {json_value(t.value("thread_id", nlohmann::json())),
         json_value(t.value("native_thread_id", nlohmann::json())),
         json_value(t.value("name", nlohmann::json())), json_value(t.value("daemon", nlohmann::json())),
         json_value(t.value("is_main", nlohmann::json())), json_value(t.value("holds_gil", nlohmann::json())),
         json_value(top.value("func", nlohmann::json())), json_value(top.value("file", nlohmann::json())),
         json_value(top.value("lineno", nlohmann::json())), static_cast<long long>(frames.size())});
  }
  return out;
}

// ---- python.modules and python.objects ----

// The rows of a helper's reply: {"rows": [[cell, ...], ...]}.
LiveRows rows_of(const nlohmann::json& reply) {
  LiveRows out;
  for (const auto& row : reply["rows"]) {
    Row r;
    for (const auto& cell : row) r.push_back(json_value(cell));
    out.rows.push_back(std::move(r));
  }
  return out;
}

Result<LiveRows> rows_from_helper(const char* function, const nlohmann::json& args, double run_timeout_s,
                                  nlohmann::json* reply) {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  python::HelperCall call(settings().get_double("gil.timeout_s"), run_timeout_s);
  Result<nlohmann::json> j = python::call_helper(**rt, kHelpers, function, args, call);
  if (!j.is_ok()) return j.status();
  LiveRows out = rows_of(*j);
  *reply = std::move(j).value();
  return out;
}

constexpr int kMaxGrowthRows = 1000;

Result<LiveRows> fetch_memory(const ScanRequest&) {
  nlohmann::json reply;
  return rows_from_helper("memory", nlohmann::json::array(), 5, &reply);
}

// A tracemalloc snapshot and its comparison with the base: seconds for a heap of millions of
// traces (tracemalloc's C code, which cannot be interrupted).
Result<LiveRows> fetch_memory_growth(const ScanRequest&) {
  nlohmann::json reply;
  Result<LiveRows> out = rows_from_helper("memory_growth", {kMaxGrowthRows}, 30, &reply);
  if (out.is_ok() && reply.value("total", 0) > kMaxGrowthRows) {
    out->notices.push_back("the " + std::to_string(kMaxGrowthRows) + " lines that grew most of " +
                           std::to_string(reply.value("total", 0)));
  }
  return out;
}

Result<LiveRows> fetch_modules(const ScanRequest&) {
  nlohmann::json reply;
  Result<LiveRows> out = rows_from_helper("modules", {kMaxModules}, 5, &reply);
  if (out.is_ok() && reply.value("total", 0) > kMaxModules) {
    out->notices.push_back("only the first " + std::to_string(kMaxModules) + " modules are listed");
  }
  return out;
}

// Runs take(), which takes a census (python/gc_census.h), and while the census is refused because
// a thread runs a backward pass, again every 5 ms, the GIL let go in between, for up to two seconds.
template <class Take>
auto retry_during_backward(Take take) -> decltype(take()) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  auto result = take();
  while (!result.is_ok() && result.status().code() == Code::kUnavailable &&
         result.status().message().find(python::kInBackward) != std::string::npos &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    result = take();
  }
  return result;
}

// A census that stopped at its time limit says how far it got.
void note_partial_census(LiveRows* out, long long seen, long long total, double budget_s) {
  if (seen >= total) return;
  char limit[32];
  std::snprintf(limit, sizeof limit, "%.2g", budget_s);
  out->notices.push_back("counted " + std::to_string(seen) + " of " + std::to_string(total) +
                         " objects before the " + limit + " s limit" +
                         (budget_s < kObjectsBudgetS ? " (what was left of query.gil_budget_s)" : ""));
}

Result<LiveRows> fetch_objects(const ScanRequest& request) {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  if (request.gil_budget_s < kMinGilBudgetS) {
    LiveRows out;
    out.notices.push_back(kGilBudgetSpent + std::string("; no objects were counted"));
    return out;
  }
  const double budget_s = std::min(kObjectsBudgetS, request.gil_budget_s);
  bool sizes = request.uses(3);
  auto counted = std::make_shared<std::pair<long long, long long>>(0, 0);  // seen, total
  python::MakeArgs census_args = [sizes, counted,
                                  budget_s](const python::CApi& api) -> Result<std::vector<python::PyRef>> {
    Result<python::Census> census = python::take_census(api, budget_s, sizes);
    if (!census.is_ok()) return census.status();
    *counted = {census->seen, census->total};
    python::PyRef types(api, api.PyList_New(0)), counts(api, api.PyList_New(0));
    python::PyRef size_list =
        sizes ? python::PyRef(api, api.PyList_New(0)) : python::PyRef::borrow(api, api.None);
    if (!types || !counts || !size_list) return Status(Code::kInternal, python::fetch_error_text(api));
    for (const python::TypeCount& tc : census->types) {
      python::PyRef n(api, api.PyLong_FromLongLong(tc.count));
      python::PyRef bytes(api, api.PyLong_FromLongLong(tc.size_bytes));
      if (!n || !bytes || api.PyList_Append(types.get(), tc.type.get()) != 0 ||
          api.PyList_Append(counts.get(), n.get()) != 0 ||
          (sizes && api.PyList_Append(size_list.get(), bytes.get()) != 0)) {
        return Status(Code::kInternal, python::fetch_error_text(api));
      }
    }
    std::vector<python::PyRef> args;
    args.push_back(std::move(types));
    args.push_back(std::move(counts));
    args.push_back(std::move(size_list));
    return args;
  };
  python::HelperCall call(settings().get_double("gil.timeout_s"), 5);
  Result<nlohmann::json> j = retry_during_backward(
      [&] { return python::call_helper(**rt, kHelpers, "objects", census_args, call); });
  if (!j.is_ok()) return j.status();
  LiveRows out = rows_of(*j);
  note_partial_census(&out, counted->first, counted->second, budget_s);
  return out;
}

Result<LiveRows> fetch_tensors(const ScanRequest& request) {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  if (request.gil_budget_s < kMinGilBudgetS) {
    LiveRows out;
    out.notices.push_back(kGilBudgetSpent + std::string("; no tensors were read"));
    return out;
  }
  const double budget_s = std::min(kObjectsBudgetS, request.gil_budget_s);
  const double names_budget_s = std::min(kNamesBudgetS, budget_s);
  struct Outcome {  // written on the thread that takes the census, maybe after the caller gave up
    Status status;
    python::TensorCensus census;
    bool taken = false;
    std::string main_thread;  // where the main thread was, when it was not asked
  };
  using Clock = std::chrono::steady_clock;
  const double gil_timeout_s = settings().get_double("gil.timeout_s");
  const double run_timeout_s = 5 * kObjectsBudgetS;
  python::PythonExecutor& executor = (*rt)->executor();
  // On the main thread (python/gc_census.h says why). When it runs no bytecode for a while, it may
  // be parked in a wait of the standard library (an event loop or a server with nothing to do, a
  // join): then on a worker, which holds the GIL the main thread would need to come back.
  auto take = [&]() -> Result<python::TensorCensus> {
    auto outcome = std::make_shared<Outcome>();
    auto census_into = [outcome, budget_s, names_budget_s](const python::CApi& api) {
      Result<python::TensorCensus> c = python::take_tensor_census(api, budget_s, names_budget_s);
      outcome->taken = true;
      if (c.is_ok()) {
        outcome->census = std::move(c).value();
      } else {
        outcome->status = c.status();
      }
    };
    const Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                          std::chrono::duration<double>(gil_timeout_s));
    Status st = executor.run_on_main_thread(
        census_into,
        python::PythonExecutor::make_limits(std::min(gil_timeout_s, kMainThreadFirstS), run_timeout_s));
    if (st.code() == Code::kUnavailable) {
      auto left = [&] { return std::chrono::duration<double>(deadline - Clock::now()).count(); };
      Status parked = executor.run(
          [outcome, census_into](const python::CApi& api) {
            if (python::main_thread_parked_outside_torch(api, &outcome->main_thread)) census_into(api);
          },
          python::PythonExecutor::make_limits(std::max(left(), 0.0), run_timeout_s), nullptr);
      if (!parked.is_ok()) {
        st = parked;
      } else if (outcome->taken) {
        st = Status::ok();
      } else if (left() > 0) {
        st = executor.run_on_main_thread(census_into,
                                         python::PythonExecutor::make_limits(left(), run_timeout_s));
      }
      if (st.code() == Code::kUnavailable && st.message().starts_with(python::kMainThreadIdle)) {
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.3g", gil_timeout_s);
        st = Status(Code::kUnavailable, std::string(python::kMainThreadIdle) + " for " + secs +
                                            " s (gil.timeout_s): it is " + outcome->main_thread +
                                            ": a C call that may be a PyTorch operation "
                                            "(see `probing PID backtrace --native`)");
      }
    }
    if (!st.is_ok()) {
      return st.with_context(
          "tensors are read on the main thread, between two of its bytecodes, where none of its "
          "PyTorch operations is running, or while it waits in the standard library");
    }
    if (!outcome->status.is_ok()) return outcome->status;
    return std::move(outcome->census);
  };
  Result<python::TensorCensus> census = retry_during_backward(take);
  if (!census.is_ok()) return census.status();
  LiveRows out;
  for (python::TensorStorage& s : census->storages) {
    Value names = std::monostate{};
    if (!s.names.empty()) {
      std::string joined;
      for (const std::string& n : s.names) joined += (joined.empty() ? "" : ", ") + n;
      names = std::move(joined);
    }
    out.rows.push_back({std::move(s.shape), std::move(s.dtype), std::move(s.device), s.bytes,
                        std::move(names), s.objects, static_cast<long long>(s.parameter),
                        static_cast<long long>(s.requires_grad), s.address});
  }
  if (!census->torch) out.notices.push_back("this process has not imported torch");
  if (census->unread > 0) {
    out.notices.push_back(std::to_string(census->unread) +
                          " tensor(s) not read: instances of a subclass with a __torch_function__ or "
                          "__torch_dispatch__ of its own (reading them may run its Python code), or "
                          "without a storage (sparse)");
  }
  note_partial_census(&out, census->seen, census->total, budget_s);
  return out;
}

// The tables the agent records into: torch tracing (src/torch) and probing.span/event.
Status add_recorded_tables(Engine& engine) {
  ColumnStore::Limits limits{static_cast<size_t>(settings().get_int("store.max_rows")),
                             static_cast<size_t>(settings().get_int("store.max_bytes")), 8192};
  auto torch_trace = std::make_shared<ColumnStore>(
      "python", "torch_trace",
      std::vector<ColumnDef>{
          {"step", kInt,
           "training step: counted by optimizer.step(), or by top-level forward calls without one"},
          {"seq", kInt, "order of the row within its step, from 0"},
          {"module", kText,
           "dotted module name from the top model (its class name for the model itself); "
           "the optimizer's class for stage 'step'"},
          {"stage", kText,
           "forward, backward (one row per backward pass), step (the optimizer) or data (the wait for "
           "a DataLoader's batch)"},
          {"duration", kReal, "seconds: wall clock on CPU, CUDA events on the GPU"},
          {"self_duration", kReal,
           "forward rows: duration less that of its traced children (the module's own time); NULL "
           "otherwise"},
          {"allocated", kReal, "CUDA memory allocated after the call, MB; NULL on CPU"},
          {"max_allocated", kReal, "peak CUDA memory allocated so far, MB; NULL on CPU"},
          {"time", kReal, "when the call started, unix time in seconds"}},
      limits);
  PROBING_RETURN_IF_ERROR(engine.add_store(torch_trace,
                                           "PyTorch module calls, backward passes, optimizer steps and "
                                           "DataLoader waits, per step (torch.trace)."));
  auto spans = std::make_shared<ColumnStore>(
      "python", "spans",
      std::vector<ColumnDef>{{"span_id", kInt, "id of the span, unique in the process"},
                             {"parent_id", kInt, "the enclosing span's id; NULL at top level"},
                             {"name", kText, "the name given to probing.span"},
                             {"start", kReal, "when it began, unix time in seconds"},
                             {"duration", kReal, "seconds"},
                             {"thread_id", kInt, "threading ident of the thread it ran on"},
                             {"attrs", kText, "its keyword attributes as a JSON object"},
                             {"error", kText, "the exception type that left the span, or NULL"}},
      limits);
  PROBING_RETURN_IF_ERROR(engine.add_store(spans, "probing.span(name, **attrs): timed regions, nested."));
  auto events = std::make_shared<ColumnStore>(
      "python", "events",
      std::vector<ColumnDef>{{"time", kReal, "unix time in seconds"},
                             {"name", kText, "the name given to probing.event"},
                             {"span_id", kInt, "the span it happened in; NULL outside any"},
                             {"thread_id", kInt, "threading ident of the thread"},
                             {"attrs", kText, "its keyword attributes as a JSON object"}},
      limits);
  PROBING_RETURN_IF_ERROR(engine.add_store(events, "probing.event(name, **attrs): points in time."));
  auto exceptions = std::make_shared<ColumnStore>(
      "python", "exceptions",
      std::vector<ColumnDef>{
          {"time", kReal, "when the exception reached the hook, unix time in seconds"},
          {"kind", kText,
           "uncaught (sys.excepthook: the main thread's, ending the program), thread (threading.excepthook: "
           "a thread's, ending that thread), unraisable (sys.unraisablehook: in a __del__, a callback, a "
           "generator's close; the program goes on) or raised (a catch's: raised, caught or not)"},
          {"thread", kText, "the thread's name; NULL when threading is not imported"},
          {"thread_id", kInt, "threading ident of the thread"},
          {"type", kText, "the exception's class (module.Class, built-ins without module)"},
          {"message", kText, "str() of the exception, at most 1000 characters"},
          {"file", kText, "where it was raised: the innermost frame's file"},
          {"line", kInt, "and line"},
          {"function", kText, "and function (qualified name on 3.11+)"},
          {"stack", kText,
           "the traceback as a JSON list, innermost frame first: func, file, lineno, locals (name, value in "
           "brief: no code of the program's runs, kind); 32 frames and 32 locals each at most, 64 KiB"},
          {"chain", kText,
           "the exceptions it was raised from or during, as a JSON list of {how: cause|context, type, "
           "message}; NULL when none"},
          {"context", kText,
           "unraisable: what CPython says it was raised in (err_msg: the object); raised: the catch that "
           "recorded it (catch ID)"}},
      ColumnStore::Limits{1000, 16 << 20, 256});
  PROBING_RETURN_IF_ERROR(
      engine.add_store(exceptions,
                       "Exceptions no code caught: each thread's, the main thread's last one, and those "
                       "raised where nothing can catch them (exceptions.capture); and the raises that "
                       "`probing PID catch CLASS` records, caught or not."));
  auto probe_hits = std::make_shared<ColumnStore>(
      "python", "probe_hits",
      std::vector<ColumnDef>{
          {"time", kReal, "when the probed code ran there, unix time in seconds"},
          {"probe_id", kInt, "the probe's id (probe list)"},
          {"thread", kText, "the thread's name; NULL when threading is not imported"},
          {"thread_id", kInt, "threading ident of the thread"},
          {"rank", kInt, "the process's RANK in a distributed job; NULL outside one"},
          {"file", kText, "the probed code's file"},
          {"line", kInt, "the line it was at"},
          {"function", kText, "its function (qualified name on 3.11+)"},
          {"event", kText, "line, call (a function's entry) or return"},
          {"captured", kText,
           "a JSON object: each --capture expression and its value in brief (200 characters), null when it "
           "raised; a return's value under \"return\""},
          {"error", kText, "the first expression that raised, with its exception; NULL when none did"}},
      ColumnStore::Limits{100000, 16 << 20, 1024});
  return engine.add_store(probe_hits,
                          "What each probe recorded each time its code ran (probing PID probe add): "
                          "breakpoints that record and go on.");
}

}  // namespace

Result<nlohmann::json> memory_snapshot() {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  return python::call_helper(**rt, kHelpers, "memory_snapshot", nlohmann::json::array(),
                             python::HelperCall(settings().get_double("gil.timeout_s"), 30));
}

Result<nlohmann::json> cuda_history(const std::string& op, long long max_entries, const std::string& path) {
  Result<python::PythonRuntime*> rt = runtime();
  if (!rt.is_ok()) return rt.status();
  return python::call_helper(**rt, kHelpers, "cuda_history", {op, max_entries, path},
                             python::HelperCall(settings().get_double("gil.timeout_s"), 120));
}

Status add_python_tables(Engine& engine) {
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"python",
       "backtrace",
       "The main thread's Python stack, innermost frame first; WHERE thread_id = N gives another thread's. "
       "Read without the GIL (no locals) when the GIL is held past backtrace.gil_timeout_s.",
       {{"func", kText, "function name (<module> for module-level code)"},
        {"file", kText, "source file path"},
        {"lineno", kInt, "line being run"},
        {"depth", kInt, "0 is the innermost frame"},
        {"frame_type", kText,
         "'Python'; native frames are read from outside the process: backtrace --native"},
        {"thread_id", kInt, "threading ident of the thread"},
        {"source", kText, "text of the line, when the file can be read"},
        {"locals", kText,
         "JSON object of the frame's locals, name -> brief repr, in the order the function "
         "declares them, arguments first (read only when selected)"}},
       {kBacktraceThreadColumn},
       fetch_backtrace,
       true}));
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"python",
       "backtrace_tree",
       "Every thread's Python stack in this process and in each process under it that runs the same "
       "interpreter (DataLoader and multiprocessing workers: forks, or execs of the same python), read "
       "without the GIL and without stopping anything; innermost frame first.",
       {{"pid", kInt, "the process (its pid as the agent sees it)"},
        {"ppid", kInt, "its parent"},
        {"thread_id", kInt, "threading ident of the thread"},
        {"native_thread_id", kInt, "kernel thread id; NULL on 3.9-3.10"},
        {"depth", kInt, "0 is the innermost frame"},
        {"func", kText, "function name (co_qualname on 3.11+)"},
        {"file", kText, "source file path"},
        {"lineno", kInt, "line being run; NULL when the instruction has none"}},
       {},
       fetch_backtrace_tree}));
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"python",
       "threads",
       "Every Python thread, with where it is now.",
       {{"thread_id", kInt, "threading ident"},
        {"native_thread_id", kInt, "kernel thread id (process.threads.tid)"},
        {"name", kText, "thread name"},
        {"daemon", kInt, "1 for a daemon thread; NULL when unknown"},
        {"is_main", kInt, "1 for the main thread"},
        {"holds_gil", kInt, "1 for the thread holding the GIL when it could not be had"},
        {"func", kText, "innermost function"},
        {"file", kText, "its file"},
        {"lineno", kInt, "its line"},
        {"depth", kInt, "number of Python frames on the stack"}},
       {},
       fetch_threads}));
  PROBING_RETURN_IF_ERROR(
      engine.add_live_table({"python",
                             "modules",
                             "Modules in sys.modules.",
                             {{"name", kText, "module name"},
                              {"version", kText, "its __version__, when it is a string"},
                              {"file", kText, "where it was loaded from ('built-in', 'frozen' or a path)"},
                              {"package", kText, "its __package__"},
                              {"top_level", kInt, "1 for a top-level module (no dot in the name)"}},
                             {},
                             fetch_modules}));
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"python",
       "memory",
       "The Python heap and its collector, tracemalloc's tally while memory is tracked, and PyTorch's CUDA "
       "allocator where CUDA is in use. One row; process.memory has the RSS.",
       {{"allocated_blocks", kInt,
         "memory blocks Python's allocator has handed out (sys.getallocatedblocks)"},
        {"gc_count0", kInt, "objects allocated since the last generation-0 collection"},
        {"gc_count1", kInt, "generation-0 collections since the last generation-1 one"},
        {"gc_count2", kInt, "generation-1 collections since the last full one"},
        {"gc_collections", kInt, "collections so far, all generations"},
        {"gc_collected", kInt, "objects the collector freed so far"},
        {"gc_uncollectable", kInt, "objects it found uncollectable"},
        {"gc_garbage", kInt, "objects in gc.garbage"},
        {"tracing", kInt, "1 while tracemalloc traces allocations (PYTHONTRACEMALLOC=1 at start)"},
        {"trace_frames", kInt, "frames kept per traced allocation"},
        {"traced_mb", kReal, "memory tracemalloc counts as allocated now, MB"},
        {"traced_peak_mb", kReal, "its peak since tracing started, MB"},
        {"base_time", kReal, "when python.memory_growth's base snapshot was taken, unix seconds"},
        {"cuda_allocated_mb", kReal, "torch.cuda.memory_allocated(), MB; NULL without CUDA"},
        {"cuda_reserved_mb", kReal, "torch.cuda.memory_reserved(), MB"},
        {"cuda_max_allocated_mb", kReal, "torch.cuda.max_memory_allocated(), MB"}},
       {},
       fetch_memory}));
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"python",
       "memory_growth",
       "In a process that traces its allocations (started with PYTHONTRACEMALLOC=1): what each line of code "
       "allocated since the base (the last memory snapshot; before any, since tracing began) and is still "
       "alive, most growth first. Reading it takes a tracemalloc snapshot.",
       {{"file", kText, "source file of the allocating line"},
        {"lineno", kInt, "the line"},
        {"size_diff_kb", kReal, "growth since the base, KiB (negative: freed)"},
        {"size_kb", kReal, "alive now, KiB"},
        {"count_diff", kInt, "growth in allocations since the base"},
        {"count", kInt, "allocations alive now"}},
       {},
       fetch_memory_growth}));
  PROBING_RETURN_IF_ERROR(add_recorded_tables(engine));
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"python",
       "tensors",
       "Live PyTorch tensors that have a Python object, one row per storage (views folded into it), "
       "largest first, with the names that reach them from __main__: modules' parameters, their gradients "
       "and buffers, optimizer state, globals. Read on the main thread between two of its bytecodes "
       "(or while it waits in the standard library), at most 0.5 s.",
       {{"shape", kText, "shape of the largest tensor on the storage, as [d0, d1, ...]"},
        {"dtype", kText, "its element type (float32, ...)"},
        {"device", kText, "cpu, cuda:0, ..."},
        {"bytes", kInt, "the storage's size in bytes"},
        {"names", kText,
         "names that reach it from __main__, comma-separated (model.head.weight, model.head.weight.grad, "
         "optimizer.state[model.head.weight].exp_avg, x); NULL when none was found"},
        {"views", kInt, "tensor objects on the storage (itself and its views)"},
        {"parameter", kInt, "1 when one of them is an nn.Parameter"},
        {"requires_grad", kInt, "1 when one of them requires grad"},
        {"address", kInt, "the storage's data pointer"}},
       {},
       fetch_tensors,
       true}));
  return engine.add_live_table(
      {"python",
       "objects",
       "Objects tracked by the garbage collector, counted by type (at most 0.5 s of counting).",
       {{"type", kText, "type's qualified name"},
        {"module", kText, "module of the type"},
        {"count", kInt, "live objects of that type"},
        {"size_bytes", kInt,
         "sum of shallow sizes, bytes: sys.getsizeof for built-in types, object.__sizeof__ for classes "
         "(computed only when selected)"}},
       {},
       fetch_objects,
       true});
}

}  // namespace probing::sql
