#include "profile/sampler.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "core/settings.h"
#include "layout/interpreter_reader.h"
#include "profile/stack_table.h"
#include "profile/tasks.h"
#include "python/gil_free.h"
#include "sql/column_store.h"

namespace probing::profile {
namespace {

using sql::Cell;
using sql::ColumnDef;
using sql::ColumnType;

// python.samples' columns, in order.
enum SampleColumn : size_t { kTime, kThreadId, kNativeId, kThreadName, kStackId, kGil, kOnCpu, kInterval };

constexpr size_t kMaxSessions = 16;
constexpr size_t kMaxHangs = 100;
constexpr double kSettingsEvery_s = 0.5;
constexpr double kForgetThread_s = 10;
constexpr double kRenameEvery_s = 5;
constexpr double kMainThreadEvery_s = 10;
constexpr size_t kKeptStatFiles = 64;
constexpr size_t kMaxTaskSamples = 500'000;  // samples with their coroutines, while --async profiles run

ColumnDef col(const char* name, ColumnType type, const char* description) {
  return {name, type, description};
}

// The kernel's state letter of a thread of this process ('R' running or runnable, 'S' asleep,
// ...), from /proc/self/task/TID/stat through `*fd`, opened on first use and kept while
// `keep`; 0 when it cannot be read (the thread is gone).
char thread_state(long tid, int* fd, ino_t* ino, bool keep) {
  if (*fd < 0) {
    const std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
    *fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return 0;
    struct stat st {};
    *ino = ::fstat(*fd, &st) == 0 ? st.st_ino : 0;
  }
  char buf[256];
  const ssize_t n = ::pread(*fd, buf, sizeof buf - 1, 0);
  if (!keep) {
    ::close(*fd);
    *fd = -1;
  }
  if (n <= 0) return 0;
  buf[n] = '\0';
  // "TID (name) S ...": anything else is not the file we opened (the program reused the number).
  const std::string head = std::to_string(tid) + " (";
  if (std::strncmp(buf, head.c_str(), head.size()) != 0) return 0;
  const char* paren = std::strrchr(buf, ')');  // the name may hold spaces and parentheses
  return paren != nullptr && paren[1] == ' ' ? paren[2] : 0;
}

std::string comm_of(long tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

std::string clock_text(double unix_s) {
  const auto t = static_cast<time_t>(unix_s);
  tm local{};
  char buf[32];
  ::localtime_r(&t, &local);
  std::strftime(buf, sizeof buf, "%H:%M:%S", &local);
  return buf;
}

// "func (file:line)"
std::string where(const Frame& f) { return f.func + " (" + f.file + ":" + std::to_string(f.line) + ")"; }

// One where() line per frame, innermost first.
std::string stack_text(const std::vector<Frame>& frames) {
  std::string out;
  for (const Frame& f : frames) {
    if (!out.empty()) out += '\n';
    out += where(f);
  }
  return out;
}

struct ThreadState {
  bool agent = false;  // one of probing's own threads: not sampled
  std::string name;
  double named_at = 0;
  double seen_at = 0;
  long tid = 0;      // kernel thread id, 0 before 3.11
  int stat_fd = -1;  // its /proc/self/task/TID/stat, kept open (up to kKeptStatFiles threads)
  ino_t stat_ino = 0;
  std::vector<uint32_t> frames;  // the last sample's frame ids
  uint32_t stack = 0;
};

// The coroutines on a sample's stack, while a session wants tasks.
struct TaskSample {
  double time = 0;
  unsigned long thread = 0;
  std::vector<layout::SampledGenerator> generators;
};

struct Hang {
  long long id = 0;
  double started = 0;  // when the main thread last moved
  double detected = 0;
  double ended = NAN;
  unsigned long thread_id = 0;
  uint32_t stack = 0;
  std::string stack_text;
  std::string threads;  // every thread's stack when it was detected
  std::string before;   // what the recorder saw the main thread do before it stopped
};

class Sampler {
 public:
  Sampler(std::shared_ptr<sql::ColumnStore> samples, StackTable* stacks)
      : samples_(std::move(samples)), stacks_(stacks) {}

  void run() noexcept;

  Result<Session> start_session(double hz, double seconds, long long renew, bool tasks) {
    if (!(hz > 0) || hz > kMaxHz) {
      return Status(Code::kInvalidArgument, "the rate must be above 0 and at most " +
                                                std::to_string(static_cast<int>(kMaxHz)) + " Hz");
    }
    if (!(seconds > 0) || seconds > kMaxSessionSeconds) {
      return Status(Code::kInvalidArgument, "a profile lasts more than 0 and at most " +
                                                std::to_string(static_cast<int>(kMaxSessionSeconds)) +
                                                " seconds");
    }
    if (!running_.load()) return Status(Code::kUnavailable, "the sampler does not run: " + error());
    std::lock_guard<std::mutex> lock(mu_);
    const double now = unix_now_s();
    std::erase_if(sessions_, [now](const Session& s) { return s.until <= now; });
    if (tasks) {
      tasks_until_ = std::max(tasks_until_.load(), now + seconds);
      snapshot_tasks_until(now + seconds);
    }
    for (Session& s : sessions_) {
      if (renew != 0 && s.id == renew) {
        s.until = now + seconds;
        s.hz = hz;
        s.tasks = s.tasks || tasks;
        return s;
      }
    }
    if (sessions_.size() >= kMaxSessions) {
      return Status(Code::kUnavailable,
                    std::to_string(kMaxSessions) + " profiles run already; try again later");
    }
    sessions_.push_back({++last_session_, now, now + seconds, hz, tasks});
    return sessions_.back();
  }

  // The coroutines on the stacks sampled in [since, until), by (time, thread).
  std::map<std::pair<double, unsigned long>, std::vector<layout::SampledGenerator>> task_samples(
      double since, double until) {
    std::map<std::pair<double, unsigned long>, std::vector<layout::SampledGenerator>> out;
    std::lock_guard<std::mutex> lock(task_mu_);
    for (const TaskSample& t : task_samples_) {
      if (t.time >= since && t.time < until) out.emplace(std::make_pair(t.time, t.thread), t.generators);
    }
    return out;
  }

  nlohmann::json status() {
    const size_t stacks = stacks_->stacks(), stack_bytes = stacks_->bytes();  // not under mu_
    std::lock_guard<std::mutex> lock(mu_);
    return {{"running", running_.load()},
            {"hz", hz_},
            {"recorder_hz", recorder_hz_},
            {"sessions", sessions_.size()},
            {"stacks", stacks},
            {"stack_bytes", stack_bytes},
            {"error", error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(error_)}};
  }

  std::string error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

  std::vector<Hang> hangs() {
    std::lock_guard<std::mutex> lock(mu_);
    return {hangs_.begin(), hangs_.end()};
  }

 private:
  void fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = why;
  }
  // The rate now: the fastest live session's, else the recorder's.
  double rate(double now) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(sessions_, [now](const Session& s) { return s.until <= now; });
    double hz = recorder_hz_;
    for (const Session& s : sessions_) hz = std::max(hz, s.hz);
    hz_ = hz;
    return hz;
  }
  // The start of the oldest profile running: its samples are kept past profile.recorder_s.
  double oldest_session_start() {
    std::lock_guard<std::mutex> lock(mu_);
    double oldest = std::numeric_limits<double>::infinity();
    for (const Session& s : sessions_) oldest = std::min(oldest, s.start);
    return oldest;
  }
  void read_settings(double now);
  void take_sample(const layout::InterpreterReader& reader, double now, double interval);
  uint32_t frame_id(const layout::SampledFrame& f);
  // Closes a thread's kept stat file, if the descriptor is still that file: the program may have
  // closed every descriptor it did not know of, and reused the number.
  void close_stat(ThreadState& t) {
    if (t.stat_fd < 0) return;
    struct stat st {};
    if (::fstat(t.stat_fd, &st) == 0 && st.st_ino == t.stat_ino) ::close(t.stat_fd);
    t.stat_fd = -1;
    --kept_stat_files_;
  }
  void watch_for_hang(double now, const ThreadState* main);
  void drop_task_samples(double before) {
    {
      std::lock_guard<std::mutex> lock(task_mu_);
      while (!task_samples_.empty() && task_samples_.front().time < before) task_samples_.pop_front();
    }
    TaskBook::get().drop_before(before);
  }
  std::string recorder_before(unsigned long thread_id, double from, double to);

  const std::shared_ptr<sql::ColumnStore> samples_;
  StackTable* const stacks_;
  layout::CodeCache codes_;
  uint64_t codes_generation_ = 0;
  std::unordered_map<uint64_t, uint32_t> frame_ids_;  // (code id, line) -> frame id
  layout::StackSample sample_;
  std::unordered_map<unsigned long, ThreadState> threads_;  // by thread ident
  std::vector<uint32_t> frames_;                            // scratch
  std::vector<char> states_;                                // each sampled thread's kernel state, 0 unknown
  size_t kept_stat_files_ = 0;

  // Settings, read every kSettingsEvery_s.
  double settings_at_ = 0;
  double recorder_s_ = 600;
  double hang_after_s_ = 60;
  unsigned long main_ident_ = 0;
  double main_ident_at_ = 0;

  // Hang detection: when the main thread's stack last changed, and torch tracing last recorded.
  std::vector<uint32_t> main_frames_;  // frame ids: a stack past the stack table's cap has no id
  double main_moved_at_ = 0;
  double watched_at_ = 0;
  uint64_t torch_rows_ = 0;
  double torch_moved_at_ = 0;
  bool torch_ever_ = false;
  std::shared_ptr<sql::ColumnStore> torch_trace_;
  long long next_hang_id_ = 1;
  bool hung_ = false;

  std::atomic<double> tasks_until_{0};  // a session wants tasks until then
  std::mutex task_mu_;
  std::deque<TaskSample> task_samples_;

  std::atomic<bool> running_{false};
  std::mutex mu_;  // guards what the request threads read: below
  std::vector<Session> sessions_;
  long long last_session_ = 0;
  std::deque<Hang> hangs_;
  double hz_ = 0;
  double recorder_hz_ = 10;
  std::string error_ = "not started";
};

// Made once and never destroyed: agent threads may use them while the process exits.
std::atomic<Sampler*> g_sampler{nullptr};
std::shared_ptr<sql::ColumnStore>* g_samples = nullptr;
StackTable* g_stacks = nullptr;

void Sampler::read_settings(double now) {
  if (now - settings_at_ < kSettingsEvery_s) return;
  settings_at_ = now;
  Settings& s = settings();
  {
    std::lock_guard<std::mutex> lock(mu_);
    recorder_hz_ = std::clamp(s.get_double("profile.recorder_hz"), 0.0, kMaxHz);
  }
  recorder_s_ = s.get_double("profile.recorder_s");
  hang_after_s_ = s.get_double("hang.after_s");
  const auto max_bytes = static_cast<size_t>(s.get_int("profile.max_mb")) << 20;
  samples_->set_limits({max_bytes / 16, max_bytes, 0});
  if (torch_trace_ == nullptr) torch_trace_ = sql::Engine::get().find_store("python", "torch_trace");
}

uint32_t Sampler::frame_id(const layout::SampledFrame& f) {
  const uint64_t key = static_cast<uint64_t>(f.code) << 32 | static_cast<uint32_t>(f.lineno);
  if (auto it = frame_ids_.find(key); it != frame_ids_.end()) return it->second;
  const layout::CodeCache::Code& code = codes_.code(f.code);
  const uint32_t id = stacks_->intern_frame(code.func, code.file_name, f.lineno);
  if (id != StackTable::kFull) frame_ids_.emplace(key, id);
  return id;
}

void Sampler::take_sample(const layout::InterpreterReader& reader, double now, double interval) {
  layout::GilFreeLimits limits;
  limits.max_frames = 512;
  limits.max_threads = 256;
  limits.generators = now < tasks_until_.load();
  if (Status st = reader.sample(limits, &codes_, &sample_); !st.is_ok()) return;  // between interpreters
  // On CPU means in the kernel's R state right after the walk (running, or ready to run), as
  // py-spy and CPython's profiler tell: not a CPU-time delta over the interval before, which
  // would credit a function with its predecessor's time.
  states_.clear();
  for (const layout::SampledThread& st : sample_.threads) {
    char state = 0;
    if (st.native_thread_id > 0) {
      auto [it, added] = threads_.try_emplace(st.thread_id);
      ThreadState& t = it->second;
      if (!added && t.tid != st.native_thread_id) {  // a new thread with a dead one's ident
        close_stat(t);
        t = ThreadState{};
        added = true;
      }
      if (added) {
        t.tid = st.native_thread_id;
        t.agent = comm_of(st.native_thread_id).rfind("probing-", 0) == 0;
      }
      if (!t.agent) {
        const bool had = t.stat_fd >= 0;
        state = thread_state(t.tid, &t.stat_fd, &t.stat_ino, had || kept_stat_files_ < kKeptStatFiles);
        if (!had && t.stat_fd >= 0) ++kept_stat_files_;
      }
    }
    states_.push_back(state);
  }
  if (codes_.generation() != codes_generation_) {
    codes_generation_ = codes_.generation();
    frame_ids_.clear();
  }
  if (now - main_ident_at_ >= kMainThreadEvery_s || main_ident_ == 0) {
    main_ident_ = reader.main_thread_ident();
    main_ident_at_ = now;
  }
  const ThreadState* main = nullptr;
  for (size_t i = 0; i < sample_.threads.size(); ++i) {
    const layout::SampledThread& st = sample_.threads[i];
    ThreadState& t = threads_[st.thread_id];
    t.seen_at = now;
    if (t.agent) continue;
    if (now - t.named_at >= kRenameEvery_s) {
      t.name = python::thread_name_for(st.thread_id, st.native_thread_id);
      t.named_at = now;
    }
    frames_.clear();
    for (const layout::SampledFrame& f : st.frames) frames_.push_back(frame_id(f));
    if (t.stack == 0 || frames_ != t.frames) {
      t.stack = stacks_->intern_stack(frames_);
      t.frames = frames_;
    }
    Cell cpu;
    if (states_[i] != 0) cpu = static_cast<long long>(states_[i] == 'R');
    Cell cells[] = {now,
                    static_cast<long long>(st.thread_id),
                    st.native_thread_id > 0 ? Cell{static_cast<long long>(st.native_thread_id)} : Cell{},
                    std::string_view(t.name),
                    static_cast<long long>(t.stack),
                    static_cast<long long>(st.holds_gil),
                    cpu,
                    interval};
    (void)samples_->append(cells);
    if (!st.generators.empty()) {
      std::lock_guard<std::mutex> lock(task_mu_);
      if (task_samples_.size() >= kMaxTaskSamples) task_samples_.pop_front();
      task_samples_.push_back({now, st.thread_id, st.generators});
    }
    if (st.thread_id == main_ident_) main = &t;
  }
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (now - it->second.seen_at <= kForgetThread_s) {
      ++it;
      continue;
    }
    close_stat(it->second);
    it = threads_.erase(it);
  }
  watch_for_hang(now, main);  // (the main thread's entry was just seen: erase_if kept it)
}

// What the recorder saw `thread_id` do in [from, to): its most frequent stacks, innermost frame
// first, with their sample counts.
std::string Sampler::recorder_before(unsigned long thread_id, double from, double to) {
  std::map<long long, long long> counts;
  for (const auto& chunk : samples_->snapshot().chunks) {
    const sql::ColumnChunk& time = chunk->columns[kTime];
    if (time.has_numbers && !time.has_other && (time.max < from || time.min >= to)) continue;
    for (size_t row = 0; row < chunk->rows; ++row) {
      const double t = time.number_at(row);
      if (t < from || t >= to) continue;
      if (chunk->columns[kThreadId].int_at(row) != static_cast<long long>(thread_id)) continue;
      ++counts[chunk->columns[kStackId].int_at(row)];
    }
  }
  std::vector<std::pair<long long, long long>> top(counts.begin(), counts.end());
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  for (size_t i = 0; i < top.size() && i < 5; ++i) {
    std::vector<Frame> frames = stacks_->frames_of(static_cast<uint32_t>(top[i].first));
    if (!out.empty()) out += "\n\n";
    out += std::to_string(top[i].second) + " samples:\n" + stack_text(frames);
  }
  return out;
}

void Sampler::watch_for_hang(double now, const ThreadState* main) {
  constexpr double kMaxUnwatched_s = 2;
  constexpr size_t kMaxThreadsText = 64 << 10;
  // Time the detector did not watch (no sampling, the process stopped, the clock stepped) is no
  // evidence of a hang: it starts counting again.
  if (!hung_ && now - watched_at_ > kMaxUnwatched_s) main_moved_at_ = now;
  watched_at_ = now;
  if (torch_trace_ != nullptr) {
    const uint64_t rows = torch_trace_->stats().appended;
    if (rows != torch_rows_) {
      torch_rows_ = rows;
      torch_moved_at_ = now;
      torch_ever_ = true;
    }
  }
  if (main != nullptr && main->frames != main_frames_) {
    main_frames_ = main->frames;
    main_moved_at_ = now;
  }
  const double quiet_since = std::max(main_moved_at_, torch_moved_at_);
  if (hung_) {
    if (quiet_since <= hangs_.back().started) return;  // still hung
    // Which sign of life ended it, and where the main thread is now: a hang that ends while the
    // program still waits is worth knowing about.
    std::string why = "torch tracing recorded again";
    if (main != nullptr && main_moved_at_ == quiet_since) {
      const std::vector<Frame> frames = stacks_->frames_of(main->stack);
      why = "the main thread is now in " +
            (frames.empty() ? std::string("no Python frame") : where(frames.front()));
    }
    std::string text;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Hang& h = hangs_.back();
      h.ended = quiet_since;
      text = "the main thread moved again after " + std::to_string(static_cast<int>(h.ended - h.started)) +
             " s (python.hangs id " + std::to_string(h.id) + "): " + why;
    }
    hung_ = false;
    log_info(text);  // not under mu_: a log write may block on a full pipe
    return;
  }
  if (hang_after_s_ <= 0 || main == nullptr || now - quiet_since < hang_after_s_) return;
  const uint32_t main_stack = main->stack;
  Hang h;
  h.id = next_hang_id_++;
  h.started = quiet_since;
  h.detected = now;
  h.thread_id = main_ident_;
  h.stack = main_stack;
  std::vector<Frame> main_frames = stacks_->frames_of(main_stack);
  h.stack_text = stack_text(main_frames);
  for (const auto& [ident, t] : threads_) {
    if (t.agent) continue;
    if (!h.threads.empty()) h.threads += "\n\n";
    h.threads += "thread " + std::to_string(ident) + (t.name.empty() ? "" : " \"" + t.name + "\"") + ":\n" +
                 stack_text(stacks_->frames_of(t.stack));
    if (h.threads.size() > kMaxThreadsText) {
      h.threads.resize(kMaxThreadsText);
      h.threads += "\n...";
      break;
    }
  }
  h.before = recorder_before(main_ident_, quiet_since - hang_after_s_, quiet_since);
  const std::string text =
      "the main thread has not moved for " + std::to_string(static_cast<int>(now - quiet_since)) +
      " s (since " + clock_text(quiet_since) + "), in " +
      (main_frames.empty() ? std::string("no Python frame") : where(main_frames.front())) +
      ": SELECT * FROM python.hangs";
  // A training job that stops is news; a server waiting for work is not.
  if (torch_ever_) {
    log_warn(text);
  } else {
    log_info(text);
  }
  std::lock_guard<std::mutex> lock(mu_);
  hangs_.push_back(std::move(h));
  if (hangs_.size() > kMaxHangs) hangs_.pop_front();
  hung_ = true;
}

void Sampler::run() noexcept {
  using Clock = std::chrono::steady_clock;
  auto after = [](double seconds) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  };
  try {
    ::pthread_setname_np(::pthread_self(), "probing-sampler");
    const Result<layout::InterpreterReader>& reader = python::this_interpreter();
    if (!reader.is_ok()) {
      fail(reader.status().message());
      log_info("the sampler does not run: " + reader.status().message());
      return;
    }
    fail("");
    running_.store(true);
    uint64_t rng = static_cast<uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ull | 1;
    Clock::time_point next = Clock::now();
    Clock::time_point last = Clock::time_point::min();
    double planned = 0;  // the gap to this sample that the last one scheduled, seconds
    double last_window = 0;
    for (;;) {
      double hz = rate(unix_now_s());
      // Sleep in slices: a profile that starts meanwhile is served at once, not after a slow
      // recorder period (or 0 Hz) runs out.
      for (;;) {
        const Clock::time_point wake = hz > 0 ? next : Clock::now() + after(kSettingsEvery_s);
        const Clock::time_point slice = std::min(wake, Clock::now() + after(0.1));
        std::this_thread::sleep_until(slice);
        read_settings(unix_now_s());
        const double now_hz = rate(unix_now_s());
        if (now_hz > hz) {
          hz = now_hz;
          next = Clock::now();
          break;
        }
        hz = now_hz;
        if (hz > 0 && Clock::now() >= next) break;
      }
      const double interval = 1.0 / hz;
      const Clock::time_point started = Clock::now();
      const double at = unix_now_s();
      // A sample stands for the time since the one before, within reason: a sampler held back
      // by a busy machine does not shrink what it saw, and one that spaced its samples out
      // itself (below: many threads) counts the whole gap it planned.
      const double since =
          last == Clock::time_point::min() ? interval : std::chrono::duration<double>(started - last).count();
      take_sample(*reader, at, std::clamp(since, interval / 2, std::max(interval * 4, planned * 2)));
      last = started;
      if (at - last_window >= 1) {
        last_window = at;
        const double cutoff = std::min(at - recorder_s_, oldest_session_start());
        samples_->drop_below(kTime, cutoff);
        drop_task_samples(cutoff);
      }
      // A period jittered by up to ±20%: a loop whose period is a multiple of the sampler's is
      // not always caught at the same point. And at most a quarter of a core: a sample that
      // took long (many threads, deep stacks, a busy machine) pushes the next one out.
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      const double jitter = 0.8 + 0.4 * static_cast<double>(rng >> 11) / static_cast<double>(1ull << 53);
      const double cost = std::chrono::duration<double>(Clock::now() - started).count();
      const Clock::time_point now = Clock::now();
      next =
          std::max(next + after(interval * jitter), now - after(interval));  // behind: no burst to catch up
      next = std::max(next, now + after(3 * cost));
      planned = std::chrono::duration<double>(next - started).count();
    }
  } catch (...) {
    running_.store(false);
    try {
      fail("stopped by an error");
      log_error("the sampler stopped on an error; python.samples gets no more rows");
    } catch (...) {
    }
  }
}

sql::Row hang_row(const Hang& h, double now) {
  const bool open = std::isnan(h.ended);
  return {static_cast<long long>(h.id),
          h.started,
          h.detected,
          open ? sql::Value{} : sql::Value{h.ended},
          (open ? now : h.ended) - h.started,
          static_cast<long long>(h.thread_id),
          static_cast<long long>(h.stack),
          h.stack_text,
          h.threads,
          h.before};
}

}  // namespace

Result<Mode> parse_mode(const std::string& text) {
  if (text == "wall") return Mode::kWall;
  if (text == "cpu") return Mode::kCpu;
  if (text == "gil") return Mode::kGil;
  return Status(Code::kInvalidArgument, "unknown mode '" + text + "': wall, cpu or gil");
}

Status add_profile_tables(sql::Engine& engine) {
  const auto max_bytes = static_cast<size_t>(settings().get_int("profile.max_mb")) << 20;
  if (g_samples != nullptr) return Status(Code::kAlreadyExists, "the profile tables exist already");
  g_samples = new std::shared_ptr<sql::ColumnStore>(std::make_shared<sql::ColumnStore>(
      "python", "samples",
      std::vector<ColumnDef>{
          col("time", ColumnType::kReal, "when the sample was taken, unix time in seconds"),
          col("thread_id", ColumnType::kInteger, "the thread's threading.get_ident()"),
          col("native_thread_id", ColumnType::kInteger, "its kernel thread id; NULL before Python 3.11"),
          col("thread", ColumnType::kText, "its name, as last seen"),
          col("stack_id", ColumnType::kInteger, "its stack: python.stacks.stack_id"),
          col("gil", ColumnType::kInteger, "1 when it held the GIL"),
          col("on_cpu", ColumnType::kInteger,
              "1 when the kernel had it running (or ready to run); NULL when unknown (before Python 3.11)"),
          col("interval_s", ColumnType::kReal, "seconds the sample stands for (1 / the rate)")},
      sql::ColumnStore::Limits{max_bytes / 16, max_bytes, 4096}));
  PROBING_RETURN_IF_ERROR(
      engine.add_store(*g_samples,
                       "Stack samples of every Python thread: the flight recorder (profile.recorder_hz, kept "
                       "profile.recorder_s seconds) and each `probing PID profile`. Read without the GIL."));
  g_stacks = new StackTable(static_cast<size_t>(settings().get_int("profile.max_stacks_mb")) << 20);
  sql::LiveTable stacks{
      "python",
      "stacks",
      "The stacks python.samples point to, one row per frame. stack_id 0 stands for stacks that no longer "
      "fit "
      "(profile.max_stacks_mb).",
      {col("stack_id", ColumnType::kInteger, "python.samples.stack_id"),
       col("depth", ColumnType::kInteger, "0 is the innermost frame"),
       col("func", ColumnType::kText, "function (qualified name on 3.11+)"),
       col("file", ColumnType::kText, "file name"), col("line", ColumnType::kInteger, "line number")},
      {0},
      [](const sql::ScanRequest& request) -> Result<sql::LiveRows> {
        std::vector<uint32_t> ids;
        for (const auto& [column, value] : request.equals) {
          if (column == 0 && std::holds_alternative<long long>(value)) {
            ids.push_back(static_cast<uint32_t>(std::get<long long>(value)));
          }
        }
        constexpr uint32_t kMaxListed = 50'000;  // stacks, when no stack_id is given
        constexpr size_t kPerLock = 1000;        // the sampler waits for at most this many
        const bool only = !request.equals.empty();
        sql::LiveRows out;
        if (only && ids.empty()) return out;
        if (!only) {
          const auto count = static_cast<uint32_t>(std::min<size_t>(g_stacks->stacks(), kMaxListed));
          for (uint32_t id = 1; id <= count; ++id) ids.push_back(id);
          if (g_stacks->stacks() > kMaxListed) {
            out.notices.push_back("only the first " + std::to_string(kMaxListed) +
                                  " stacks are listed: filter on stack_id for the others");
          }
        }
        for (size_t at = 0; at < ids.size(); at += kPerLock) {
          const std::span<const uint32_t> part(ids.data() + at, std::min(kPerLock, ids.size() - at));
          g_stacks->for_each(part, [&out](uint32_t id, const std::vector<Frame>& frames) {
            for (size_t depth = 0; depth < frames.size(); ++depth) {
              const Frame& f = frames[depth];
              out.rows.push_back({static_cast<long long>(id), static_cast<long long>(depth), f.func, f.file,
                                  static_cast<long long>(f.line)});
            }
          });
        }
        if (g_stacks->full())
          out.notices.push_back("the stack table is full: newer stacks show as stack_id 0");
        return out;
      }};
  PROBING_RETURN_IF_ERROR(engine.add_live_table(std::move(stacks)));
  sql::LiveTable hangs{
      "python",
      "hangs",
      "Times the main thread's stack did not change, and torch tracing recorded nothing, for hang.after_s "
      "seconds: one row per hang, open (ended NULL) until the process moves again.",
      {col("id", ColumnType::kInteger, "hang number, from 1"),
       col("started", ColumnType::kReal, "when the main thread last moved, unix time in seconds"),
       col("detected", ColumnType::kReal, "when the hang was declared (started + hang.after_s)"),
       col("ended", ColumnType::kReal, "when it moved again; NULL while it is hung"),
       col("duration_s", ColumnType::kReal, "seconds it has not moved (up to now while hung)"),
       col("thread_id", ColumnType::kInteger, "the main thread's ident"),
       col("stack_id", ColumnType::kInteger, "the main thread's stack: python.stacks.stack_id"),
       col("stack", ColumnType::kText, "that stack, innermost frame first"),
       col("threads", ColumnType::kText, "every thread's stack when it was declared"),
       col("before", ColumnType::kText,
           "the main thread's most frequent stacks in the hang.after_s before it stopped, from the flight "
           "recorder")},
      {},
      [](const sql::ScanRequest&) -> Result<sql::LiveRows> {
        sql::LiveRows out;
        Sampler* sampler = g_sampler.load(std::memory_order_acquire);
        if (sampler == nullptr) return out;
        const double now = unix_now_s();
        for (const Hang& h : sampler->hangs()) out.rows.push_back(hang_row(h, now));
        return out;
      }};
  return engine.add_live_table(std::move(hangs));
}

void start_sampler() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (g_samples == nullptr || g_stacks == nullptr) return;
    auto* sampler = new Sampler(*g_samples, g_stacks);  // runs for the life of the process
    g_sampler.store(sampler, std::memory_order_release);
    std::thread([sampler] { sampler->run(); }).detach();
  });
}

Result<Session> start_session(double hz, double seconds, long long renew, bool tasks) {
  Sampler* sampler = g_sampler.load(std::memory_order_acquire);
  if (sampler == nullptr) return Status(Code::kUnavailable, "the sampler is not started");
  return sampler->start_session(hz, seconds, renew, tasks);
}

nlohmann::json sampler_status() {
  Sampler* sampler = g_sampler.load(std::memory_order_acquire);
  if (sampler == nullptr) return {{"running", false}, {"error", "not started"}};
  return sampler->status();
}

namespace {

struct Kept {
  double time;
  long long thread;
  long long stack;
  double weight;
};

// Stacks that end in asyncio tasks have ids from here on, apart from python.stacks' ids.
constexpr long long kTaskStackBase = 1LL << 32;

// --async: a sample that ran a task's coroutine ends in that task and those awaiting it; with
// idle (in wall mode), each task snapshot's waiting tasks become samples too.
void name_tasks(const CollectRequest& request, Sampler& sampler, std::vector<Kept>* kept,
                std::vector<std::vector<Frame>>* task_stacks,
                std::map<long long, std::pair<std::string, long long>>* threads, nlohmann::json* notices) {
  const TaskBook& book = TaskBook::get();
  std::unordered_map<std::string, long long> ids;
  auto intern = [&](const std::vector<Frame>& frames) {
    std::string key;
    for (const Frame& f : frames) key += f.func + '\0' + f.file + '\0' + std::to_string(f.line) + '\0';
    auto [it, added] =
        ids.try_emplace(std::move(key), kTaskStackBase + static_cast<long long>(task_stacks->size()));
    if (added) task_stacks->push_back(frames);
    return it->second;
  };
  const auto generators = sampler.task_samples(request.since, request.until);
  std::unordered_map<long long, std::vector<Frame>> sampled;  // python.stacks, as read
  std::vector<Frame> rest;
  for (Kept& k : *kept) {
    auto g = generators.find({k.time, static_cast<unsigned long>(k.thread)});
    if (g == generators.end()) continue;
    rest.clear();
    uint32_t depth = 0;
    if (!book.running(k.time, static_cast<unsigned long>(k.thread), g->second, &depth, &rest)) continue;
    auto [it, added] = sampled.try_emplace(k.stack);
    if (added) it->second = g_stacks->frames_of(static_cast<uint32_t>(k.stack));
    if (depth >= it->second.size()) continue;
    std::vector<Frame> frames(it->second.begin(), it->second.begin() + depth + 1);
    frames.insert(frames.end(), rest.begin(), rest.end());
    k.stack = intern(frames);
  }
  if (request.idle && request.mode == Mode::kWall && kept->size() < request.max_samples) {
    for (TaskBook::Wait& w : book.waiting(request.since, request.until, request.max_samples - kept->size())) {
      kept->push_back({w.time, static_cast<long long>(w.thread), intern(w.frames), w.weight});
      threads->try_emplace(static_cast<long long>(w.thread));
    }
    std::stable_sort(kept->begin(), kept->end(),
                     [](const Kept& a, const Kept& b) { return a.time < b.time; });
  }
  for (std::string& n : book.notices(request.since, request.until)) notices->push_back(std::move(n));
}

}  // namespace

Result<std::string> collect(const CollectRequest& request) {
  if (g_samples == nullptr || g_stacks == nullptr)
    return Status(Code::kUnavailable, "the sampler is not started");
  if (!(request.until > request.since))
    return Status(Code::kInvalidArgument, "the window is empty: until <= since");
  Sampler* sampler = g_sampler.load(std::memory_order_acquire);
  if (request.tasks && sampler == nullptr) return Status(Code::kUnavailable, "the sampler is not started");
  std::vector<Kept> kept;
  std::map<long long, std::pair<std::string, long long>> threads;  // ident -> (name, tid)
  long long seen = 0, idle = 0, other_mode = 0, dropped = 0;
  double max_hz = 0;
  double oldest = std::numeric_limits<double>::infinity();
  for (const auto& chunk : (*g_samples)->snapshot().chunks) {
    const sql::ColumnChunk& time = chunk->columns[kTime];
    if (time.has_numbers) oldest = std::min(oldest, time.min);
    if (time.has_numbers && !time.has_other && (time.max < request.since || time.min >= request.until))
      continue;
    const sql::ColumnChunk& gil = chunk->columns[kGil];
    const sql::ColumnChunk& cpu = chunk->columns[kOnCpu];
    for (size_t row = 0; row < chunk->rows; ++row) {
      const double t = time.number_at(row);
      if (t < request.since || t >= request.until) continue;
      ++seen;
      const bool holds = gil.int_at(row) != 0;
      const bool cpu_known = cpu.tag(row) == sql::ColumnChunk::kInt;
      const bool running = cpu_known ? cpu.int_at(row) != 0 : holds;  // before 3.11: the GIL tells
      if (request.mode == Mode::kGil && !holds) {
        ++other_mode;
        continue;
      }
      if (request.mode == Mode::kCpu && !running) {
        ++other_mode;
        continue;
      }
      if (request.mode == Mode::kWall && !request.idle && !running && !holds) {
        ++idle;
        continue;
      }
      const long long thread = chunk->columns[kThreadId].int_at(row);
      const double interval = chunk->columns[kInterval].number_at(row);
      if (interval > 0) max_hz = std::max(max_hz, 1 / interval);
      kept.push_back({t, thread, chunk->columns[kStackId].int_at(row), interval});
      auto& info = threads[thread];
      const sql::ColumnChunk& name = chunk->columns[kThreadName];
      if (name.tag(row) == sql::ColumnChunk::kText) info.first = name.text_at(row);
      const sql::ColumnChunk& tid = chunk->columns[kNativeId];
      if (tid.tag(row) == sql::ColumnChunk::kInt) info.second = tid.int_at(row);
    }
  }
  std::stable_sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) { return a.time < b.time; });
  if (kept.size() > request.max_samples) {  // the newest are kept
    dropped = static_cast<long long>(kept.size() - request.max_samples);
    kept.erase(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(dropped));
  }
  nlohmann::json notices = nlohmann::json::array();
  std::vector<std::vector<Frame>> task_stacks;
  if (request.tasks) name_tasks(request, *sampler, &kept, &task_stacks, &threads, &notices);
  std::vector<uint32_t> ids;
  for (const Kept& k : kept) {
    if (k.stack < kTaskStackBase) ids.push_back(static_cast<uint32_t>(k.stack));
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  nlohmann::json stacks = nlohmann::json::object();
  g_stacks->for_each(ids, [&stacks](uint32_t id, const std::vector<Frame>& frames) {
    nlohmann::json list = nlohmann::json::array();
    for (const Frame& f : frames) list.push_back({f.func, f.file, f.line});
    stacks[std::to_string(id)] = std::move(list);
  });
  if (std::binary_search(ids.begin(), ids.end(), StackTable::kFull)) {
    stacks["0"] = nlohmann::json::array({nlohmann::json::array({"(stack table full)", "", 0})});
  }
  for (size_t i = 0; i < task_stacks.size(); ++i) {
    nlohmann::json list = nlohmann::json::array();
    for (const Frame& f : task_stacks[i]) list.push_back({f.func, f.file, f.line});
    stacks[std::to_string(kTaskStackBase + static_cast<long long>(i))] = std::move(list);
  }
  nlohmann::json thread_list = nlohmann::json::array();
  for (const auto& [ident, info] : threads) {
    thread_list.push_back(
        {{"thread_id", ident},
         {"native_thread_id", info.second != 0 ? nlohmann::json(info.second) : nlohmann::json()},
         {"name", info.first}});
  }
  if (dropped > 0)
    notices.push_back("only the newest " + std::to_string(request.max_samples) + " samples are kept");
  if (oldest > request.since && oldest - request.since > 1 && (*g_samples)->stats().dropped > 0) {
    notices.push_back("the first " + std::to_string(static_cast<long long>(oldest - request.since)) +
                      " s of the window are no longer kept (profile.recorder_s, profile.max_mb)");
  }
  if (g_stacks->full())
    notices.push_back("the stack table is full (profile.max_stacks_mb): some stacks are lost");
  const char* mode = request.mode == Mode::kWall ? "wall" : request.mode == Mode::kCpu ? "cpu" : "gil";
  nlohmann::json head{{"since", request.since},
                      {"until", request.until},
                      {"mode", mode},
                      {"idle", request.idle},
                      {"tasks", request.tasks},
                      {"max_hz", max_hz},
                      {"counts",
                       {{"seen", seen},
                        {"kept", kept.size()},
                        {"idle", idle},
                        {"other_mode", other_mode},
                        {"dropped", dropped}}},
                      {"threads", std::move(thread_list)},
                      {"stacks", std::move(stacks)},
                      {"notices", std::move(notices)}};
  // The samples, written as text: a million of them as JSON values would take the target ~100 MB.
  std::string text = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.pop_back();  // the closing brace
  text.reserve(text.size() + kept.size() * 48 + 16);
  text += ",\"samples\":[";
  char buf[128];
  for (size_t i = 0; i < kept.size(); ++i) {
    const Kept& k = kept[i];
    const int n = std::snprintf(buf, sizeof buf, "%s[%.6f,%lld,%lld,%.6g]", i == 0 ? "" : ",", k.time,
                                k.thread, k.stack, k.weight);
    text.append(buf, static_cast<size_t>(std::clamp(n, 0, static_cast<int>(sizeof buf) - 1)));
  }
  text += "]}";
  return text;
}

}  // namespace probing::profile
