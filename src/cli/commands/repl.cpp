// probing TARGET repl — an interactive Python prompt whose code runs in the target's __main__
// (docs/repl.md). Line editing and history come from libedit; completion, the "is this block
// finished?" decision (codeop) and the code itself run in the target. Ctrl-C while code runs
// sends POST /interrupt on a second connection, naming the eval by the id it was sent with.
#include <histedit.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cwchar>
#include <clocale>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "cli/common.h"
#include "cli/interrupt.h"

namespace probing::cli {
namespace {

struct ReplArgs {
  double timeout_s = 3600;
};

// Python's readline word delimiters (rlcompleter's completions include the dots).
constexpr const char* kWordBreaks = " \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?";

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// $HOME/.probing_history (the password database's home when HOME is unset); "" when neither.
std::string history_path() {
  const char* home = ::getenv("HOME");
  if (home == nullptr || home[0] == '\0') {
    const passwd* pw = ::getpwuid(::getuid());
    home = pw != nullptr ? pw->pw_dir : nullptr;
  }
  if (home == nullptr || home[0] == '\0') return {};
  return std::string(home) + "/.probing_history";
}

std::string common_prefix(const std::vector<std::string>& words) {
  if (words.empty()) return {};
  std::string prefix = words[0];
  for (const std::string& w : words) {
    size_t n = 0;
    while (n < prefix.size() && n < w.size() && prefix[n] == w[n]) ++n;
    prefix.resize(n);
  }
  return prefix;
}

class Repl {
 public:
  Repl(const Context& ctx, const ReplArgs& args) : ctx_(ctx), args_(args) {
    std::random_device rd;
    session_ = std::to_string(::getpid()) + "-" + std::to_string(rd() % 1000000);
  }
  ~Repl() {
    if (el_ != nullptr) el_end(el_);
    if (hist_ != nullptr) history_end(hist_);
  }

  int run() {
    Result<std::string> banner = describe_target();
    if (!banner.is_ok()) return fail(banner.status());
    if (!sigint_.ok()) return fail(errno_status("setting up Ctrl-C"));
    interactive_ = ::isatty(STDIN_FILENO) == 1;
    if (interactive_) {
      std::cout << *banner << "\nType Python; it runs in the target's __main__. Ctrl-C interrupts it, Ctrl-D leaves.\n"
                << std::flush;
      setup_editline();
    }
    std::string buffer;  // the unfinished block so far
    for (;;) {
      std::optional<std::string> line = read_line(buffer.empty() ? ">>> " : "... ");
      if (!line) {
        if (interactive_) std::cout << "\n";
        // Piped input: an input the agent refused (a read-only token, a Python busy past its
        // deadline) ran nothing, so say so in the exit status. The code's own exceptions do not
        // count, as in Python's own interactive mode.
        return interactive_ || !refused_ ? kExitOk : kExitFailed;
      }
      if (cancelled_) {  // Ctrl-C at the prompt drops the line and the unfinished block
        cancelled_ = false;
        std::cout << "KeyboardInterrupt\n" << std::flush;
        buffer.clear();
        continue;
      }
      if (interactive_ && !blank(*line)) remember(*line);
      if (buffer.empty() && blank(*line)) continue;
      std::string source = buffer.empty() ? *line : buffer + "\n" + *line;
      switch (evaluate(source)) {
        case Outcome::kIncomplete: buffer = source; break;
        case Outcome::kDone: buffer.clear(); break;
        case Outcome::kLost: return kExitFailed;
      }
    }
  }

 private:
  enum class Outcome { kDone, kIncomplete, kLost };

  Result<std::string> describe_target() {
    auto client = connect_target(ctx_);
    if (!client.is_ok()) return client.status();
    Result<client::Response> reply = (*client)->request("GET", "/health", "", 10);
    if (!reply.is_ok()) return reply.status();
    nlohmann::json j = reply->json();
    if (reply->status != 200 || !j.is_object()) return Status(Code::kInternal, reply->error_message());
    if (j.value("python_status", "") != "ready") {
      return Status(Code::kUnavailable, "Python is not available in the target: " + j.value("python_status", "?"));
    }
    std::string cmdline;
    if (j.contains("cmdline") && j["cmdline"].is_array()) {
      for (const auto& a : j["cmdline"]) {
        if (!a.is_string()) continue;
        if (!cmdline.empty()) cmdline += " ";
        cmdline += a.get<std::string>();
      }
    }
    std::string python = j["python"].is_string() ? j["python"].get<std::string>() : std::string("?");
    return "probing repl: Python " + python.substr(0, python.find(' ')) + " in process " +
           std::to_string(j.value("pid", 0)) + (cmdline.empty() ? "" : " (" + cmdline.substr(0, 100) + ")");
  }

  void setup_editline() {
    std::setlocale(LC_CTYPE, "");  // libedit and getc_fn decode the terminal's multibyte text
    el_ = el_init("probing", stdin, stdout, stderr);
    if (el_ == nullptr) {
      interactive_ = false;
      return;
    }
    el_set(el_, EL_CLIENTDATA, this);
    el_set(el_, EL_PROMPT, &Repl::prompt_fn);
    el_set(el_, EL_EDITOR, "emacs");
    // While editing, ^C is a key (it clears the line), not SIGINT; while code runs the terminal
    // is back in its own mode and ^C is SIGINT again.
    el_set(el_, EL_SETTY, "-d", "-isig", nullptr);
    el_set(el_, EL_ADDFN, "probing-complete", "complete in the target", &Repl::complete_fn);
    el_set(el_, EL_BIND, "^I", "probing-complete", nullptr);
    el_set(el_, EL_ADDFN, "probing-cancel", "drop the line", &Repl::cancel_fn);
    el_set(el_, EL_BIND, "^C", "probing-cancel", nullptr);
    // A SIGINT that arrives while editing anyway (the terminal kept ISIG, or kill -INT) reads
    // as ^C too.
    el_set(el_, EL_GETCFN, &Repl::getc_fn);
    hist_ = history_init();
    if (hist_ != nullptr) {
      HistEvent ev;
      history(hist_, &ev, H_SETSIZE, 1000);
      history(hist_, &ev, H_SETUNIQUE, 1);
      history_file_ = history_path();
      if (!history_file_.empty()) history(hist_, &ev, H_LOAD, history_file_.c_str());
      el_set(el_, EL_HIST, history, hist_);
    }
  }

  // A line without its newline; nullopt at end of input.
  std::optional<std::string> read_line(const char* prompt) {
    prompt_ = prompt;
    if (!interactive_ || el_ == nullptr) {
      std::string line;
      if (!std::getline(std::cin, line)) return std::nullopt;
      return line;
    }
    int count = 0;
    const char* text = el_gets(el_, &count);
    if (cancelled_) {  // ^C; on an empty line libedit reports no text and stays on the line
      if (text == nullptr || count <= 0) std::cout << "\n";
      return std::string();
    }
    if (text == nullptr || count <= 0) return std::nullopt;
    std::string line(text, static_cast<size_t>(count));
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    return line;
  }

  // Adds a line to the history and saves the file, so a REPL that is killed keeps it too.
  void remember(const std::string& line) {
    if (hist_ == nullptr) return;
    HistEvent ev;
    history(hist_, &ev, H_ENTER, line.c_str());
    if (!history_file_.empty()) history(hist_, &ev, H_SAVE, history_file_.c_str());
  }

  static Repl* self(EditLine* el) {
    void* data = nullptr;
    el_get(el, EL_CLIENTDATA, &data);
    return static_cast<Repl*>(data);
  }

  static char* prompt_fn(EditLine* el) { return const_cast<char*>(self(el)->prompt_); }

  // Reads one character from stdin, or ^C when SIGINT arrived meanwhile. 1, 0 at end of input,
  // -1 on error (libedit's contract).
  static int getc_fn(EditLine* el, wchar_t* out) {
    const SigintPipe& sigint = self(el)->sigint_;
    std::mbstate_t state{};
    for (;;) {
      pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sigint.fd(), POLLIN, 0}};
      int n = ::poll(fds, 2, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return -1;
      }
      if (fds[1].revents != 0) {
        sigint.drain();
        *out = L'\x03';
        return 1;
      }
      char byte;
      ssize_t got = ::read(STDIN_FILENO, &byte, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return got == 0 ? 0 : -1;
      wchar_t wc;
      size_t r = std::mbrtowc(&wc, &byte, 1, &state);
      if (r == static_cast<size_t>(-2)) continue;  // more bytes of this character to come
      if (r == static_cast<size_t>(-1)) {
        state = std::mbstate_t{};
        wc = static_cast<unsigned char>(byte);
      }
      *out = r == 0 ? L'\0' : wc;
      return 1;
    }
  }

  static unsigned char cancel_fn(EditLine* el, int) {
    self(el)->cancelled_ = true;
    return CC_NEWLINE;
  }

  static unsigned char complete_fn(EditLine* el, int) {
    try {
      return self(el)->complete(el);
    } catch (...) {
      return CC_REFRESH_BEEP;
    }
  }

  unsigned char complete(EditLine* el) {
    const LineInfo* li = el_line(el);
    std::string before(li->buffer, static_cast<size_t>(li->cursor - li->buffer));
    if (blank(before)) {  // indentation, as Python's own REPL does
      el_insertstr(el, "    ");
      return CC_REFRESH;
    }
    size_t cut = before.find_last_of(kWordBreaks);
    std::string text = cut == std::string::npos ? before : before.substr(cut + 1);
    std::vector<std::string> matches = fetch_completions(text, before);
    if (matches.empty()) return CC_REFRESH_BEEP;
    std::string prefix = common_prefix(matches);
    if (prefix.size() > text.size() && prefix.compare(0, text.size(), text) == 0) {
      el_insertstr(el, prefix.substr(text.size()).c_str());
      return CC_REFRESH;
    }
    if (matches.size() == 1) return CC_REFRESH;
    // No progress to make: list them, in columns, as readline does.
    size_t width = 0;
    for (const std::string& m : matches) width = std::max(width, m.size());
    width += 2;
    winsize ws{};
    size_t cols = ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
    size_t per_row = std::max<size_t>(1, cols / width);
    std::string out = "\n";
    for (size_t i = 0; i < matches.size(); ++i) {
      std::string cell = matches[i];
      if ((i + 1) % per_row != 0 && i + 1 != matches.size()) cell.resize(width, ' ');
      out += cell;
      if ((i + 1) % per_row == 0 || i + 1 == matches.size()) out += "\n";
    }
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
    return CC_REDISPLAY;
  }

  std::vector<std::string> fetch_completions(const std::string& text, const std::string& line) {
    std::vector<std::string> out;
    auto client = connect_target(ctx_, 2);
    if (!client.is_ok()) return out;
    nlohmann::json body = {{"text", text}, {"line", line}};
    Result<client::Response> reply = (*client)->request("POST", "/complete", body.dump(), 10);
    if (!reply.is_ok() || reply->status != 200) return out;
    nlohmann::json j = reply->json();
    if (!j.is_object() || !j.contains("matches") || !j["matches"].is_array()) return out;
    for (const auto& m : j["matches"]) {
      if (m.is_string()) out.push_back(m.get<std::string>());
    }
    return out;
  }

  Outcome evaluate(const std::string& source) {
    std::string id = "repl-" + session_ + "-" + std::to_string(++evals_);
    nlohmann::json body = {{"code", source}, {"timeout", args_.timeout_s}, {"interactive", true}, {"id", id}};
    auto connected = connect_target(ctx_);
    if (!connected.is_ok()) return lost(connected.status());
    // The agent answers by the deadline plus its grace.
    std::optional<Result<client::Response>> reply =
        eval_interruptibly(ctx_, std::move(*connected), body, args_.timeout_s + 10, sigint_);
    if (!reply) return Outcome::kDone;  // a second Ctrl-C: stopped waiting
    return show(*reply);
  }

  Outcome show(const Result<client::Response>& reply) {
    if (!reply.is_ok()) {
      if (reply.status().code() == Code::kUnavailable) return lost(reply.status());
      std::cerr << "probing: " << reply.status().message() << "\n";
      refused_ = true;
      return Outcome::kDone;
    }
    nlohmann::json j = reply->json();
    if (!j.is_object()) {
      std::cerr << "probing: the agent sent a reply that is not JSON: " << reply->body.substr(0, 200) << "\n";
      return Outcome::kDone;
    }
    std::string output = j.value("output", "");
    std::cout << output;
    if (!output.empty() && output.back() != '\n') std::cout << "\n";
    std::cout << std::flush;
    if (reply->status != 200) {
      std::cerr << "probing: " << reply->error_message() << "\n";
      refused_ = true;
      return Outcome::kDone;
    }
    if (j.value("incomplete", false)) return Outcome::kIncomplete;
    if (j.contains("value") && j["value"].is_string()) std::cout << j["value"].get<std::string>() << "\n" << std::flush;
    if (j.contains("exception") && j["exception"].is_object()) {
      const nlohmann::json& exc = j["exception"];
      std::cerr << exc.value("traceback", exc.value("type", "") + ": " + exc.value("message", "") + "\n") << std::flush;
    }
    return Outcome::kDone;
  }

  Outcome lost(const Status& status) {
    const client::Target* t = nullptr;
    Result<client::Target> parsed = client::parse_target(ctx_.target);
    if (parsed.is_ok()) t = &*parsed;
    if (t != nullptr && t->kind == client::Target::Kind::kPid && client::process_exited(t->pid)) {
      std::cerr << "probing: the target (process " << t->pid << ") has exited\n";
    } else {
      std::cerr << "probing: lost the target: " << status.message() << "\n";
    }
    return Outcome::kLost;
  }

  const Context& ctx_;
  const ReplArgs& args_;
  SigintPipe sigint_;  // Ctrl-C for the whole session: at the prompt and while code runs
  std::string session_;
  unsigned long evals_ = 0;
  bool interactive_ = false;
  bool cancelled_ = false;
  bool refused_ = false;  // an input the agent did not run (see run())
  const char* prompt_ = ">>> ";
  EditLine* el_ = nullptr;
  History* hist_ = nullptr;
  std::string history_file_;
};

}  // namespace

void add_repl_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ReplArgs>();
  CLI::App* cmd = app.add_subcommand(
      "repl",
      "An interactive Python prompt in the target's __main__: line editing, history\n"
      "(~/.probing_history), tab completion from the target, multi-line blocks.\n"
      "Ctrl-C interrupts the running code (the target keeps running); Ctrl-D leaves.");
  cmd->add_option("--timeout", args->timeout_s, "seconds one input may run before it is interrupted")
      ->default_val(3600)
      ->check(CLI::PositiveNumber);
  on_run(cmd, [&ctx, args] { return Repl(ctx, *args).run(); });
}

}  // namespace probing::cli
