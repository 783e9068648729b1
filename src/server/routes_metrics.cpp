// GET /metrics: the process, its Python, its training loop and the agent in Prometheus' text
// format (docs/metrics.md). Read from /proc and the recorded tables only: no GIL, none of the
// target's code, so a scrape is answered while the process is wedged. Each query is over a recent
// window of its table, so a scrape costs the same after a week as after a minute.
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/proc_files.h"
#include "profile/sampler.h"
#include "python/runtime.h"
#include "server/routes.h"
#include "sql/engine.h"

namespace probing::server {
namespace {

constexpr double kTorchWindowS = 900;  // the torch metrics read this much of python.torch_trace
constexpr double kSpanWindowS = 300;
constexpr int kTopModules = 10;

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  for (int digits = 15; digits <= 17; ++digits) {  // the shortest text that reads back as v
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// The exposition, metric family by family; every sample gets the job's labels (rank, host).
class Exposition {
 public:
  explicit Exposition(Labels common) : common_(std::move(common)) {}

  void family(const std::string& name, const char* type, const std::string& help) {
    out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }

  void sample(const std::string& name, double value, const Labels& labels = {}) {
    out_ += name;
    Labels all = common_;
    all.insert(all.end(), labels.begin(), labels.end());
    if (!all.empty()) {
      out_ += '{';
      for (size_t i = 0; i < all.size(); ++i) {
        out_ += (i ? "," : "") + all[i].first + "=\"" + escape_label(all[i].second) + "\"";
      }
      out_ += '}';
    }
    out_ += " " + number(value) + "\n";
  }

  void one(const std::string& name, const char* type, const std::string& help, double value) {
    family(name, type, help);
    sample(name, value);
  }

  std::string text() const { return out_; }

 private:
  Labels common_;
  std::string out_;
};

// In a job (RANK set by the launcher), every series says which rank and host it is from. RANK is
// read from the environment the process started with (/proc/self/environ): getenv() on this
// thread could race the target's own setenv().
Labels job_labels() {
  Labels labels;
  const std::string env = read_proc_file("/proc/self/environ", 1 << 20);
  for (size_t at = 0; at < env.size();) {
    const size_t end = std::min(env.find('\0', at), env.size());
    if (env.compare(at, 5, "RANK=") == 0 && end > at + 5) {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      labels.emplace_back("rank", env.substr(at + 5, end - at - 5));
      labels.emplace_back("host", host);
      break;
    }
    at = end + 1;
  }
  return labels;
}

void process_metrics(Exposition& e) {
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (std::optional<ProcStat> st = read_proc_stat(::getpid())) {
    e.one("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.",
          (st->number(14) + st->number(15)) / tick);
    e.one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", st->number(23));
    e.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", st->number(24) * page);
    e.one("process_threads", "gauge", "Threads of the process (the kernel's count).", st->number(20));
    // Field 22 is the start in ticks after boot; /proc/stat's btime is the boot in unix seconds.
    const std::string stat = read_proc_file("/proc/stat", 1 << 16);
    const size_t at = stat.find("\nbtime ");
    if (at != std::string::npos) {
      e.one("process_start_time_seconds", "gauge", "Start time of the process since the epoch, in seconds.",
            std::strtod(stat.c_str() + at + 7, nullptr) + st->number(22) / tick);
    }
  }
  if (DIR* dir = ::opendir("/proc/self/fd"); dir != nullptr) {
    long fds = -1;  // the listing's own descriptor is among them
    while (const dirent* entry = ::readdir(dir)) fds += entry->d_name[0] != '.';
    ::closedir(dir);
    e.one("process_open_fds", "gauge", "Number of open file descriptors.", static_cast<double>(fds));
  }
  const std::string limits = read_proc_file("/proc/self/limits", 1 << 14);
  if (size_t at = limits.find("Max open files"); at != std::string::npos) {
    const double soft = std::strtod(limits.c_str() + at + 14, nullptr);
    if (soft > 0) e.one("process_max_fds", "gauge", "Maximum number of open file descriptors.", soft);
  }
}

// Rows of `sql`, or none when it fails (a table this agent lacks): a scrape shows what it can.
std::vector<std::vector<nlohmann::json>> rows_of(const std::string& sql) {
  Result<sql::QueryResult> r = sql::Engine::get().query(sql);
  return r.is_ok() ? std::move(r->rows) : std::vector<std::vector<nlohmann::json>>{};
}

double num(const nlohmann::json& v) { return v.is_number() ? v.get<double>() : std::nan(""); }
std::string text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

void torch_metrics(Exposition& e, double now) {
  // Each step's start (its first recorded call), the last 101 steps of the window: 100 step times.
  const std::string since = number(now - kTorchWindowS);
  auto steps = rows_of("SELECT step, min(time) FROM python.torch_trace WHERE time > " + since +
                       " GROUP BY step ORDER BY step DESC LIMIT 101");
  if (steps.empty()) return;
  e.one("probing_torch_step", "gauge", "The training step the process is at (python.torch_trace).",
        num(steps.front()[0]));
  std::vector<double> times;
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    const double dt = num(steps[i][1]) - num(steps[i + 1][1]);
    if (num(steps[i][0]) == num(steps[i + 1][0]) + 1 && dt >= 0) times.push_back(dt);
  }
  if (!times.empty()) {
    e.family("probing_torch_step_seconds", "summary",
             "Time from one training step's start to the next's, over the last " +
                 std::to_string(times.size()) + " steps of the last " + number(kTorchWindowS) + " s.");
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    for (double q : {0.5, 0.9, 0.99}) {
      const size_t at = std::min(sorted.size() - 1, static_cast<size_t>(std::ceil(q * sorted.size())) - 1);
      e.sample("probing_torch_step_seconds", sorted[at], {{"quantile", number(q)}});
    }
    double sum = 0;
    for (double t : times) sum += t;
    e.sample("probing_torch_step_seconds_sum", sum);
    e.sample("probing_torch_step_seconds_count", static_cast<double>(times.size()));
    e.one("probing_torch_steps_per_second", "gauge", "Training steps a second over the same steps.",
          sum > 0 ? static_cast<double>(times.size()) / sum : 0);
  }
  // The slowest modules of the last 5 steps, by mean duration per call.
  auto modules = rows_of("SELECT module, stage, avg(duration) AS d FROM python.torch_trace WHERE time > " +
                         since + " AND step > " + number(num(steps.front()[0]) - 5) +
                         " GROUP BY module, stage ORDER BY d DESC LIMIT " + std::to_string(kTopModules));
  if (!modules.empty()) {
    e.family("probing_torch_module_seconds", "gauge",
             "Mean duration of a call of the slowest modules over the last 5 steps, by stage.");
    for (const auto& r : modules) {
      e.sample("probing_torch_module_seconds", num(r[2]), {{"module", text(r[0])}, {"stage", text(r[1])}});
    }
  }
}

void span_metrics(Exposition& e, double now) {
  auto spans = rows_of("SELECT name, count(*), sum(duration) FROM python.spans WHERE start > " +
                       number(now - kSpanWindowS) + " GROUP BY name ORDER BY 2 DESC LIMIT 100");
  if (spans.empty()) return;
  e.family("probing_span_recent_count", "gauge",
           "probing.span() regions that began in the last 300 s, by name.");
  for (const auto& r : spans) e.sample("probing_span_recent_count", num(r[1]), {{"name", text(r[0])}});
  e.family("probing_span_recent_seconds", "gauge", "Their total duration, in seconds, by name.");
  for (const auto& r : spans) e.sample("probing_span_recent_seconds", num(r[2]), {{"name", text(r[0])}});
}

void agent_metrics(Exposition& e, const AgentInfo& info, double now) {
  e.family("probing_agent_info", "gauge", "The probing agent in this process: its version.");
  e.sample("probing_agent_info", 1, {{"version", info.version}});
  const std::string python = python::PythonRuntime::version_text();
  if (!python.empty()) {
    e.family("python_info", "gauge", "The Python the process runs.");
    e.sample("python_info", 1, {{"implementation", "CPython"}, {"version", python}});
  }
  e.one("probing_agent_uptime_seconds", "gauge", "Seconds since the agent started serving.",
        now - info.started_at);
  const nlohmann::json sampler = profile::sampler_status();
  e.one("probing_sampler_running", "gauge", "1 while the stack sampler (the flight recorder) runs.",
        sampler.value("running", false) ? 1 : 0);
  e.family("probing_table_rows", "gauge", "Rows a recorded table keeps now.");
  std::vector<sql::TableInfo> stores;
  for (sql::TableInfo& t : sql::Engine::get().tables()) {
    if (t.store) stores.push_back(std::move(t));
  }
  for (const sql::TableInfo& t : stores) {
    e.sample("probing_table_rows", static_cast<double>(t.store->stats().rows),
             {{"table", t.schema + "." + t.name}});
  }
  e.family("probing_table_bytes", "gauge", "Bytes a recorded table keeps now (within its cap).");
  for (const sql::TableInfo& t : stores) {
    e.sample("probing_table_bytes", static_cast<double>(t.store->stats().bytes),
             {{"table", t.schema + "." + t.name}});
  }
  e.family("probing_table_rows_appended_total", "counter",
           "Rows recorded into a table since the agent started.");
  for (const sql::TableInfo& t : stores) {
    e.sample("probing_table_rows_appended_total", static_cast<double>(t.store->stats().appended),
             {{"table", t.schema + "." + t.name}});
  }
}

}  // namespace

HttpResponse handle_metrics(const HttpRequest&, const AgentInfo& info) {
  const double now = unix_now_s();
  Exposition e(job_labels());
  process_metrics(e);
  agent_metrics(e, info, now);
  torch_metrics(e, now);
  span_metrics(e, now);
  HttpResponse r;
  r.body = e.text();
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return r;
}

}  // namespace probing::server
