// probing TARGET memory [snapshot | diff | cuda-history]: the process's memory at a glance
// (process.memory, python.memory, python.objects); in a process that traces its allocations
// (tracemalloc, PYTHONTRACEMALLOC=1 at start) what grows, by line (POST /memory,
// python.memory_growth); and PyTorch's CUDA allocation history (POST /memory).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "cli/format.h"

namespace probing::cli {
namespace {

constexpr double kTimeoutS = 60;

struct MemoryArgs {
  int limit = 20;
  std::vector<std::string> ignored;  // memory track's words
  std::string history_op;            // cuda-history start|stop|dump
  long long max_entries = 100000;
  std::string output;
};

// Why tracemalloc is not started or stopped here, for `memory track`.
constexpr const char* kNoTrack =
    "tracemalloc is not started or stopped in a running process: Python switches its allocators without a "
    "lock while other threads allocate without the GIL, and a process did crash so under load. Start the "
    "process with PYTHONTRACEMALLOC=1 (every Python allocation then costs more: docs/performance.md); "
    "`memory diff` and `memory snapshot` work in it";

Result<nlohmann::json> post(const Context& ctx, const std::string& path, const nlohmann::json& body) {
  auto client = connect_target(ctx);
  if (!client.is_ok()) return client.status();
  return agent_json(**client, "POST", path, body.dump(), kTimeoutS,
                    "this agent is older than this probing: restart the process with this version's agent");
}

Result<nlohmann::json> query(const Context& ctx, const std::string& sql) {
  return post(ctx, "/query", {{"sql", sql}});
}

// The first row of a query's reply as column -> value.
nlohmann::json first_row(const nlohmann::json& reply) {
  std::vector<nlohmann::json> rows = rows_as_objects(reply);
  return rows.empty() ? nlohmann::json::object() : rows[0];
}

std::string mb(const nlohmann::json& v) {
  if (!v.is_number()) return "?";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", v.get<double>());
  return buf;
}

std::string num(const nlohmann::json& v) { return v.is_number() ? v.dump() : "?"; }

int run_summary(const Context& ctx) {
  Result<nlohmann::json> process = query(ctx, "SELECT * FROM process.memory");
  if (!process.is_ok()) return fail(process.status());
  Result<nlohmann::json> python = query(ctx, "SELECT * FROM python.memory");
  if (!python.is_ok()) return fail(python.status());
  const nlohmann::json p = first_row(*process), y = first_row(*python);
  std::cout << "process   RSS " << mb(p["rss_mb"]) << " (peak " << mb(p["peak_rss_mb"]) << "), anonymous "
            << mb(p["anon_mb"]) << ", swap " << mb(p["swap_mb"]) << "; machine available "
            << mb(p["system_available_mb"]) << "\n";
  std::cout << "python    " << num(y["allocated_blocks"]) << " allocated blocks; gc " << num(y["gc_count0"])
            << "/" << num(y["gc_count1"]) << "/" << num(y["gc_count2"]) << " since the last collections, "
            << num(y["gc_collections"]) << " collections, " << num(y["gc_uncollectable"])
            << " uncollectable, " << num(y["gc_garbage"]) << " in gc.garbage\n";
  if (y.value("tracing", nlohmann::json(0)) == 1) {
    std::cout << "traced    " << mb(y["traced_mb"]) << " (peak " << mb(y["traced_peak_mb"]) << "), "
              << num(y["trace_frames"]) << " frame(s) per allocation: `memory diff` shows what grew\n";
  } else {
    std::cout << "traced    no (a process started with PYTHONTRACEMALLOC=1 shows what grows, by line)\n";
  }
  if (y["cuda_allocated_mb"].is_number()) {
    std::cout << "cuda      " << mb(y["cuda_allocated_mb"]) << " allocated, " << mb(y["cuda_reserved_mb"])
              << " reserved (peak allocated " << mb(y["cuda_max_allocated_mb"]) << ")\n";
  }
  // The largest tensors, where the program uses PyTorch (python.tensors says so otherwise).
  Result<nlohmann::json> tensors =
      query(ctx, "SELECT shape, dtype, device, bytes / 1048576.0 AS mb, names FROM python.tensors LIMIT 5");
  if (tensors.is_ok() && !tensors->value("rows", nlohmann::json::array()).empty()) {
    std::cout << "\nlargest tensors (python.tensors):\n" << format_table(*tensors, terminal_width(), false);
  } else if (!tensors.is_ok()) {
    std::cout << "\nlargest tensors: not read: " << tensors.status().message() << "\n";
  }
  Result<nlohmann::json> types =
      query(ctx, "SELECT type, module, count FROM python.objects ORDER BY count DESC LIMIT 10");
  std::cout << "\nobjects by type (python.objects):\n";
  if (types.is_ok()) {
    std::cout << format_table(*types, terminal_width(), false);
    std::cerr << format_notices(*types);
  } else {
    std::cout << "  not counted: " << types.status().message() << "\n";
  }
  return kExitOk;
}

int run_snapshot(const Context& ctx) {
  Result<nlohmann::json> r = post(ctx, "/memory", {{"action", "snapshot"}});
  if (!r.is_ok()) return fail(r.status());
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "new base: %lld allocations alive, %.1f MB; `memory diff` shows what grows from here\n",
                r->value("traces", 0LL), r->value("bytes", 0.0) / (1 << 20));
  std::cout << buf;
  return kExitOk;
}

int run_diff(const Context& ctx, const MemoryArgs& args) {
  Result<nlohmann::json> r =
      query(ctx,
            "SELECT file, lineno, size_diff_kb, size_kb, count_diff, count FROM python.memory_growth "
            "ORDER BY size_diff_kb DESC LIMIT " +
                std::to_string(args.limit));
  if (!r.is_ok()) return fail(r.status());
  std::cout << format_table(*r, terminal_width());
  std::cerr << format_notices(*r);
  return kExitOk;
}

int run_cuda_history(const Context& ctx, const MemoryArgs& args) {
  nlohmann::json body{{"action", "cuda-history"}, {"op", args.history_op}, {"max_entries", args.max_entries}};
  std::string path;
  if (args.history_op == "dump") {
    path = args.output.empty() ? "cuda-history.pickle" : args.output;
    if (path[0] != '/') {
      char cwd[4096];
      if (::getcwd(cwd, sizeof cwd) == nullptr) return fail("cannot read the current directory");
      path = std::string(cwd) + "/" + path;
    }
    body["path"] = path;
  }
  Result<nlohmann::json> r = post(ctx, "/memory", body);
  if (!r.is_ok()) return fail(r.status());
  if (args.history_op == "start") {
    std::cout << "recording CUDA allocations (the last " << args.max_entries
              << " events kept); `memory cuda-history dump -o FILE` writes them\n";
  } else if (args.history_op == "stop") {
    std::cout << "stopped recording CUDA allocations\n";
  } else {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%.1f MB, %lld events, %lld segments", r->value("bytes", 0.0) / (1 << 20),
                  r->value("events", 0LL), r->value("segments", 0LL));
    std::cout << "wrote " << path << " (" << buf << ", on the target's machine): open it in "
              << "https://pytorch.org/memory_viz\n";
  }
  return kExitOk;
}

}  // namespace

void add_memory_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<MemoryArgs>();
  CLI::App* cmd = app.add_subcommand(
      "memory",
      "The target's memory: RSS, the Python heap and collector, tracemalloc's tally, CUDA's allocator and\n"
      "the most numerous objects. In a process started with PYTHONTRACEMALLOC=1, `memory diff` shows by\n"
      "line what was allocated since the last `memory snapshot` (before any, since it began) and is still\n"
      "alive: what leaks.");
  CLI::App* track = cmd->add_subcommand("track", "why tracemalloc is not started or stopped at run time");
  track->add_option("words", args->ignored, "start, stop, ...");
  CLI::App* snapshot =
      cmd->add_subcommand("snapshot", "make now the base `memory diff` measures growth from");
  CLI::App* diff = cmd->add_subcommand("diff", "by line, what grew since the base and is still alive");
  diff->add_option("--limit", args->limit, "lines shown (default 20)")->check(CLI::Range(1, 1000));
  CLI::App* history = cmd->add_subcommand(
      "cuda-history",
      "PyTorch's record of CUDA allocations: start, stop, or dump it for pytorch.org/memory_viz");
  history->add_option("op", args->history_op, "start, stop or dump")
      ->required()
      ->check(CLI::IsMember({"start", "stop", "dump"}));
  history->add_option("--max-entries", args->max_entries, "allocation events kept while recording (100000)")
      ->check(CLI::Range(1LL, 100000000LL));
  history->add_option("-o,--output", args->output,
                      "dump: the file to write (cuda-history.pickle), a new file, on the target's machine");
  cmd->require_subcommand(0, 1);
  cmd->footer(
      "Examples:\n"
      "  probing 1234 memory\n"
      "  PYTHONTRACEMALLOC=1 probing launch -- python3 train.py\n"
      "  probing 1234 memory snapshot; sleep 60; probing 1234 memory diff\n"
      "  probing 1234 memory cuda-history start; sleep 30; probing 1234 memory cuda-history dump -o "
      "oom.pickle\n"
      "  probing 1234 query \"SELECT * FROM python.memory_growth WHERE file LIKE '%train.py'\"");
  on_run(track, [] { return fail(Status(Code::kUnsupported, kNoTrack)); });
  on_run(snapshot, [&ctx] { return run_snapshot(ctx); });
  on_run(diff, [&ctx, args] { return run_diff(ctx, *args); });
  on_run(history, [&ctx, args] { return run_cuda_history(ctx, *args); });
  on_run(cmd, [&ctx, cmd] { return cmd->get_subcommands().empty() ? run_summary(ctx) : kExitOk; });
}

}  // namespace probing::cli
