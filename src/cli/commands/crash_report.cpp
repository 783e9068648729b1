// probing crash-report: prints the report a process with the agent wrote when a fatal signal
// ended it (python/crash.h), its native frames named from the libraries its maps listed.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/common.h"
#include "native/native_stack.h"

namespace probing::cli {
namespace {

constexpr const char* kDir = "/var/tmp";

struct PythonThread {
  std::string head;  // "thread IDENT tid TID [gil] [crashed] name COMM"
  std::vector<std::string> lines;
};

struct Report {
  std::map<std::string, std::string> head;  // the first lines: "key value"
  std::vector<uint64_t> native;
  std::string python_version;
  std::vector<PythonThread> python;
  std::vector<std::string> notes;
  std::string maps;
  bool complete = false;  // reached "--- end"
};

Report parse(std::istream& in) {
  Report r;
  std::string section = "head";
  std::string line;
  while (std::getline(in, line)) {
    for (char& c : line) {  // a report is anyone's file: no escape sequence reaches the terminal
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) c = '?';
    }
    if (line.rfind("--- ", 0) == 0) {
      std::string word =
          line.substr(4, line.find(' ', 4) == std::string::npos ? std::string::npos : line.find(' ', 4) - 4);
      if (word == "note") {
        r.notes.push_back(line.substr(9));
        continue;
      }
      section = word;
      if (section == "end") r.complete = true;
      continue;
    }
    if (section == "head") {
      const size_t sp = line.find(' ');
      if (sp != std::string::npos) r.head[line.substr(0, sp)] = line.substr(sp + 1);
    } else if (section == "native") {
      r.native.push_back(std::strtoull(line.c_str(), nullptr, 16));
    } else if (section == "python") {
      if (line.rfind("version ", 0) == 0) {
        r.python_version = line.substr(8);
      } else if (line.rfind("note ", 0) == 0) {
        r.notes.push_back(line.substr(5));
      } else if (line.rfind("thread ", 0) == 0) {
        r.python.push_back({line, {}});
      } else if (!r.python.empty()) {
        r.python.back().lines.push_back(line);
      }
    } else if (section == "maps") {
      r.maps += line + "\n";
    }
  }
  return r;
}

// The words of a python thread's head line: "thread 1401 tid 42 gil crashed name MainThread".
nlohmann::json thread_json(const PythonThread& t) {
  std::istringstream words(t.head);
  std::string w;
  nlohmann::json j = {{"holds_gil", false}, {"crashed", false}};
  while (words >> w) {
    if (w == "name") {  // the rest of the line: a name may hold spaces
      std::string rest;
      std::getline(words, rest);
      j["name"] = rest.empty() ? "" : rest.substr(1);
      break;
    }
    std::string number;
    if (w == "gil" || w == "crashed") {
      j[w == "gil" ? "holds_gil" : "crashed"] = true;
    } else if ((w == "thread" || w == "tid") && words >> number) {
      j[w == "thread" ? "thread_id" : "native_thread_id"] = std::strtoul(number.c_str(), nullptr, 10);
    }
  }
  nlohmann::json frames = nlohmann::json::array();
  for (const std::string& line : t.lines) {
    // "  LINE FUNC FILE", or "  ..." (cut) and "  ! WHY" (the walk stopped)
    std::istringstream in(line);
    std::string lineno, func, file;
    in >> lineno;
    if (lineno == "...") {
      j["truncated"] = true;
      continue;
    }
    if (lineno == "!") {
      std::getline(in, func);
      j["note"] = func.empty() ? "" : func.substr(1);
      continue;
    }
    in >> func;
    std::getline(in, file);
    frames.push_back({{"func", func},
                      {"file", file.empty() ? "" : file.substr(1)},
                      {"lineno", std::strtol(lineno.c_str(), nullptr, 10)}});
  }
  j["frames"] = frames;
  return j;
}

// Line `lineno` of `file`, if the report's owner could read it too: a report names any file it
// likes, and root reading someone's report must not print a line of /etc/shadow.
std::string source_line(const std::string& file, long lineno, uid_t owner) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return "";
  if ((st.st_mode & S_IROTH) == 0 && st.st_uid != owner) return "";
  std::ifstream in(file);
  std::string line;
  for (long i = 0; i < lineno && std::getline(in, line); ++i) {
  }
  if (!in) return "";
  const size_t first = line.find_first_not_of(" \t");
  return first == std::string::npos ? "" : line.substr(first);
}

nlohmann::json to_json(const Report& r, const std::string& path, const std::string& root) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : r.head) j[k] = v;
  j["file"] = path;
  j["complete"] = r.complete;
  j["notes"] = r.notes;
  nlohmann::json native = nlohmann::json::array();
  for (const native::Frame& f : native::symbolize_offline(r.maps, r.native, root)) {
    native.push_back({{"address", f.address}, {"func", f.func}, {"offset", f.offset}, {"library", f.file}});
  }
  j["native"] = native;
  j["python_version"] = r.python_version;
  nlohmann::json threads = nlohmann::json::array();
  for (const PythonThread& t : r.python) threads.push_back(thread_json(t));
  j["python"] = threads;
  return j;
}

std::string when(const std::string& unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(std::strtod(unix_seconds.c_str(), nullptr));
  std::tm tm{};
  if (t == 0 || ::localtime_r(&t, &tm) == nullptr) return unix_seconds;
  std::ostringstream out;
  out << std::put_time(&tm, "%Y-%m-%d %H:%M:%S %Z");
  return out.str();
}

void print_text(const nlohmann::json& j, const std::string& root, uid_t owner) {
  auto field = [&](const char* k) { return j.contains(k) ? j[k].get<std::string>() : std::string(); };
  std::cout << "Process " << field("pid") << " (" << field("command") << ")";
  if (!j["python_version"].get<std::string>().empty())
    std::cout << ", Python " << j["python_version"].get<std::string>();
  std::cout << "\n";
  std::string sig = field("signal");
  if (const size_t sp = sig.find(' '); sp != std::string::npos) sig = sig.substr(sp + 1);
  std::string code = field("code");
  if (const size_t sp = code.find(' '); sp != std::string::npos)
    code = code.substr(sp + 1);
  else
    code.clear();
  std::cout << sig;
  if (!code.empty()) std::cout << " (" << code << ")";
  if (j.contains("address")) std::cout << " at address " << field("address");
  if (j.contains("sender")) std::cout << " from pid " << field("sender");
  std::string thread = field("thread");
  if (const size_t sp = thread.find(' '); sp != std::string::npos) {
    thread = thread.substr(0, sp) + " \"" + thread.substr(sp + 1) + "\"";
  }
  std::cout << " in thread " << thread << ", " << when(field("time")) << "\n";
  std::cout << "\nNative stack of the thread that crashed:\n";
  if (j["native"].empty()) std::cout << "  (not read)\n";
  for (const auto& f : j["native"]) {
    std::cout << "  " << f["func"].get<std::string>();
    if (f["offset"].get<uint64_t>() > 0)
      std::cout << "+0x" << std::hex << f["offset"].get<uint64_t>() << std::dec;
    std::string lib = f["library"].get<std::string>();
    std::cout << " (" << (lib.empty() ? "?" : lib) << ") [Native]\n";
  }
  for (const auto& t : j["python"]) {
    std::cout << "\nThread " << t.value("thread_id", 0UL);
    if (!t.value("name", "").empty()) std::cout << " \"" << t["name"].get<std::string>() << "\"";
    std::vector<std::string> tags;
    if (t.value("native_thread_id", 0L) != 0)
      tags.push_back("tid " + std::to_string(t["native_thread_id"].get<long>()));
    if (t["crashed"].get<bool>()) tags.push_back("crashed");
    if (t["holds_gil"].get<bool>()) tags.push_back("holds the GIL");
    if (!tags.empty()) {
      std::cout << " (";
      for (size_t i = 0; i < tags.size(); ++i) std::cout << (i ? ", " : "") << tags[i];
      std::cout << ")";
    }
    std::cout << "\n";
    for (const auto& f : t["frames"]) {
      const std::string file = f["file"].get<std::string>();
      const long lineno = f["lineno"].get<long>();
      std::cout << "  " << f["func"].get<std::string>() << " (" << file;
      if (lineno > 0) std::cout << ":" << lineno;
      std::cout << ")\n";
      if (std::string src = lineno > 0 ? source_line(root + file, lineno, owner) : ""; !src.empty()) {
        std::cout << "      " << src << "\n";
      }
    }
    if (t.value("truncated", false)) std::cout << "  ...\n";
    if (t.contains("note")) std::cout << "  (" << t["note"].get<std::string>() << ")\n";
  }
  for (const auto& n : j["notes"]) std::cout << "\nnote: " << n.get<std::string>() << "\n";
  if (!j["complete"].get<bool>()) {
    std::cout << "\nnote: the report ends early: the process was killed while it was written\n";
  }
}

// The newest probing-*.crash in `dir`; "" when there is none.
std::string newest_report(const std::string& dir) {
  std::string best;
  time_t best_time = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return best;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("probing-", 0) != 0 || name.size() < 7 || name.substr(name.size() - 6) != ".crash")
      continue;
    struct stat st {};
    const std::string path = dir + "/" + name;
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_mtime >= best_time) {
      best_time = st.st_mtime;
      best = path;
    }
  }
  ::closedir(d);
  return best;
}

int run_crash_report(const Context& ctx, std::string which, std::string root, bool json) {
  if (which.empty()) which = ctx.target;
  if (root == "/") root.clear();
  std::string path = which;
  if (!which.empty() && which.find_first_not_of("0123456789") == std::string::npos) {
    path = root + kDir + "/probing-" + which + ".crash";
  }
  if (path.empty()) {
    path = newest_report(root + kDir);
    if (path.empty()) {
      return fail("no crash report in " + root + kDir +
                  ": a process with the agent writes /var/tmp/probing-<pid>.crash when a fatal signal "
                  "ends it (crash.capture, on by default)");
    }
    if (!json) std::cerr << "probing: the newest report: " << path << "\n";
  }
  std::ifstream in(path);
  struct stat st {};
  if (!in || ::stat(path.c_str(), &st) != 0) {
    return fail(Status(Code::kNotFound, "no crash report at " + path + ": " + std::strerror(errno)));
  }
  Report r = parse(in);
  if (r.head.count("pid") == 0) return fail(path + " is not a probing crash report");
  nlohmann::json j = to_json(r, path, root);
  if (json) {
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    print_text(j, root, st.st_uid);
  }
  return kExitOk;
}

}  // namespace

void add_crash_report_command(CLI::App& app, Context& ctx) {
  auto which = std::make_shared<std::string>();
  auto root = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "crash-report",
      "Print the report a process with the agent wrote when a fatal signal (SIGSEGV, SIGBUS, SIGILL, "
      "SIGFPE, SIGABRT) ended it: the signal, the native stack of the thread that crashed, named from "
      "its libraries, and every thread's Python stack.\n"
      "  probing crash-report                       (the newest report in /var/tmp)\n"
      "  probing crash-report 4242                  (/var/tmp/probing-4242.crash)\n"
      "  probing crash-report /var/tmp/probing-4242.crash --json");
  cmd->add_option("REPORT", *which, "a report file, or the pid whose report to print (default: the newest)");
  cmd->add_option("--root", *root,
                  "the file system the process saw (a container's or a chroot's root, as this machine sees "
                  "it): where its report, libraries and sources are")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", *json, "print the report as JSON");
  on_run(cmd, [&ctx, which, root, json] { return run_crash_report(ctx, *which, *root, *json); });
}

}  // namespace probing::cli
