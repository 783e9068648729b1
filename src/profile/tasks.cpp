#include "profile/tasks.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "core/clock.h"
#include "python/helpers.h"

namespace probing::python {
extern const char kTasksHelpersSource[];  // tasks_helpers.py, made by CMake
}

namespace probing::profile {
namespace {

constexpr python::HelperSource kHelpers{python::kTasksHelpersSource, "probing._tasks"};
constexpr int kMaxTasks = 5000;     // per snapshot
constexpr double kPeriod_s = 0.2;   // between snapshots, at least
constexpr double kMaxPeriod_s = 2;  // and at most
constexpr double kMaxShare = 0.02;  // of the time spent in them, at most
constexpr size_t kMaxTaskRecords = 200'000;
constexpr size_t kMaxRuns = 1'000'000;
constexpr size_t kMaxStacks = 50'000;
constexpr size_t kMaxFailures = 32;
constexpr size_t kMaxChain = 32;  // tasks awaiting tasks
constexpr int kMaxSourceLines = 2000;  // of one snapshot_tasks_now
constexpr const char* kTaskFile = "<task>";

std::mutex g_mu;
double g_until = 0;
bool g_running = false;

// tasks_helpers.py's snapshot, waiting at most gil_timeout_s for the GIL.
Result<nlohmann::json> snapshot(python::PythonRuntime& runtime, double gil_timeout_s, int max_source_lines) {
  python::HelperCall call(gil_timeout_s, 5.0);
  call.reads_other_threads = true;  // each thread's frames, for its event loop
  return python::call_helper(runtime, kHelpers, "snapshot",
                             nlohmann::json::array({kMaxTasks, max_source_lines}), call);
}

void take_snapshots() noexcept {
  try {
    ::pthread_setname_np(::pthread_self(), "probing-tasks");
    TaskBook& book = TaskBook::get();
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(g_mu);
        if (unix_now_s() >= g_until) {
          g_running = false;
          return;
        }
      }
      const auto started = std::chrono::steady_clock::now();
      double period = kPeriod_s;
      Result<python::PythonRuntime*> rt = python::PythonRuntime::get();
      if (!rt.is_ok()) {
        book.fail(unix_now_s(), "Python is not available: " + rt.status().message());
        period = 1;
      } else {
        Result<nlohmann::json> reply = snapshot(**rt, 2.0, 0);
        if (reply.is_ok()) {
          // The time the snapshot held the GIL, not the wait for it: that costs the program nothing.
          period = std::clamp(reply->value("cost", 0.0) / kMaxShare, kPeriod_s, kMaxPeriod_s);
          book.add(reply->value("time", unix_now_s()), period, *reply);
        } else {
          book.fail(unix_now_s(), reply.status().message());
        }
      }
      const auto next = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      std::chrono::duration<double>(period));
      while (std::chrono::steady_clock::now() < next) {  // in slices: a profile's end is seen soon
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        std::lock_guard<std::mutex> lock(g_mu);
        if (unix_now_s() >= g_until) break;
      }
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_running = false;
  }
}

// asyncio names a task it is not given a name for Task-1, Task-2, ...: one name per request in a
// server, which would split its tree in as many. Those are one frame, "Task-*".
std::string shown_name(const std::string& name) {
  if (name.empty()) return "Task-*";
  if (name.size() > 5 && name.compare(0, 5, "Task-") == 0 &&
      name.find_first_not_of("0123456789", 5) == std::string::npos) {
    return "Task-*";
  }
  return name;
}

std::string stack_key(const nlohmann::json& frames) {
  std::string key;
  for (const auto& f : frames) {
    key += f.at(0).get<std::string>();
    key += '\0';
    key += f.at(1).get<std::string>();
    key += '\0';
    key += std::to_string(f.at(2).get<long long>());
    key += '\0';
  }
  return key;
}

}  // namespace

void snapshot_tasks_until(double until) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_until = std::max(g_until, until);
  if (g_running) return;
  g_running = true;
  try {
    std::thread(take_snapshots).detach();
  } catch (const std::system_error& e) {
    g_running = false;
    TaskBook::get().fail(unix_now_s(), std::string("cannot start the task snapshot thread: ") + e.what());
  }
}

Result<nlohmann::json> snapshot_tasks_now(python::PythonRuntime& runtime, double gil_timeout_s) {
  return snapshot(runtime, gil_timeout_s, kMaxSourceLines);
}

TaskBook& TaskBook::get() {
  static TaskBook* book = new TaskBook;  // never destroyed: agent threads may use it while the process exits
  return *book;
}

uint32_t TaskBook::intern(const nlohmann::json& frames) {
  std::string key = stack_key(frames);
  if (auto it = stack_ids_.find(key); it != stack_ids_.end()) return it->second;
  if (stacks_.empty()) stacks_.push_back({{"(await stack not kept)", kTaskFile, 0}});
  if (stacks_.size() > kMaxStacks) return 0;
  std::vector<Frame> out;
  for (const auto& f : frames)
    out.push_back({f.at(0).get<std::string>(), f.at(1).get<std::string>(), f.at(2).get<int>()});
  const auto id = static_cast<uint32_t>(stacks_.size());
  stacks_.push_back(std::move(out));
  stack_ids_.emplace(std::move(key), id);
  return id;
}

void TaskBook::add(double time, double period, const nlohmann::json& reply) {
  std::lock_guard<std::mutex> lock(mu_);
  max_period_ = std::max(max_period_, period);
  const double previous = snapshots_.empty() ? -1 : snapshots_.back();
  snapshots_.push_back(time);
  no_asyncio_ = !reply.value("asyncio", false);
  truncated_ = truncated_ || reply.value("truncated", false);
  // The tasks some task awaits: the others, waiting, are where the waiting happens.
  std::unordered_map<uint64_t, bool> awaited;
  for (const auto& loop : reply.value("loops", nlohmann::json::array())) {
    for (const auto& row : loop.at("tasks")) {
      for (const auto& parent : row.at(4)) awaited[parent.get<uint64_t>()] = true;
    }
  }
  std::unordered_map<uint64_t, long long> live;
  for (const auto& loop : reply.value("loops", nlohmann::json::array())) {
    const auto thread = loop.at("thread").get<unsigned long>();
    loops_.try_emplace(thread, time, time).first->second.second = time;
    for (const auto& row : loop.at("tasks")) {
      const auto object = row.at(0).get<uint64_t>();
      const auto coroutine = row.at(1).get<uint64_t>();
      const std::string name = row.at(2).get<std::string>();
      long long serial = 0;
      if (auto it = live_.find(object); it != live_.end()) {
        const Task& known = tasks_.at(it->second);
        if (known.coroutine == coroutine && known.name == name) serial = it->second;
      }
      if (serial == 0) {
        serial = next_serial_++;
        Task& t = tasks_[serial];
        t.object = object;
        t.coroutine = coroutine;
        t.name = name;
        t.first_seen = time;
        by_object_.emplace(object, serial);
        by_coroutine_.emplace(coroutine, serial);
      }
      live[object] = serial;
      Task& t = tasks_[serial];
      t.thread = thread;
      t.last_seen = time;
      t.parents.clear();
      for (const auto& parent : row.at(4)) t.parents.push_back(parent.get<uint64_t>());
      const bool running = row.at(3).get<bool>();
      const State state = running                 ? State::kRunning
                          : awaited.count(object) ? State::kWaiting
                                                  : State::kWaitingLeaf;
      const uint32_t stack = running || !row.at(5).is_array() ? 0 : intern(row.at(5));
      if (!t.runs.empty() && t.runs.back().state == state && t.runs.back().stack == stack &&
          t.runs.back().to == previous) {
        t.runs.back().to = time;
      } else if (runs_ < kMaxRuns) {
        t.runs.push_back({time, time, stack, state});
        ++runs_;
      } else {
        runs_full_ = true;
      }
    }
  }
  live_ = std::move(live);
  while (tasks_.size() > kMaxTaskRecords) forget(tasks_.begin()->first);
}

void TaskBook::fail(double time, std::string why) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_.emplace_back(time, std::move(why));
  if (failures_.size() > kMaxFailures) failures_.pop_front();
}

void TaskBook::forget(long long serial) {
  auto it = tasks_.find(serial);
  if (it == tasks_.end()) return;
  auto unindex = [serial](std::unordered_multimap<uint64_t, long long>& index, uint64_t key) {
    auto [first, last] = index.equal_range(key);
    for (auto i = first; i != last; ++i) {
      if (i->second == serial) {
        index.erase(i);
        return;
      }
    }
  };
  unindex(by_object_, it->second.object);
  unindex(by_coroutine_, it->second.coroutine);
  if (auto live = live_.find(it->second.object); live != live_.end() && live->second == serial)
    live_.erase(live);
  runs_ -= it->second.runs.size();
  tasks_.erase(it);
}

void TaskBook::drop_before(double time) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<long long> old;
  for (const auto& [serial, t] : tasks_) {
    if (t.last_seen < time) old.push_back(serial);
  }
  for (long long serial : old) forget(serial);
  while (!snapshots_.empty() && snapshots_.front() < time) snapshots_.pop_front();
  std::erase_if(loops_, [time](const auto& loop) { return loop.second.second < time; });
  while (!failures_.empty() && failures_.front().first < time) failures_.pop_front();
  if (tasks_.empty()) {
    stacks_.clear();
    stack_ids_.clear();
    max_period_ = 0;
    truncated_ = runs_full_ = false;
  }
}

const TaskBook::Task* TaskBook::task_at(const std::unordered_multimap<uint64_t, long long>& index,
                                        uint64_t address, double time) const {
  const Task* best = nullptr;
  double best_distance = slack();
  auto [first, last] = index.equal_range(address);
  for (auto it = first; it != last; ++it) {
    const Task& t = tasks_.at(it->second);
    const double distance = time < t.first_seen  ? t.first_seen - time
                            : time > t.last_seen ? time - t.last_seen
                                                 : 0;
    if (distance <= best_distance) {
      best = &t;
      best_distance = distance;
    }
  }
  return best;
}

const std::vector<Frame>& TaskBook::waiting_at(const Task& task, double time) const {
  const Run* best = nullptr;
  double best_distance = 0;
  for (const Run& r : task.runs) {
    if (r.state == State::kRunning) continue;
    const double distance = time < r.from ? r.from - time : time > r.to ? time - r.to : 0;
    if (best == nullptr || distance < best_distance) {
      best = &r;
      best_distance = distance;
    }
  }
  static const auto* const kNone = new std::vector<Frame>;  // never destroyed: no exit-time destructor
  return best != nullptr && best->stack < stacks_.size() ? stacks_[best->stack] : *kNone;
}

void TaskBook::chain(const Task& task, double time, std::vector<Frame>* out) const {
  const Task* t = &task;
  for (size_t n = 0; t != nullptr && n < kMaxChain; ++n) {
    std::string name = shown_name(t->name);
    if (t->parents.size() > 1) name += " (" + std::to_string(t->parents.size()) + " parents)";
    out->push_back({std::move(name), kTaskFile, 0});
    if (t->parents.empty()) return;
    const Task* parent = task_at(by_object_, t->parents.front(), time);
    if (parent == nullptr || parent == &task) return;
    const std::vector<Frame>& where = waiting_at(*parent, time);
    out->insert(out->end(), where.begin(), where.end());
    t = parent;
  }
}

bool TaskBook::running(double time, unsigned long thread,
                       std::span<const layout::SampledGenerator> generators, uint32_t* depth,
                       std::vector<Frame>* rest) const {
  if (generators.empty()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  auto loop = loops_.find(thread);
  if (loop == loops_.end() || time < loop->second.first - slack() || time > loop->second.second + slack()) {
    return false;
  }
  for (const layout::SampledGenerator& g : generators) {
    if (const Task* t = task_at(by_coroutine_, g.object, time)) {
      *depth = g.depth;
      chain(*t, time, rest);
      return true;
    }
  }
  // A loop's thread in a coroutine no snapshot saw a task run: a task that came and went between
  // two snapshots, or a stack read while it changed.
  *depth = generators.back().depth;
  rest->push_back({"(unnamed task)", kTaskFile, 0});
  return true;
}

std::vector<TaskBook::Wait> TaskBook::waiting(double since, double until, size_t max) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Wait> out;
  for (const auto& [serial, t] : tasks_) {
    if (t.last_seen < since || t.first_seen >= until) continue;
    for (const Run& r : t.runs) {
      if (r.state != State::kWaitingLeaf || r.to < since || r.from >= until) continue;
      std::vector<Frame> frames = r.stack < stacks_.size() ? stacks_[r.stack] : std::vector<Frame>{};
      chain(t, r.from, &frames);
      auto at = std::lower_bound(snapshots_.begin(), snapshots_.end(), std::max(r.from, since));
      for (; at != snapshots_.end() && *at <= r.to && *at < until; ++at) {
        if (out.size() >= max) return out;
        const double next = at + 1 != snapshots_.end() ? *(at + 1) : *at + max_period_;
        out.push_back({*at, t.thread, frames, next - *at});
      }
    }
  }
  return out;
}

std::vector<std::string> TaskBook::notices(double since, double until) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  const bool any = std::any_of(snapshots_.begin(), snapshots_.end(),
                               [&](double t) { return t >= since - slack() && t < until + slack(); });
  if (!any) out.push_back("no asyncio task snapshot was taken in this window");
  if (any && no_asyncio_) out.push_back("this process has not imported asyncio: there are no tasks to show");
  if (any && !no_asyncio_ && loops_.empty()) out.push_back("no asyncio event loop was running");
  std::string last_failure;
  for (const auto& [time, why] : failures_) {
    if (time >= since - slack() && time < until + slack()) last_failure = why;
  }
  if (!last_failure.empty()) out.push_back("asyncio task snapshots failed: " + last_failure);
  if (truncated_) {
    out.push_back("more than " + std::to_string(kMaxTasks) + " tasks: a snapshot names the first " +
                  std::to_string(kMaxTasks) + " only");
  }
  if (runs_full_) out.push_back("the task snapshots reached their memory cap: later ones are not kept");
  if (max_period_ > kPeriod_s * 1.5) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "task snapshots were slow: one every %.1f s at times", max_period_);
    out.push_back(buf);
  }
  return out;
}

}  // namespace probing::profile
