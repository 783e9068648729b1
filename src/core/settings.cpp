#include "core/settings.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/suggest.h"

namespace probing {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

Status positive(const std::string& v) {
  if (std::strtod(v.c_str(), nullptr) <= 0) return {Code::kInvalidArgument, "must be > 0"};
  return {};
}

Status non_negative(const std::string& v) {
  if (std::strtod(v.c_str(), nullptr) < 0) return {Code::kInvalidArgument, "must be >= 0"};
  return {};
}

}  // namespace

const char* kind_name(SettingKind kind) {
  switch (kind) {
    case SettingKind::kBool: return "bool";
    case SettingKind::kInt: return "int";
    case SettingKind::kDouble: return "double";
    case SettingKind::kString: return "string";
  }
  return "";
}

void Settings::declare(const std::string& name, SettingKind kind, const std::string& default_value,
                       const std::string& description, Validator validator, Scope scope) {
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(name) != 0) return;
  Entry e{{name, default_value, default_value, description, kind, scope == Scope::kAtStart},
          std::move(validator)};
  entries_.emplace(name, std::move(e));
}

Result<std::string> Settings::canonicalize(const Entry& entry, const std::string& value) const {
  std::string canonical;
  switch (entry.info.kind) {
    case SettingKind::kBool: {
      std::string v = lower(value);
      if (v == "1" || v == "true" || v == "on" || v == "yes") {
        canonical = "on";
      } else if (v == "0" || v == "false" || v == "off" || v == "no") {
        canonical = "off";
      } else {
        return Status(Code::kInvalidArgument, "expected on or off, got '" + value + "'");
      }
      break;
    }
    case SettingKind::kInt: {
      char* end = nullptr;
      errno = 0;
      long long n = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno != 0) {
        return Status(Code::kInvalidArgument, "expected an integer, got '" + value + "'");
      }
      canonical = std::to_string(n);
      break;
    }
    case SettingKind::kDouble: {
      char* end = nullptr;
      errno = 0;
      double d = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || errno != 0 || !std::isfinite(d)) {
        return Status(Code::kInvalidArgument, "expected a number, got '" + value + "'");
      }
      canonical = value;
      break;
    }
    case SettingKind::kString: canonical = value; break;
  }
  if (entry.validator) {
    Status st = entry.validator(canonical);
    if (!st.is_ok()) return st;
  }
  return canonical;
}

Status Settings::set(const std::string& name, const std::string& value) {
  std::vector<Observer> observers;
  std::string now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return {Code::kNotFound, unknown_text_locked(name)};
    }
    Result<std::string> canonical = canonicalize(it->second, value);
    if (!canonical.is_ok()) return canonical.status().with_context("setting " + name);
    it->second.info.value = now = canonical.value();
    for (auto [o, end] = observers_.equal_range(name); o != end; ++o) observers.push_back(o->second);
  }
  for (const Observer& observer : observers) observer(name, now);
  return {};
}

Status Settings::change(const std::string& name, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it != entries_.end() && it->second.info.read_at_start) {
      return {Code::kUnsupported, name + " is read at start, so the running agent keeps " +
                                      it->second.info.value + ": set " + env_name(name) + "=" + value +
                                      " before the process starts, or `probing PID inject -D " + name + "=" +
                                      value + "`"};
    }
  }
  return set(name, value);
}

std::string Settings::unknown_text(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return unknown_text_locked(name);
}

std::string Settings::unknown_text_locked(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& [known, entry] : entries_) names.push_back(known);
  std::string near = closest(name, names);
  return "unknown setting '" + name + "'" + (near.empty() ? "" : "; did you mean " + near + "?");
}

void Settings::observe(const std::string& name, Observer observer) {
  std::lock_guard<std::mutex> lock(mu_);
  observers_.emplace(name, std::move(observer));
}

std::optional<std::string> Settings::get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return std::nullopt;
  return it->second.info.value;
}

bool Settings::get_bool(const std::string& name) const { return get(name).value_or("off") == "on"; }

long long Settings::get_int(const std::string& name) const {
  return std::strtoll(get(name).value_or("0").c_str(), nullptr, 10);
}

double Settings::get_double(const std::string& name) const {
  return std::strtod(get(name).value_or("0").c_str(), nullptr);
}

std::vector<SettingInfo> Settings::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<SettingInfo> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(e.info);
  return out;
}

std::string Settings::env_name(const std::string& name) {
  std::string out = "PROBING_";
  for (char c : name) {
    out += (c == '.' || c == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

std::vector<Status> Settings::apply_environment() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, e] : entries_) names.push_back(name);
  }
  std::vector<Status> errors;
  for (const std::string& name : names) {
    const char* v = std::getenv(env_name(name).c_str());
    if (v == nullptr) continue;
    Status st = set(name, v);
    if (!st.is_ok()) errors.push_back(st.with_context(env_name(name)));
  }
  return errors;
}

std::vector<Status> Settings::apply_lines(const std::string& text) {
  std::vector<Status> errors;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? text.size() : end + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) {
      errors.emplace_back(Code::kInvalidArgument, "expected name=value, got '" + line + "'");
      continue;
    }
    Status st = set(line.substr(0, eq), line.substr(eq + 1));
    if (!st.is_ok()) errors.push_back(st);
  }
  return errors;
}

std::string inject_settings_path(int pid) { return "/tmp/probing-" + std::to_string(pid) + ".settings"; }

Settings& settings() {
  static Settings* s = new Settings;  // leaked on purpose, see header
  return *s;
}

void declare_builtin_settings(Settings& s) {
  s.declare("eval.timeout_s", SettingKind::kDouble, "30",
            "Seconds an eval may run when the request names no timeout; then it is interrupted.",
            positive);
  s.declare("eval.max_output_bytes", SettingKind::kInt, "1048576",
            "Most bytes of printed output one eval returns; the rest is cut with a notice.",
            positive);
  s.declare("gil.timeout_s", SettingKind::kDouble, "5",
            "Seconds a request waits for the GIL before it answers that the GIL is held.",
            positive);
  s.declare("backtrace.gil_timeout_s", SettingKind::kDouble, "0.04",
            "Seconds a backtrace waits for the GIL before it reads the stacks without it.", positive);
  s.declare("server.max_connections", SettingKind::kInt, "64",
            "Most client connections served at once; further ones are refused (read at start).", positive,
            Settings::Scope::kAtStart);
  s.declare("server.request_timeout_s", SettingKind::kDouble, "10",
            "Seconds a client has to send a whole request before the connection is closed "
            "(read at start).",
            positive, Settings::Scope::kAtStart);
  s.declare("server.max_body_bytes", SettingKind::kInt, "8388608",
            "Largest request body accepted; larger requests get 413 (read at start).", positive,
            Settings::Scope::kAtStart);
  s.declare("query.timeout_s", SettingKind::kDouble, "10",
            "Seconds a SQL query may run; then it is stopped with an error.", positive);
  s.declare("query.gil_budget_s", SettingKind::kDouble, "1",
            "Seconds one query may hold the target's GIL to count objects (python.objects) and show "
            "locals, over all its scans; past it they are left out with a notice.",
            positive);
  s.declare("query.max_rows", SettingKind::kInt, "10000",
            "Most rows one query returns; a longer result is cut with a notice.", positive);
  s.declare("query.max_result_bytes", SettingKind::kInt, "16777216",
            "Most bytes of cells one query returns; a larger result is cut with a notice.", positive);
  s.declare("sql.max_memory_mb", SettingKind::kInt, "256",
            "Most memory, in MiB, the SQL engine may hold for running queries (read at start).", positive,
            Settings::Scope::kAtStart);
  s.declare("store.max_rows", SettingKind::kInt, "4000000",
            "Most rows a recorded table (probing.table) keeps; the oldest are dropped first "
            "(read at start).",
            positive, Settings::Scope::kAtStart);
  s.declare("store.max_bytes", SettingKind::kInt, "33554432",
            "Most bytes a recorded table (probing.table) keeps; the oldest rows are dropped first "
            "(read at start).",
            positive, Settings::Scope::kAtStart);
  s.declare("metrics.interval_s", SettingKind::kDouble, "1",
            "Seconds between two samples of process.metrics (CPU, memory, threads); 0 stops sampling.",
            non_negative);
  s.declare("metrics.max_rows", SettingKind::kInt, "86400",
            "Most samples process.metrics keeps; the oldest are dropped first.", positive);
  s.declare("subprocesses", SettingKind::kBool, "off",
            "Give each child the process forks (os.fork: DataLoader and multiprocessing workers) an agent of "
            "its own, loaded in Python's after-fork hook; `probing launch` turns it on.");
  s.declare("exceptions.capture", SettingKind::kBool, "on",
            "Record exceptions no code caught (a thread's, the main thread's, those in a __del__) into "
            "python.exceptions, with their stack and locals in brief: the agent's hooks wrap "
            "sys.excepthook, sys.unraisablehook and threading.excepthook, and the program's own still run.");
  s.declare(
      "crash.capture", SettingKind::kBool, "on",
      "On a fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT), write the native and Python stacks "
      "to /var/tmp/probing-<pid>.crash (`probing crash-report`), then let the signal act as it would "
      "have: the handler installed before the agent's, or the default.");
  s.declare("probes.max_overhead", SettingKind::kDouble, "0.05",
            "A probe whose hits have taken more than this share of the time since it was added (after "
            "10 hits) ends itself, saying so in `probe list`: 0.05 is 5 %.",
            positive);
  s.declare("torch.trace", SettingKind::kBool, "on",
            "Trace PyTorch module calls, backward passes, optimizer steps and DataLoader waits into "
            "python.torch_trace once torch is imported (PROBING_TORCH sets it too).");
  s.declare("torch.sample_rate", SettingKind::kDouble, "1",
            "Fraction of training steps traced (0.1: one step in ten); 0 traces none.",
            [](const std::string& v) -> Status {
              double d = std::strtod(v.c_str(), nullptr);
              if (d < 0 || d > 1) return {Code::kInvalidArgument, "must be between 0 and 1"};
              return {};
            });
  s.declare("torch.module_backward", SettingKind::kBool, "off",
            "Also time each module's part of the backward pass (a backward row per module call, on the CPU): "
            "hooks on the autograd nodes of every traced call, 12-44 us each.");
  s.declare("profile.recorder_hz", SettingKind::kDouble, "10",
            "Samples a second the flight recorder takes of every Python thread's stack, always (python.samples); "
            "0 stops it. A profile samples faster while it runs.",
            [](const std::string& v) -> Status {
              double d = std::strtod(v.c_str(), nullptr);
              if (d < 0 || d > 1000) return {Code::kInvalidArgument, "must be between 0 and 1000"};
              return {};
            });
  s.declare("profile.recorder_s", SettingKind::kDouble, "600",
            "Seconds of samples the flight recorder keeps (`probing PID profile --last`), within "
            "profile.max_mb.",
            positive);
  s.declare("profile.max_mb", SettingKind::kInt, "32",
            "Most MiB python.samples keeps; the oldest samples go first.", positive);
  s.declare("profile.max_stacks_mb", SettingKind::kInt, "16",
            "Most MiB of distinct stacks python.stacks keeps; later new stacks show as stack_id 0 (read at start).",
            positive, Settings::Scope::kAtStart);
  s.declare("hang.after_s", SettingKind::kDouble, "60",
            "Seconds the main thread's stack must stay the same, with no torch tracing row, before a hang is "
            "recorded in python.hangs (and logged once); 0 turns the detector off.",
            non_negative);
  s.declare("python.max_workers", SettingKind::kInt, "4",
            "Most agent threads running Python requests at once; more requests wait their turn "
            "(read at start).",
            positive, Settings::Scope::kAtStart);
  s.declare("cluster.heartbeat_s", SettingKind::kDouble, "5",
            "Seconds between a rank's registrations with its job's registry (rank 0's agent); a rank not heard "
            "from for three of them is shown as silent.",
            positive);
}

}  // namespace probing
