// asyncio's tasks, for `probing PID profile --async`. The sampler reads stacks without the GIL and
// so sees coroutines' frames, not tasks: while a profile that asked for tasks runs, a thread of the
// agent (probing-tasks) takes a snapshot of every running event loop's tasks a few times a second,
// with the GIL, through the executor (tasks_helpers.py): each task's name, the coroutine it runs
// (its address, which the sampler notes on the stacks it reads), which task awaits which, and where
// each waiting task waits. TaskBook keeps what the snapshots saw; collect() (sampler.cpp) joins it
// with the samples: a sample running a task's coroutine ends in that task, then in the tasks that
// await it, as CPython's profiler shows them.
//
// Why not read the tasks at each sample: the running task is what the sampler must see, and a
// snapshot under the GIL never sees one (the loop thread hands the GIL over in select(), between
// tasks). A task that starts and ends between two snapshots has no name: its samples end in
// "(unnamed task)".
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "layout/interpreter_reader.h"
#include "profile/stack_table.h"
#include "python/runtime.h"

namespace probing::profile {

// Keeps snapshots coming until `until` (unix seconds), starting the thread that takes them.
void snapshot_tasks_until(double until);

// One snapshot now, for `backtrace --tasks`: tasks_helpers.py's reply, each waiting task's frames
// with their source lines. Waits at most gil_timeout_s for the GIL (kTimeout then).
Result<nlohmann::json> snapshot_tasks_now(python::PythonRuntime& runtime, double gil_timeout_s);

// What the snapshots saw. Bounded (tasks, their await stacks, how long they waited where), and
// emptied of what lies before the sampler's oldest kept sample. Thread-safe.
class TaskBook {
 public:
  static TaskBook& get();

  // A snapshot taken at `time` (tasks_helpers.py's reply), standing for `period` seconds.
  void add(double time, double period, const nlohmann::json& reply);
  // Why a snapshot could not be taken.
  void fail(double time, std::string why);
  void drop_before(double time);

  // Of a sample of `thread` at `time` whose stack runs `generators` (innermost first): the index of
  // the frame of the task's coroutine in it (*depth), and the frames that stand for what lies
  // beyond that frame (*rest): the task's name, then each task that awaits it, where it waits and
  // its name. false when the thread ran no task (it runs no event loop, or ran a callback).
  bool running(double time, unsigned long thread, std::span<const layout::SampledGenerator> generators,
               uint32_t* depth, std::vector<Frame>* rest) const;

  struct Wait {
    double time = 0;
    unsigned long thread = 0;
    std::vector<Frame> frames;  // innermost first, through the tasks that await it
    double weight = 0;          // seconds: the time to the next snapshot
  };
  // Each snapshot's waiting tasks that await no other task, in [since, until), up to `max`.
  std::vector<Wait> waiting(double since, double until, size_t max) const;

  // What a profile of [since, until) should say about its tasks: snapshots that failed, tasks
  // left out, no event loop seen.
  std::vector<std::string> notices(double since, double until) const;

 private:
  enum class State : uint8_t { kRunning, kWaiting, kWaitingLeaf };
  struct Run {  // consecutive snapshots that saw a task in one state, waiting at one stack
    double from, to;
    uint32_t stack;
    State state;
  };
  struct Task {
    uint64_t object = 0, coroutine = 0;
    std::string name;
    unsigned long thread = 0;
    std::vector<uint64_t> parents;  // the tasks that await it, at the last snapshot
    double first_seen = 0, last_seen = 0;
    std::vector<Run> runs;
  };

  const Task* task_at(const std::unordered_multimap<uint64_t, long long>& index, uint64_t address,
                      double time) const;
  void chain(const Task& task, double time, std::vector<Frame>* out) const;
  const std::vector<Frame>& waiting_at(const Task& task, double time) const;
  uint32_t intern(const nlohmann::json& frames);
  void forget(long long serial);
  double slack() const { return 2 * max_period_ + 0.05; }

  mutable std::mutex mu_;
  long long next_serial_ = 1;
  std::map<long long, Task> tasks_;                         // by serial, oldest first
  std::unordered_map<uint64_t, long long> live_;            // task object -> serial, at the last snapshot
  std::unordered_multimap<uint64_t, long long> by_object_;  // task object -> serials
  std::unordered_multimap<uint64_t, long long> by_coroutine_;
  std::unordered_map<std::string, uint32_t> stack_ids_;
  std::vector<std::vector<Frame>> stacks_;                    // by id; 0 is "(await stack not kept)"
  std::map<unsigned long, std::pair<double, double>> loops_;  // loop thread -> first, last seen
  std::deque<double> snapshots_;                              // when each was taken
  size_t runs_ = 0;
  double max_period_ = 0;
  bool truncated_ = false, runs_full_ = false, no_asyncio_ = false;
  std::deque<std::pair<double, std::string>> failures_;
};

}  // namespace probing::profile
