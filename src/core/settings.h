// The settings table: every tunable of the agent, with its value and description. It backs
// information_schema.df_settings, `probing config`, `SET name = value`, `-D name=value` and the
// PROBING_<NAME> environment variables (name upper-cased, '.' -> '_': eval.timeout_s is
// PROBING_EVAL_TIMEOUT_S). Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing {

enum class SettingKind { kBool, kInt, kDouble, kString };

// "bool", "int", "double", "string".
const char* kind_name(SettingKind kind);

struct SettingInfo {
  std::string name;
  std::string value;        // canonical text form
  std::string default_value;
  std::string description;
  SettingKind kind;
  bool read_at_start = false;  // read once when the agent (or the part that uses it) starts
};

class Settings {
 public:
  // Extra check run after the value parsed as its kind; returns an error to refuse the value.
  using Validator = std::function<Status(const std::string& canonical)>;

  // When a setting takes effect: at once, or only when the agent starts (then it can be set by
  // PROBING_<NAME> or `inject -D`, and the running agent refuses to change it).
  enum class Scope { kLive, kAtStart };

  // Declares a setting. Declaring a name twice keeps the first declaration.
  void declare(const std::string& name, SettingKind kind, const std::string& default_value,
               const std::string& description, Validator validator = nullptr,
               Scope scope = Scope::kLive);

  // Called after `name` changed value (by set(), from any source), outside the table's lock, on
  // the thread that set it. Must not throw.
  using Observer = std::function<void(const std::string& name, const std::string& value)>;
  void observe(const std::string& name, Observer observer);

  // Sets a declared setting from text ("on"/"off"/"true"/"1" for booleans), at start (the
  // environment, -D, tests). kNotFound for an unknown name, kInvalidArgument for a value that
  // does not parse or validate.
  Status set(const std::string& name, const std::string& value);

  // The same for a running agent (SQL SET, PUT /config): a setting read at start is refused with
  // kUnsupported and a message that says how to set it, and nothing changes.
  Status change(const std::string& name, const std::string& value);

  std::optional<std::string> get(const std::string& name) const;
  bool get_bool(const std::string& name) const;
  long long get_int(const std::string& name) const;
  double get_double(const std::string& name) const;

  std::vector<SettingInfo> list() const;  // sorted by name

  // "unknown setting 'NAME'", with the nearest declared name when one is near ("did you mean").
  std::string unknown_text(const std::string& name) const;

  // Applies PROBING_<NAME> for every declared setting. Returns one error per bad variable.
  std::vector<Status> apply_environment();

  // Applies "name=value" lines (blank lines and '#' comments skipped). Returns one error per bad
  // line; good lines apply regardless.
  std::vector<Status> apply_lines(const std::string& text);

  // "eval.timeout_s" -> "PROBING_EVAL_TIMEOUT_S".
  static std::string env_name(const std::string& name);

 private:
  struct Entry {
    SettingInfo info;
    Validator validator;
  };
  Result<std::string> canonicalize(const Entry& entry, const std::string& value) const;
  std::string unknown_text_locked(const std::string& name) const;  // REQUIRES: mu_ held

  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  std::multimap<std::string, Observer> observers_;  // guarded by mu_
};

// Where `probing PID inject -D key=value` leaves settings for the agent it is about to load into
// `pid`: a file that the agent reads once at start and deletes. (The target's /tmp, as the target
// sees it.)
std::string inject_settings_path(int pid);

// The process-wide table. Never destroyed (agent threads may read it during exit).
Settings& settings();

// Declares the settings of the core and agent (idempotent).
void declare_builtin_settings(Settings& s);

}  // namespace probing
