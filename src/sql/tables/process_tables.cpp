// The process.* tables: what the kernel says about this process, read from /proc/self without
// Python (they answer while the GIL is stuck), and the process.metrics sampler.
#include <dirent.h>
#include <pwd.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/clock.h"
#include "core/log.h"
#include "core/proc_files.h"
#include "core/settings.h"
#include "python/runtime.h"
#include "sql/tables/tables.h"

namespace probing::sql {
namespace {

constexpr size_t kMaxProcFileBytes = 4 << 20;
constexpr size_t kMaxFds = 65536;

std::string read_file(const std::string& path, size_t max_bytes = kMaxProcFileBytes) {
  return read_proc_file(path, max_bytes);
}

std::string read_link(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

double ticks_per_second() {
  static const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return hz > 0 ? hz : 100;
}

// A stat line of this process, or an empty one.
ProcStat parse_stat(const std::string& text) { return parse_proc_stat(text).value_or(ProcStat{}); }

// The "VmRSS:    1234 kB" lines of a /proc/PID/status or /proc/meminfo text, in MB.
std::map<std::string, double> status_kb_fields(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos || line.find(" kB") == std::string::npos) continue;
    out[line.substr(0, colon)] = std::strtod(line.c_str() + colon + 1, nullptr) / 1024.0;
  }
  return out;
}

Value mb(const std::map<std::string, double>& fields, const char* name) {
  auto it = fields.find(name);
  return it == fields.end() ? Value() : Value(it->second);
}

Value text_or_null(const std::string& s) { return s.empty() ? Value() : Value(s); }

double boot_time_s() {
  std::istringstream in(read_file("/proc/stat"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) return std::strtod(line.c_str() + 6, nullptr);
  }
  return 0;
}

ColumnDef col(const char* name, ColumnType type, const char* description) { return {name, type, description}; }
constexpr ColumnType kInt = ColumnType::kInteger;
constexpr ColumnType kReal = ColumnType::kReal;
constexpr ColumnType kText = ColumnType::kText;

// ---- process.info ----

Result<LiveRows> fetch_info(const ScanRequest&) {
  std::string cmdline = read_file("/proc/self/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  while (!cmdline.empty() && cmdline.back() == ' ') cmdline.pop_back();
  ProcStat st = parse_stat(read_file("/proc/self/stat"));
  double start = boot_time_s() + st.number(22) / ticks_per_second();
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  uid_t uid = ::getuid();
  std::string user;
  struct passwd pw{}, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) user = pw.pw_name;
  LiveRows out;
  out.rows.push_back({static_cast<long long>(::getpid()), static_cast<long long>(::getppid()),
                      static_cast<long long>(uid), text_or_null(user), std::string(host),
                      text_or_null(read_link("/proc/self/exe")), cmdline, text_or_null(read_link("/proc/self/cwd")),
                      start, unix_now_s() - start, static_cast<long long>(st.number(20)),
                      text_or_null(python::PythonRuntime::version_text())});
  return out;
}

// ---- process.env ----

// Values of variables that look like secrets are not shown: a read-only client may query this.
bool secret_name(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  for (const char* word : {"TOKEN", "SECRET", "PASS", "CREDENTIAL", "KEY", "AUTH", "COOKIE", "SESSION"}) {
    if (name.find(word) != std::string::npos) return true;
  }
  return false;
}

Result<LiveRows> fetch_env(const ScanRequest&) {
  std::string environ = read_file("/proc/self/environ");
  LiveRows out;
  size_t at = 0;
  while (at < environ.size()) {
    size_t end = environ.find('\0', at);
    if (end == std::string::npos) end = environ.size();
    std::string entry = environ.substr(at, end - at);
    at = end + 1;
    size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    std::string name = entry.substr(0, eq);
    std::string value = entry.substr(eq + 1);
    if (secret_name(name)) {
      value = "<hidden>";
    } else if (size_t scheme = value.find("://"); scheme != std::string::npos) {
      // A URL's user:password@ (DATABASE_URL=postgres://u:pw@host/db) is hidden too.
      size_t at = value.find('@', scheme + 3);
      size_t slash = value.find('/', scheme + 3);
      if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
        value = value.substr(0, scheme + 3) + "<hidden>" + value.substr(at);
      }
    }
    out.rows.push_back({name, value});
  }
  std::sort(out.rows.begin(), out.rows.end(),
            [](const Row& a, const Row& b) { return std::get<std::string>(a[0]) < std::get<std::string>(b[0]); });
  return out;
}

// ---- process.memory ----

Result<LiveRows> fetch_memory(const ScanRequest&) {
  auto self = status_kb_fields(read_file("/proc/self/status"));
  auto system = status_kb_fields(read_file("/proc/meminfo"));
  LiveRows out;
  out.rows.push_back({mb(self, "VmRSS"), mb(self, "VmHWM"), mb(self, "VmSize"), mb(self, "RssAnon"),
                      mb(self, "RssFile"), mb(self, "RssShmem"), mb(self, "VmSwap"), mb(self, "VmData"),
                      mb(system, "MemTotal"), mb(system, "MemAvailable")});
  return out;
}

// ---- process.files ----

std::string fd_kind(const std::string& target) {
  if (target.rfind("socket:", 0) == 0) return "socket";
  if (target.rfind("pipe:", 0) == 0) return "pipe";
  if (target.rfind("anon_inode:", 0) == 0) return "anon";
  if (target.rfind("/dev/", 0) == 0) return "device";
  if (!target.empty() && target[0] == '/') return "file";
  return "other";
}

Result<LiveRows> fetch_files(const ScanRequest&) {
  LiveRows out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return errno_status("opening /proc/self/fd");
  std::vector<int> fds;
  bool more = false;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    if (fds.size() >= kMaxFds) {
      more = true;
      break;
    }
    fds.push_back(std::atoi(e->d_name));
  }
  int own = ::dirfd(dir);
  std::sort(fds.begin(), fds.end());
  for (int fd : fds) {
    if (fd == own) continue;
    std::string target = read_link("/proc/self/fd/" + std::to_string(fd));
    if (target.empty()) continue;  // closed meanwhile
    Value pos, mode;
    std::istringstream info(read_file("/proc/self/fdinfo/" + std::to_string(fd), 4096));
    std::string key;
    while (info >> key) {
      if (key == "pos:") {
        long long p;
        if (info >> p) pos = p;
      } else if (key == "flags:") {
        std::string octal;
        if (info >> octal) {
          long flags = std::strtol(octal.c_str(), nullptr, 8);
          int access = static_cast<int>(flags & 3);
          mode = std::string(access == 0 ? "r" : access == 1 ? "w" : "rw");
        }
      } else {
        std::string rest;
        std::getline(info, rest);
      }
    }
    out.rows.push_back({static_cast<long long>(fd), fd_kind(target), target, mode, pos});
  }
  ::closedir(dir);
  if (more) out.notices.push_back("only the first " + std::to_string(kMaxFds) + " descriptors are listed");
  return out;
}

// ---- process.threads ----

Result<LiveRows> fetch_threads(const ScanRequest&) {
  LiveRows out;
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return errno_status("opening /proc/self/task");
  std::vector<long long> tids;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && tids.size() < kMaxFds) tids.push_back(std::atoll(e->d_name));
  }
  ::closedir(dir);
  std::sort(tids.begin(), tids.end());
  double hz = ticks_per_second();
  for (long long tid : tids) {
    std::string text = read_file("/proc/self/task/" + std::to_string(tid) + "/stat", 4096);
    if (text.empty()) continue;  // exited meanwhile
    ProcStat st = parse_stat(text);
    out.rows.push_back({tid, st.comm, st.field(3), st.number(14) / hz, st.number(15) / hz,
                        static_cast<long long>(st.number(39)), static_cast<long long>(tid == ::getpid())});
  }
  return out;
}

// ---- process.metrics ----

struct Sample {
  double cpu_s = 0;
  double wall_s = 0;
};

class MetricsSampler {
 public:
  explicit MetricsSampler(std::shared_ptr<ColumnStore> store) : store_(std::move(store)) {}

  void run() noexcept {
    try {
      ::pthread_setname_np(::pthread_self(), "probing-metrics");
      Sample last = sample_cpu();
      for (;;) {
        double interval = settings().get_double("metrics.interval_s");
        std::this_thread::sleep_for(std::chrono::duration<double>(interval > 0 ? interval : 1.0));
        if (interval <= 0) continue;
        store_->set_limits({static_cast<size_t>(settings().get_int("metrics.max_rows")),
                            static_cast<size_t>(settings().get_int("metrics.max_rows")) * 128, 0});
        Sample now = sample_cpu();
        double cpu = now.wall_s > last.wall_s ? 100.0 * (now.cpu_s - last.cpu_s) / (now.wall_s - last.wall_s) : 0;
        last = now;
        const std::string status_text = read_file("/proc/self/status");
        auto status = status_kb_fields(status_text);
        long long threads = 0, files = 0;
        if (size_t at = status_text.find("\nThreads:"); at != std::string::npos) {
          threads = std::atoll(status_text.c_str() + at + 9);
        }
        if (DIR* dir = ::opendir("/proc/self/fd")) {
          while (dirent* e = ::readdir(dir)) files += e->d_name[0] >= '0' && e->d_name[0] <= '9';
          ::closedir(dir);
          --files;  // the one reading it
        }
        auto rss = status.find("VmRSS");
        Cell cells[] = {unix_now_s(), cpu, rss == status.end() ? Cell{} : Cell{rss->second}, threads, files};
        (void)store_->append(cells);
      }
    } catch (const std::exception& e) {
      log_error(std::string("process.metrics sampler stopped: ") + e.what());
    } catch (...) {
      log_error("process.metrics sampler stopped");
    }
  }

 private:
  static Sample sample_cpu() {
    ProcStat st = parse_stat(read_file("/proc/self/stat"));
    return {(st.number(14) + st.number(15)) / ticks_per_second(),
            std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count()};
  }
  std::shared_ptr<ColumnStore> store_;
};

}  // namespace

Status add_process_tables(Engine& engine) {
  std::vector<LiveTable> tables;
  tables.push_back({"process", "info", "This process: ids, command, start time, Python version. One row.",
                    {col("pid", kInt, "process id"),
                     col("ppid", kInt, "parent's process id"),
                     col("uid", kInt, "real user id"),
                     col("user", kText, "user name of uid"),
                     col("hostname", kText, "the machine's host name"),
                     col("exe", kText, "path of the executable"),
                     col("cmdline", kText, "command line, arguments joined by spaces"),
                     col("cwd", kText, "current directory"),
                     col("start_time", kReal, "when the process started, unix time in seconds"),
                     col("uptime_s", kReal, "seconds since the process started"),
                     col("threads", kInt, "OS threads now"),
                     col("python", kText, "CPython version, or NULL")},
                    {},
                    fetch_info});
  tables.push_back({"process", "env",
                    "The environment the process started with (from /proc/self/environ). Values of names "
                    "that look like secrets (TOKEN, SECRET, PASS, KEY, AUTH, CREDENTIAL, COOKIE, SESSION) "
                    "show as <hidden>, and so does the user:password@ of a URL.",
                    {col("name", kText, "variable name"), col("value", kText, "its value, or <hidden>")},
                    {},
                    fetch_env});
  tables.push_back({"process", "memory", "Memory of the process and of the machine, in MB. One row.",
                    {col("rss_mb", kReal, "resident set size, MB"),
                     col("peak_rss_mb", kReal, "highest resident set size so far, MB"),
                     col("vms_mb", kReal, "virtual memory size, MB"),
                     col("anon_mb", kReal, "resident anonymous memory (heap, stacks), MB"),
                     col("file_mb", kReal, "resident file-backed memory (code, mapped files), MB"),
                     col("shmem_mb", kReal, "resident shared memory, MB"),
                     col("swap_mb", kReal, "swapped out, MB"),
                     col("data_mb", kReal, "data segment and heap, virtual, MB"),
                     col("system_total_mb", kReal, "the machine's memory, MB"),
                     col("system_available_mb", kReal, "the machine's memory available to new work, MB")},
                    {},
                    fetch_memory});
  tables.push_back({"process", "files", "Open file descriptors.",
                    {col("fd", kInt, "descriptor number"),
                     col("kind", kText, "file, device, socket, pipe, anon or other"),
                     col("path", kText, "what it refers to (path, socket:[inode], pipe:[inode], ...)"),
                     col("mode", kText, "r, w or rw"),
                     col("pos", kInt, "file offset, bytes")},
                    {},
                    fetch_files});
  tables.push_back({"process", "threads", "OS threads of the process with their CPU time.",
                    {col("tid", kInt, "kernel thread id (python.threads.native_thread_id)"),
                     col("name", kText, "thread name as the kernel knows it (15 characters)"),
                     col("state", kText, "R running, S sleeping, D disk wait, ..."),
                     col("user_s", kReal, "CPU time in user mode, seconds"),
                     col("system_s", kReal, "CPU time in the kernel, seconds"),
                     col("processor", kInt, "CPU it last ran on"),
                     col("is_main", kInt, "1 for the main thread")},
                    {},
                    fetch_threads});
  for (LiveTable& t : tables) PROBING_RETURN_IF_ERROR(engine.add_live_table(std::move(t)));

  auto max_rows = static_cast<size_t>(settings().get_int("metrics.max_rows"));
  auto metrics = std::make_shared<ColumnStore>(
      "process", "metrics",
      std::vector<ColumnDef>{col("time", kReal, "when the sample was taken, unix time in seconds"),
                             col("cpu_percent", kReal, "CPU used since the previous sample, % of one core"),
                             col("rss_mb", kReal, "resident set size, MB"),
                             col("threads", kInt, "OS threads"),
                             col("open_files", kInt, "open file descriptors")},
      ColumnStore::Limits{max_rows, max_rows * 128, 1024});
  return engine.add_store(metrics, "CPU, memory, threads and descriptors, sampled every metrics.interval_s seconds.");
}

void start_metrics_sampler() {
  std::shared_ptr<ColumnStore> store = Engine::get().find_store("process", "metrics");
  if (store == nullptr) return;
  auto* sampler = new MetricsSampler(store);  // runs for the life of the process
  std::thread([sampler] { sampler->run(); }).detach();
}

}  // namespace probing::sql
