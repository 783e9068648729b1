// probing cluster [-t RANK] nodes|query|backtrace|eval — every rank of a job at once
// (docs/cluster.md). The target is any one rank; it leads to the others: its agent's copy of the
// job's membership (rank 0's registry), and the local processes of the same job.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/cluster_merge.h"
#include "cli/common.h"
#include "cli/format.h"
#include "core/clock.h"
#include "core/job.h"
#include "core/proc_files.h"

namespace probing::cli {
namespace {

struct ClusterArgs {
  double timeout_s = 10;  // one deadline for the whole command
  int max_connections = 64;
  std::string ranks;  // --ranks: only these
  std::string format = "table";
  std::string sql;
  std::string code;
  bool exact = false;  // backtrace: lines too
  bool all_threads = false;
  bool native = false;    // backtrace: native frames of this host's ranks
  bool explain = false;   // query: say how the statement runs over the job
  bool tcp_only = false;  // --tcp: this host's ranks too at their registered addresses
  bool json = false;      // backtrace, eval: the whole answer as JSON
  // probe add|list|remove
  std::string probe_where, probe_capture, probe_when, probe_id;
  long long probe_limit = 0;
  double probe_expire_s = 0;
};

// One rank, and how to reach it.
struct Rank {
  int rank = -1;
  std::string hostname;
  client::Target target;
  bool reachable = false;
  pid_t local_pid = 0;
  std::string unreachable;  // why it cannot be asked, known before asking
  double seen_s_ago = -1;   // the registry's last heartbeat from it; < 0 unknown
  bool silent = false;      // the registry has not heard from it in three heartbeats
};

struct Job {
  int world_size = 0;
  std::string key;
  std::string registry;     // "host:port", or ""
  std::vector<Rank> ranks;  // by rank
  std::vector<int> asked;   // the ranks to ask: all, or --ranks
  std::vector<std::string> notes;
};

// One rank's answer.
struct Answer {
  bool ok = false;
  nlohmann::json json;
  std::string state;   // when not ok: "dead", "not answering", "unreachable", "error"
  std::string reason;  // when not ok
  double sent = 0, received = 0;
};

class Deadline {
 public:
  explicit Deadline(double seconds) : end_(monotonic_s() + seconds) {}
  double left() const { return std::max(0.05, end_ - monotonic_s()); }
  bool passed() const { return monotonic_s() >= end_; }

 private:
  double end_;
};

bool loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::string host_of_target(const client::Target& t) {
  return t.kind == client::Target::Kind::kTcp ? t.host : "";
}

// The options for one rank: the token and TLS over TCP; over a unix socket only --read-only.
client::ConnectOptions options_for(const client::Target& t, const Context& ctx) {
  if (t.kind == client::Target::Kind::kTcp) return ctx.connect;
  client::ConnectOptions o;
  o.read_only = ctx.connect.read_only;
  return o;
}

Result<nlohmann::json> get_cluster(const client::Target& target, const Context& ctx,
                                   const Deadline& deadline) {
  Result<std::unique_ptr<client::Client>> c =
      client::Client::connect(target, std::min(5.0, deadline.left()), options_for(target, ctx));
  if (!c.is_ok()) return c.status();
  return agent_json(
      **c, "GET", "/cluster", "", deadline.left(),
      "the agent of " + target.text + " predates `probing cluster`: it cannot say which job it is in");
}

// The ranks to ask: all, or --ranks.
Result<std::vector<int>> selected(const Job& job, const ClusterArgs& args) {
  std::vector<int> out;
  if (args.ranks.empty()) {
    for (int r = 0; r < job.world_size; ++r) out.push_back(r);
    return out;
  }
  Result<std::vector<int>> list = parse_rank_list(args.ranks);
  if (!list.is_ok()) return list.status().with_context("--ranks");
  for (int r : *list) {
    if (r >= job.world_size) {
      return Status(Code::kInvalidArgument, "--ranks: rank " + std::to_string(r) + " is not in a job of " +
                                                std::to_string(job.world_size) + " (ranks 0-" +
                                                std::to_string(job.world_size - 1) + ")");
    }
  }
  return *list;
}

// The job's ranks: from the target's agent (and, through it, the registry), and from the local
// processes whose environment names the same job; and which of them to ask.
Result<Job> discover(const Context& ctx, const ClusterArgs& args, const Deadline& deadline) {
  if (ctx.target.empty()) {
    return Status(
        Code::kInvalidArgument,
        "give one rank of the job: probing cluster -t PID|HOST:PORT nodes (any rank leads to the others)");
  }
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok()) return target.status();
  Job job;
  JobInfo local_info;  // from the target's environment when it is a local pid
  Result<nlohmann::json> reply = get_cluster(*target, ctx, deadline);
  if (target->kind == client::Target::Kind::kPid) {
    std::optional<JobInfo> env = job_of(target->pid);
    if (!env && ::access(("/proc/" + std::to_string(target->pid)).c_str(), F_OK) != 0) {
      return Status(Code::kNotFound, "no process " + std::to_string(target->pid));
    }
    local_info = env.value_or(JobInfo{});  // an environment we cannot read, or an empty one
    if (!local_info.in_job()) {
      return Status(Code::kInvalidArgument,
                    "process " + std::to_string(target->pid) +
                        " is not a rank of a job: its environment has no RANK and WORLD_SIZE "
                        "(set by torchrun and the other launchers)");
    }
    if (!reply.is_ok())
      job.notes.push_back("rank " + std::to_string(local_info.rank) +
                          "'s agent: " + reply.status().message());
  } else if (!reply.is_ok()) {
    return reply.status();
  }
  nlohmann::json cluster = reply.is_ok() ? *reply : nlohmann::json::object();
  if (reply.is_ok() && cluster.value("job", nlohmann::json()).is_null()) {
    return Status(Code::kInvalidArgument,
                  ctx.target + " is not a rank of a job: " + cluster.value("message", std::string()));
  }
  if (cluster.contains("job") && cluster["job"].is_object()) {
    job.world_size = cluster["job"].value("world_size", 0);
    job.key = cluster["job"].value("key", "");
  } else {
    job.world_size = local_info.world_size;
    job.key = local_info.key();
  }
  if (job.world_size <= 0 || job.world_size > 1000000) {
    return Status(Code::kInvalidArgument,
                  "the job's WORLD_SIZE is not usable: " + std::to_string(job.world_size));
  }
  job.ranks.resize(static_cast<size_t>(job.world_size));
  for (int r = 0; r < job.world_size; ++r) job.ranks[static_cast<size_t>(r)].rank = r;
  // A registry's address as the target sees it may be loopback; from here it is the target's host.
  const std::string target_host = host_of_target(*target);
  auto reach = [&](std::string address) {
    if (loopback(address) && !target_host.empty() && !loopback(target_host)) address = target_host;
    return address;
  };
  if (cluster.value("registry", nlohmann::json()).is_string()) {
    job.registry = cluster["registry"].get<std::string>();
    if (cluster.value("role", "") != "registry") {
      // The registry knows who is alive; the target only where the ranks are.
      Result<client::Target> rt = client::parse_target(job.registry);
      if (rt.is_ok() && rt->kind == client::Target::Kind::kTcp) {
        rt->host = reach(rt->host);
        rt->text = (rt->host.find(':') != std::string::npos ? "[" + rt->host + "]" : rt->host) + ":" +
                   std::to_string(rt->port);
        Result<nlohmann::json> fresh = get_cluster(*rt, ctx, deadline);
        if (fresh.is_ok() && fresh->value("members", nlohmann::json()).is_array()) {
          cluster["members"] = (*fresh)["members"];
        } else {
          job.notes.push_back("the job's registry (rank 0's agent at " + rt->text + ") did not answer (" +
                              (fresh.is_ok() ? std::string("no member list") : fresh.status().message()) +
                              "): ranks are where rank " + std::to_string(cluster["job"].value("rank", -1)) +
                              " last heard they were");
        }
      }
    }
  }
  for (const nlohmann::json& m : cluster.value("members", nlohmann::json::array())) {
    const int r = m.value("rank", -1);
    if (r < 0 || r >= job.world_size) continue;
    Rank& rank = job.ranks[static_cast<size_t>(r)];
    rank.hostname = m.value("hostname", "");
    if (m.value("unreachable", nlohmann::json()).is_string()) {
      rank.unreachable = m["unreachable"].get<std::string>();
    } else {
      rank.target.kind = client::Target::Kind::kTcp;
      rank.target.host = reach(m.value("address", ""));
      rank.target.port = m.value("port", 0);
      rank.target.text = (rank.target.host.find(':') != std::string::npos ? "[" + rank.target.host + "]"
                                                                          : rank.target.host) +
                         ":" + std::to_string(rank.target.port);
      rank.reachable = !rank.target.host.empty() && rank.target.port > 0;
    }
    if (m.value("seen_s_ago", nlohmann::json()).is_number()) rank.seen_s_ago = m["seen_s_ago"].get<double>();
    rank.silent = m.value("silent", nlohmann::json()).is_boolean() && m["silent"].get<bool>();
    if (m.value("pid", 0L) > 0 && (rank.target.host.empty() || loopback(rank.target.host))) {
      rank.local_pid = static_cast<pid_t>(m["pid"].get<long>());
    }
  }
  // This host's ranks are asked over their unix sockets: no token, no PROBING_PORT needed.
  // A rank's forked children (DataLoader workers) have its environment, and their own agents
  // under `probing launch`: a process whose parent is of the same rank is not the rank.
  auto same_rank = [&job](pid_t pid, int rank) {
    std::optional<JobInfo> info = job_of(pid);
    return info && info->in_job() && info->key() == job.key && info->rank == rank;
  };
  for (pid_t pid : args.tcp_only ? std::vector<pid_t>{} : client::list_local_agents()) {
    std::optional<JobInfo> info = job_of(pid);
    if (!info || !info->in_job() || info->key() != job.key || info->rank >= job.world_size) continue;
    const std::optional<ProcStat> stat = read_proc_stat(pid);
    const pid_t parent = stat ? static_cast<pid_t>(stat->number(4)) : 0;
    if (parent > 1 && same_rank(parent, info->rank)) continue;
    Rank& rank = job.ranks[static_cast<size_t>(info->rank)];
    rank.local_pid = pid;
    rank.target = client::Target{client::Target::Kind::kPid, pid, "", "", 0, std::to_string(pid)};
    rank.reachable = true;
    rank.unreachable.clear();
    if (rank.hostname.empty()) {
      char name[256] = {};
      ::gethostname(name, sizeof name - 1);
      rank.hostname = name;
    }
  }
  for (Rank& rank : job.ranks) {
    if (rank.reachable || !rank.unreachable.empty()) continue;
    rank.unreachable =
        job.registry.empty()
            ? "not on this host, and the job has no registry (start it with PROBING_PORT set: a base "
              "port, or 0 once its ranks make a torch.distributed process group)"
            : "never registered with the job's registry";
  }
  Result<std::vector<int>> asked = selected(job, args);
  if (!asked.is_ok()) return asked.status();
  job.asked = std::move(*asked);
  return job;
}

// Runs `one` for each of `ranks` on at most `max_threads` threads at once.
std::map<int, Answer> parallel_for(const std::vector<int>& ranks, int max_threads,
                                   const std::function<Answer(int rank)>& one) {
  std::map<int, Answer> answers;
  for (int r : ranks) answers[r];  // every key made here: the threads only assign
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto worker = [&] {
    for (size_t i = next++; i < ranks.size(); i = next++) {
      Answer a = one(ranks[i]);
      std::lock_guard lock(mu);
      answers[ranks[i]] = std::move(a);
    }
  };
  const size_t n = std::min<size_t>(ranks.size(), static_cast<size_t>(std::max(1, max_threads)));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  return answers;
}

// A failed answer's state and reason, from what failed.
void set_failure(Answer* a, const Rank& rank, const Status& st, bool connected) {
  a->reason = st.message();
  // "10.0.0.3:9001 asks for a token: ..." -> "asks for a token: ...", so that the ranks that
  // failed alike are listed together.
  if (a->reason.rfind(rank.target.text + " ", 0) == 0)
    a->reason = a->reason.substr(rank.target.text.size() + 1);
  if (rank.local_pid > 0 && client::process_exited(rank.local_pid, 0.2)) {
    a->state = "dead";
    a->reason = "process " + std::to_string(rank.local_pid) + " exited";
  } else if (st.code() == Code::kTimeout) {
    a->state = "not answering";
    a->reason = "no answer within the deadline (" + st.message() + ")";
  } else if (!connected && (st.code() == Code::kUnavailable || st.code() == Code::kNotFound)) {
    a->state = "dead";
  } else if (st.code() == Code::kPermissionDenied) {
    a->state = "refused";
  } else {
    a->state = "error";
  }
}

using Ask = std::function<Result<nlohmann::json>(client::Client&, double timeout_s)>;

// Asks every rank in `ranks` at once, at most `max_connections` at a time, all within the deadline.
std::map<int, Answer> fan_out(const Context& ctx, const Job& job, const std::vector<int>& ranks,
                              const ClusterArgs& args, const Deadline& deadline, const Ask& ask) {
  return parallel_for(ranks, args.max_connections, [&](int r) {
    const Rank& rank = job.ranks[static_cast<size_t>(r)];
    Answer a;
    if (!rank.reachable) {
      a.state = "unreachable";
      a.reason = rank.unreachable;
      return a;
    }
    a.sent = monotonic_s();
    Result<std::unique_ptr<client::Client>> c =
        client::Client::connect(rank.target, deadline.left(), options_for(rank.target, ctx));
    Result<nlohmann::json> j = c.is_ok() ? ask(**c, deadline.left()) : Result<nlohmann::json>(c.status());
    a.received = monotonic_s();
    if (j.is_ok()) {
      a.ok = true;
      a.json = std::move(*j);
    } else {
      set_failure(&a, rank, j.status(), c.is_ok());
    }
    return a;
  });
}

// "8/8 ranks answered" or "7/8 ranks answered; rank 3 dead: process 1234 exited".
std::string coverage(const std::map<int, Answer>& answers) {
  size_t ok = 0;
  std::map<std::string, std::vector<int>> failures;  // "state: reason" -> ranks
  for (const auto& entry : answers) {
    if (entry.second.ok) {
      ++ok;
    } else {
      failures[entry.second.state + ": " + entry.second.reason].push_back(entry.first);
    }
  }
  std::string out = std::to_string(ok) + "/" + std::to_string(answers.size()) + " ranks answered";
  for (const auto& [what, ranks] : failures) out += "\n  " + ranks_phrase(ranks) + " " + what;
  return out;
}

// {"answered": N, "asked": M, "failed": {"3": {"state", "reason"}}}.
nlohmann::json coverage_json(const std::map<int, Answer>& answers) {
  nlohmann::json failed = nlohmann::json::object();
  size_t ok = 0;
  for (const auto& entry : answers) {
    if (entry.second.ok) {
      ++ok;
    } else {
      failed[std::to_string(entry.first)] = {{"state", entry.second.state}, {"reason", entry.second.reason}};
    }
  }
  return {{"answered", ok}, {"asked", answers.size()}, {"failed", std::move(failed)}};
}

std::string age(double seconds) {
  if (seconds < 0) return "";
  char buf[32];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs ago", seconds);
  } else if (seconds < 3600) {
    std::snprintf(buf, sizeof buf, "%.0fm ago", seconds / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fh ago", seconds / 3600);
  }
  return buf;
}

void print_reply(const nlohmann::json& reply, const std::string& format) {
  if (format == "json") {
    std::cout << format_json(reply);
  } else if (format == "csv") {
    std::cout << format_csv(reply);
  } else {
    std::cout << format_table(reply, terminal_width());
  }
  std::cout << std::flush;
}

// ---- nodes ----

// What a command shows: its result, the notes, and how many ranks answered (as text and as data).
struct Reply {
  nlohmann::json body;
  std::vector<std::string> notes;
  std::map<int, Answer> answers;
};

void print_notes(const Reply& reply) {
  for (const std::string& note : reply.notes) std::cerr << "probing: note: " << note << "\n";
  std::cerr << coverage(reply.answers) << "\n";
}

Result<Reply> nodes_reply(const Context& ctx, const ClusterArgs& args) {
  Deadline deadline(args.timeout_s);
  Result<Job> job = discover(ctx, args, deadline);
  if (!job.is_ok()) return job.status();
  const std::vector<int>& ranks = job->asked;
  const double now = unix_now_s();
  std::map<int, Answer> answers =
      fan_out(ctx, *job, ranks, args, deadline, [](client::Client& c, double timeout) {
        Result<nlohmann::json> health =
            agent_json(c, "GET", "/health", "", timeout, "an agent too old to say");
        if (!health.is_ok()) return health;
        const nlohmann::json body = {{"sql", "SELECT max(step), max(time) FROM python.torch_trace"}};
        Result<nlohmann::json> steps = agent_json(c, "POST", "/query", body.dump(), timeout, "");
        nlohmann::json out = *health;
        if (steps.is_ok() && !steps->value("rows", nlohmann::json::array()).empty())
          out["steps"] = (*steps)["rows"][0];
        return Result<nlohmann::json>(out);
      });
  nlohmann::json table = {
      {"columns", {"rank", "host", "address", "pid", "state", "step", "last_step", "seen"}},
      {"rows", nlohmann::json::array()}};
  for (int r : ranks) {
    const Rank& rank = job->ranks[static_cast<size_t>(r)];
    const Answer& a = answers[r];
    nlohmann::json step = nullptr, last = nullptr,
                   pid = rank.local_pid > 0 ? nlohmann::json(rank.local_pid) : nullptr;
    std::string state = a.ok ? "running" : a.state;
    if (a.ok) {
      pid = a.json.value("pid", nlohmann::json());
      const nlohmann::json s = a.json.value("steps", nlohmann::json::array());
      if (s.is_array() && s.size() == 2) {
        step = s[0];
        if (s[1].is_number()) last = age(std::max(0.0, now - s[1].get<double>()));
      }
    } else if (rank.silent && a.state != "dead") {
      state = "silent";
    }
    std::string seen = a.ok ? "now" : age(rank.seen_s_ago);
    const std::string address = rank.target.kind == client::Target::Kind::kTcp ? rank.target.text
                                : rank.reachable                               ? "unix"
                                                                               : "";
    table["rows"].push_back({r, rank.hostname, address.empty() ? nlohmann::json() : nlohmann::json(address),
                             pid, state, step, last, seen.empty() ? nlohmann::json() : nlohmann::json(seen)});
  }
  return Reply{std::move(table), job->notes, std::move(answers)};
}

int run_nodes(const Context& ctx, const ClusterArgs& args) {
  Result<Reply> reply = nodes_reply(ctx, args);
  if (!reply.is_ok()) return fail(reply.status());
  print_reply(reply->body, args.format);
  print_notes(*reply);
  return kExitOk;
}

// ---- query ----

Result<nlohmann::json> query_on(client::Client& c, const std::string& sql, double timeout) {
  return agent_json(c, "POST", "/query", nlohmann::json({{"sql", sql}}).dump(), timeout, "");
}

// Notices of every rank, one line each, the ranks that said the same together.
std::vector<std::string> rank_notices(const std::map<int, Answer>& answers) {
  std::map<std::string, std::vector<int>> by_text;
  for (const auto& entry : answers) {
    if (!entry.second.ok) continue;
    for (const nlohmann::json& n : entry.second.json.value("notices", nlohmann::json::array())) {
      if (n.is_string()) by_text[n.get<std::string>()].push_back(entry.first);
    }
  }
  std::vector<std::string> out;
  for (const auto& [text, ranks] : by_text) out.push_back(ranks_phrase(ranks) + ": " + text);
  return out;
}

// The statement run here over the rows every rank sends (its groups span ranks).
Result<nlohmann::json> query_here(const Context& ctx, const Job& job, const std::vector<int>& ranks,
                                  const ClusterArgs& args, const Deadline& deadline, const QueryPlan& plan,
                                  std::map<int, Answer>* answers, std::vector<std::string>* notes) {
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> catalog;
  std::map<std::string, std::vector<std::string>> reads;
  // The tables the statement names, and their columns, from the first rank that answers.
  for (int round = 0; round < 8; ++round) {
    std::vector<std::string> missing;
    Result<std::map<std::string, std::vector<std::string>>> r = columns_read(args.sql, catalog, &missing);
    if (!r.is_ok()) return r.status();
    if (missing.empty()) {
      reads = *r;
      break;
    }
    const std::string name = missing.front();
    const size_t dot = name.find('.');
    std::string where = dot == std::string::npos ? "table_name = '" + name + "'"
                                                 : "table_schema = '" + name.substr(0, dot) +
                                                       "' AND table_name = '" + name.substr(dot + 1) + "'";
    if (name.find('\'') != std::string::npos) return Status(Code::kInvalidArgument, "no such table: " + name);
    const std::string sql =
        "SELECT table_schema, table_name, column_name, type FROM information_schema.columns WHERE " + where +
        " ORDER BY table_schema, position";
    nlohmann::json columns;
    for (int rank : ranks) {
      if (!job.ranks[static_cast<size_t>(rank)].reachable) continue;
      std::map<int, Answer> one = fan_out(ctx, job, {rank}, args, deadline,
                                          [&](client::Client& c, double t) { return query_on(c, sql, t); });
      if (one[rank].ok) {
        columns = one[rank].json;
        break;
      }
    }
    if (columns.is_null()) return Status(Code::kUnavailable, "no rank answered to describe " + name);
    std::string schema;
    for (const nlohmann::json& row : columns.value("rows", nlohmann::json::array())) {
      if (schema.empty()) schema = row[0].get<std::string>();
      if (row[0].get<std::string>() != schema) continue;  // an unqualified name: the first schema has it
      catalog[schema + "." + row[1].get<std::string>()].emplace_back(row[2].get<std::string>(),
                                                                     row[3].get<std::string>());
    }
    if (schema.empty()) return Status(Code::kInvalidArgument, "no such table: " + name);
  }
  // Each rank sends the rows of every table read, with only the columns read, filtered by the
  // statement's WHERE when it reads one table.
  std::map<std::string, std::vector<nlohmann::json>> tables;
  for (const auto& [name, columns] : reads) {
    if (catalog.find(name) == catalog.end()) continue;
    std::string select;
    for (const std::string& c : columns) {
      if (c == "_rank" || c == "_host") continue;
      select += "\"" + c + "\", ";
    }
    const std::string plain = "SELECT " + select + "_rank, _host FROM " + name;
    const std::string pushed = reads.size() == 1 && !plan.from_where.empty()
                                   ? "SELECT " + select + "_rank, _host " + plan.from_where
                                   : "";
    std::map<int, Answer> got = fan_out(ctx, job, ranks, args, deadline, [&](client::Client& c, double t) {
      if (!pushed.empty()) {
        Result<nlohmann::json> r = query_on(c, pushed, t);
        if (r.is_ok() || r.status().code() != Code::kUnavailable) return r;  // else: the WHERE names an alias
      }
      return query_on(c, plain, t);
    });
    for (auto& entry : got) {
      if (entry.second.ok) tables[name].push_back(entry.second.json);
      Answer& a = (*answers)[entry.first];
      if (a.state.empty() || a.ok) a = entry.second;  // the first failure of a rank stays
    }
  }
  if (reads.empty()) {  // reads no table: each rank answers the same; ask them anyway for coverage
    *answers = fan_out(ctx, job, ranks, args, deadline,
                       [](client::Client& c, double t) { return query_on(c, "SELECT 1", t); });
  }
  for (const std::string& n : rank_notices(*answers))
    notes->push_back(n + " (the answer is over those rows)");
  return run_over_rows(args.sql, catalog, tables);
}

// The result of args.sql over the job; `how` says where it ran.
Result<Reply> query_reply(const Context& ctx, const ClusterArgs& args, std::string* how) {
  if (args.sql.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Status(Code::kInvalidArgument, "nothing to run: give SQL");
  }
  Deadline deadline(args.timeout_s);
  Result<Job> job = discover(ctx, args, deadline);
  if (!job.is_ok()) return job.status();
  const std::vector<int>& ranks = job->asked;
  QueryPlan plan = plan_query(args.sql);
  std::vector<std::string> notes = job->notes;
  std::map<int, Answer> answers;
  Result<nlohmann::json> result = Status(Code::kInternal, "not run");
  if (plan.per_rank) {
    answers = fan_out(ctx, *job, ranks, args, deadline,
                      [&](client::Client& c, double t) { return query_on(c, args.sql, t); });
    std::vector<RankResult> results;
    std::string first_error;
    for (const auto& [r, a] : answers) {
      if (a.ok) {
        results.push_back({r, job->ranks[static_cast<size_t>(r)].hostname, a.json});
      } else if (a.state == "error" && first_error.empty()) {
        first_error = a.reason;
      }
    }
    if (results.empty() && !first_error.empty()) {  // the SQL is wrong everywhere
      return Status(Code::kInternal, first_error);  // the ranks' own error (exit 1, as `query`'s)
    }
    result = merge_per_rank(results, plan.tail);
    if (!result.is_ok()) {  // the ORDER BY names what the result lacks: run it here instead
      plan.per_rank = false;
      plan.why = "its ORDER BY needs more than the result's columns";
    } else {
      for (const std::string& n : rank_notices(answers)) notes.push_back(n);
    }
  }
  if (!plan.per_rank) {
    answers.clear();
    result = query_here(ctx, *job, ranks, args, deadline, plan, &answers, &notes);
    if (!result.is_ok()) return result.status();
  }
  *how = plan.per_rank ? "ran on each rank, merged here"
                       : "ran here over the rows the ranks sent, because " + plan.why;
  return Reply{std::move(*result), std::move(notes), std::move(answers)};
}

int run_cluster_query(const Context& ctx, ClusterArgs args) {
  if (args.sql == "-") {
    std::ostringstream text;
    text << std::cin.rdbuf();
    args.sql = text.str();
  }
  std::string how;
  Result<Reply> reply = query_reply(ctx, args, &how);
  if (!reply.is_ok()) return fail(reply.status());
  if (args.explain) std::cerr << "probing: " << how << "\n";
  print_reply(reply->body, args.format);
  print_notes(*reply);
  return kExitOk;
}

// ---- backtrace ----

std::string frame_line(const nlohmann::json& f) {
  std::string out = f.value("func", std::string("??")) + " (" + f.value("file", std::string("?"));
  if (f.contains("lineno") && f["lineno"].is_number()) out += ":" + f["lineno"].dump();
  return out + ")";
}

// {answered, asked, failed, window_ms, groups: [{ranks, thread}]}, the largest group first.
Result<Reply> backtrace_reply(const Context& ctx, const ClusterArgs& args) {
  Deadline deadline(args.timeout_s);
  Result<Job> job = discover(ctx, args, deadline);
  if (!job.is_ok()) return job.status();
  const std::vector<int>& ranks = job->asked;
  const std::string path = args.all_threads ? "/backtrace?all=1" : "/backtrace";
  std::vector<int> here, elsewhere;  // --native: this host's ranks are read from outside
  for (int r : ranks)
    (args.native && job->ranks[static_cast<size_t>(r)].local_pid > 0 ? here : elsewhere).push_back(r);
  std::map<int, Answer> answers =
      fan_out(ctx, *job, elsewhere, args, deadline,
              [&](client::Client& c, double t) { return agent_json(c, "GET", path, "", t, ""); });
  if (args.native && !elsewhere.empty()) {
    job->notes.push_back(
        ranks_phrase(elsewhere) + (elsewhere.size() == 1 ? " is" : " are") +
        " not on this host: Python frames only (--native reads this host's ranks, with ptrace)");
  }
  // ptrace stops each thread for a few ms; a few ranks at a time.
  for (auto& entry : parallel_for(here, std::min(args.max_connections, 8), [&](int r) {
         const Rank& rank = job->ranks[static_cast<size_t>(r)];
         Context one = ctx;
         one.target = std::to_string(rank.local_pid);
         Answer a;
         a.sent = monotonic_s();
         Result<nlohmann::json> j = native_backtrace(one, rank.local_pid, args.all_threads);
         a.received = monotonic_s();
         if (j.is_ok()) {
           a.ok = true;
           a.json = std::move(*j);
         } else {
           set_failure(&a, rank, j.status(), true);
         }
         return a;
       })) {
    answers[entry.first] = std::move(entry.second);
  }
  // Group: per thread (the main thread, or every thread by name with --all-threads), ranks whose
  // stacks match.
  struct Group {
    std::vector<int> ranks;
    nlohmann::json thread;  // the first rank's
  };
  std::map<std::string, Group> groups;
  double first_sent = 0, last_received = 0;
  for (const auto& [r, a] : answers) {
    if (!a.ok) continue;
    first_sent = first_sent == 0 ? a.sent : std::min(first_sent, a.sent);
    last_received = std::max(last_received, a.received);
    for (const nlohmann::json& t : a.json.value("threads", nlohmann::json::array())) {
      if (!args.all_threads && !t.value("is_main", false)) continue;
      const std::string key = t.value("name", std::string("?")) + "\n" +
                              stack_key(t.value("frames", nlohmann::json()), args.exact);
      Group& g = groups[key];
      if (g.ranks.empty()) g.thread = t;
      g.ranks.push_back(r);
    }
  }
  std::vector<const Group*> order;
  for (const auto& entry : groups) order.push_back(&entry.second);
  std::stable_sort(order.begin(), order.end(), [](const Group* a, const Group* b) {
    if (a->ranks.size() != b->ranks.size()) return a->ranks.size() > b->ranks.size();
    return a->ranks.front() < b->ranks.front();
  });
  size_t answered = 0;
  for (const auto& entry : answers) answered += entry.second.ok ? 1 : 0;
  nlohmann::json out = coverage_json(answers);
  out["window_ms"] = answered ? nlohmann::json((last_received - first_sent) * 1000) : nlohmann::json(nullptr);
  out["groups"] = nlohmann::json::array();
  for (const Group* g : order) out["groups"].push_back({{"ranks", g->ranks}, {"thread", g->thread}});
  return Reply{std::move(out), job->notes, std::move(answers)};
}

int run_cluster_backtrace(const Context& ctx, const ClusterArgs& args) {
  Result<Reply> reply = backtrace_reply(ctx, args);
  if (!reply.is_ok()) return fail(reply.status());
  const nlohmann::json& out = reply->body;
  const size_t answered = out["answered"].get<size_t>();
  if (args.json) {
    std::cout << out.dump(2) << "\n" << std::flush;
    std::cerr << coverage(reply->answers) << "\n";
    return answered > 0 ? kExitOk : kExitFailed;
  }
  char spread[64];
  std::snprintf(spread, sizeof spread, "%.0f ms", answered ? out["window_ms"].get<double>() : 0.0);
  std::cout << "stacks of " << answered << " ranks, read within " << (answered ? spread : "-")
            << (args.exact ? "" : "; grouped by function and file (--exact: and line)") << "\n";
  for (const nlohmann::json& g : out["groups"]) {
    const std::vector<int> ranks = g["ranks"].get<std::vector<int>>();
    const nlohmann::json& thread = g["thread"];
    std::cout << "\n"
              << ranks_phrase(ranks) << " (" << ranks.size() << "): thread \""
              << thread.value("name", std::string("?")) << "\"";
    if (thread.value("state", nlohmann::json()).is_string())
      std::cout << ", " << thread["state"].get<std::string>();
    std::cout << "\n";
    for (const nlohmann::json& f : thread.value("frames", nlohmann::json::array())) {
      std::cout << "  " << frame_line(f) << "\n";
    }
  }
  std::cout << std::flush;
  print_notes(*reply);
  return answered > 0 ? kExitOk : kExitFailed;
}

// Prints each distinct answer once, with the ranks that gave it, the lowest rank's first.
void print_grouped(const std::map<int, Answer>& answers,
                   const std::function<std::string(const nlohmann::json&)>& text) {
  std::map<std::string, std::vector<int>> groups;
  for (const auto& [r, a] : answers) {
    if (a.ok) groups[text(a.json)].push_back(r);
  }
  std::vector<std::pair<std::string, std::vector<int>>> order(groups.begin(), groups.end());
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.second.front() < b.second.front(); });
  for (const auto& [t, rs] : order) std::cout << "== " << ranks_phrase(rs) << " (" << rs.size() << ")\n" << t;
  std::cout << std::flush;
}

// ---- eval ----

int run_cluster_eval(const Context& ctx, const ClusterArgs& args) {
  Deadline deadline(args.timeout_s);
  Result<Job> job = discover(ctx, args, deadline);
  if (!job.is_ok()) return fail(job.status());
  const std::vector<int>& ranks = job->asked;
  const nlohmann::json body = {{"code", args.code}, {"timeout", std::max(0.1, args.timeout_s - 0.5)}};
  std::map<int, Answer> answers = fan_out(ctx, *job, ranks, args, deadline, [&](client::Client& c, double t) {
    return agent_json(c, "POST", "/eval", body.dump(), t, "");
  });
  if (args.json) {
    nlohmann::json out = coverage_json(answers);
    out["results"] = nlohmann::json::object();
    bool any_raised = false;
    for (const auto& [r, a] : answers) {
      if (!a.ok) continue;
      out["results"][std::to_string(r)] = a.json;
      any_raised = any_raised || !a.json.value("exception", nlohmann::json()).is_null();
    }
    std::cout << out.dump(2) << "\n" << std::flush;
    std::cerr << coverage(answers) << "\n";
    return out["results"].empty() || any_raised ? kExitFailed : kExitOk;
  }
  // Ranks that printed the same are shown once.
  bool raised = false;
  print_grouped(answers, [&raised](const nlohmann::json& j) {
    std::string text = j.value("output", std::string());
    if (j.value("value", nlohmann::json()).is_string()) text += j["value"].get<std::string>() + "\n";
    const nlohmann::json& e = j.value("exception", nlohmann::json());
    if (!e.is_null()) {
      raised = true;
      text += e.is_object() ? e.value("traceback", e.value("message", e.dump())) : e.dump();
      if (!text.empty() && text.back() != '\n') text += "\n";
    }
    return text;
  });
  const bool any = std::any_of(answers.begin(), answers.end(), [](const auto& a) { return a.second.ok; });
  for (const std::string& note : job->notes) std::cerr << "probing: note: " << note << "\n";
  std::cerr << coverage(answers) << "\n";
  return !any || raised ? kExitFailed : kExitOk;
}

// ---- probe ----

std::string probe_line(const nlohmann::json& p) {
  const std::string state = p.value("state", std::string());
  const std::string where =
      p.contains("file") && p["file"].is_string()
          ? " at " + p["file"].get<std::string>() + ":" + p.value("line", nlohmann::json()).dump() + " (" +
                p.value("function", std::string()) + ", " + p.value("event", std::string()) + ")"
          : " (" + p.value("spec", std::string()) + ")";  // a catch: no place
  return "probe " + p.value("id", nlohmann::json()).dump() + where + ": " + state +
         (state.rfind("done", 0) == 0 ? "" : ", " + p.value("hits", nlohmann::json(0)).dump() + " hits") +
         "\n";
}

int run_cluster_probe(const Context& ctx, const ClusterArgs& args, const std::string& action) {
  nlohmann::json body;
  if (action == "add") {
    body = {{"action", "add"},         {"where", args.probe_where}, {"capture", args.probe_capture},
            {"when", args.probe_when}, {"limit", args.probe_limit}, {"expire_s", args.probe_expire_s}};
  } else if (action == "remove") {
    Result<long long> id = probe_id_arg(args.probe_id);
    if (!id.is_ok()) return fail(id.status());
    body = {{"action", "remove"}, {"id", *id}};
  }
  Deadline deadline(args.timeout_s);
  Result<Job> job = discover(ctx, args, deadline);
  if (!job.is_ok()) return fail(job.status());
  std::map<int, Answer> answers =
      fan_out(ctx, *job, job->asked, args, deadline, [&](client::Client& c, double t) {
        return action == "list" ? agent_json(c, "GET", "/probes", "", t, "")
                                : agent_json(c, "POST", "/probes", body.dump(), t, "");
      });
  if (args.json) {
    nlohmann::json out = coverage_json(answers);
    out["results"] = nlohmann::json::object();
    for (const auto& [r, a] : answers) {
      if (a.ok) out["results"][std::to_string(r)] = a.json;
    }
    std::cout << out.dump(2) << "\n" << std::flush;
  } else {
    print_grouped(answers, [&action](const nlohmann::json& j) {
      std::string text;
      if (action == "add") return probe_line(j.value("probe", nlohmann::json::object()));
      for (const nlohmann::json& p :
           j.value(action == "list" ? "probes" : "removed", nlohmann::json::array())) {
        text += (action == "remove" ? "removed " : "") + probe_line(p);
      }
      return text.empty() ? std::string("no probes\n") : text;
    });
  }
  for (const std::string& note : job->notes) std::cerr << "probing: note: " << note << "\n";
  std::cerr << coverage(answers) << "\n";
  const bool all = std::all_of(answers.begin(), answers.end(), [](const auto& a) { return a.second.ok; });
  return all ? kExitOk : kExitFailed;
}

}  // namespace

Result<nlohmann::json> cluster_for_page(const Context& ctx, const std::string& what,
                                        const nlohmann::json& params) {
  ClusterArgs args;
  args.timeout_s = 10;
  Result<Reply> reply = Status(Code::kNotFound, "no such view of the job: " + what);
  std::string how;
  if (what == "nodes") {
    reply = nodes_reply(ctx, args);
  } else if (what == "backtrace") {
    args.exact = params.value("exact", false);
    reply = backtrace_reply(ctx, args);
  } else if (what == "query") {
    args.sql = params.value("sql", std::string());
    reply = query_reply(ctx, args, &how);
  }
  if (!reply.is_ok()) return reply.status();
  nlohmann::json out = coverage_json(reply->answers);
  out["result"] = std::move(reply->body);
  out["notes"] = reply->notes;
  out["coverage"] = coverage(reply->answers);
  if (!how.empty()) out["how"] = how;
  return out;
}

void add_cluster_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ClusterArgs>();
  CLI::App* cmd = app.add_subcommand(
      "cluster",
      "Every rank of a distributed job at once. TARGET is any one rank (a pid on this host, or\n"
      "HOST:PORT of its agent); it leads to the others: the ranks of this host by their environment,\n"
      "the rest through the job's registry (rank 0's agent, when the job runs with PROBING_PORT: at\n"
      "MASTER_ADDR and the base port, or found in the job's torch.distributed store).");
  cmd->require_subcommand(1);
  cmd->footer(
      "Every answer ends, on standard error, with how many ranks answered and why the others did not.\n"
      "Examples:\n"
      "  probing cluster -t 4242 nodes\n"
      "  probing cluster -t 4242 backtrace                   # which rank is not where the others are\n"
      "  PROBING_TOKEN=... probing cluster -t trainer-0:9000 query \"SELECT _rank, max(step) FROM "
      "python.torch_trace\n"
      "      GROUP BY _rank\"\n"
      "  probing cluster -t 4242 eval --ranks 0,3 \"print(trainer.step)\"\n"
      "docs/cluster.md says how ranks are found and how answers are merged.");
  auto common = [args](CLI::App* sub) {
    sub->add_option("--timeout", args->timeout_s,
                    "seconds for the whole command: ranks not answered by then are "
                    "reported as not answering")
        ->default_val(10)
        ->check(CLI::PositiveNumber);
    sub->add_option("--ranks", args->ranks, "only these ranks: 0,3,5-7");
    sub->add_option("--max-connections", args->max_connections, "ranks asked at once")
        ->default_val(64)
        ->check(CLI::Range(1, 4096));
    sub->add_flag("--tcp", args->tcp_only,
                  "ask this host's ranks over TCP too, at their registered addresses (by default they are "
                  "asked over their unix sockets)");
  };
  CLI::App* nodes = cmd->add_subcommand(
      "nodes",
      "Every rank: host, address (HOST:PORT, or unix for this host's), pid, state (running, not\n"
      "answering, dead, silent, unreachable, refused), last step, when last heard from.");
  common(nodes);
  nodes->add_option("--format", args->format, "table, json or csv")
      ->default_val("table")
      ->check(CLI::IsMember({"table", "json", "csv"}));
  on_run(nodes, [&ctx, args] { return run_nodes(ctx, *args); });

  CLI::App* query = cmd->add_subcommand(
      "query",
      "SQL on every rank, as one answer with _rank and _host columns. A statement that aggregates\n"
      "only within ranks (GROUP BY _rank, or no aggregate) runs on each rank and the rows are merged;\n"
      "one whose groups span ranks runs here over the rows the ranks send.");
  common(query);
  query->add_option("sql", args->sql, "the SQL; - reads it from standard input")->required();
  query->add_option("--format", args->format, "table, json or csv")
      ->default_val("table")
      ->check(CLI::IsMember({"table", "json", "csv"}));
  query->add_flag("--explain", args->explain, "say on standard error where the statement ran, and why");
  query->footer(
      "Examples:\n"
      "  probing cluster -t 4242 query \"SELECT _rank, max(step) FROM python.torch_trace GROUP BY _rank\"\n"
      "  probing cluster -t host:9000 query \"SELECT _rank, avg(duration) FROM python.torch_trace\n"
      "      WHERE stage = 'step' GROUP BY _rank ORDER BY 2 DESC LIMIT 3\"     # the stragglers\n"
      "  probing cluster -t 4242 query \"SELECT module, median(duration) FROM python.torch_trace GROUP BY "
      "module\"");
  on_run(query, [&ctx, args] { return run_cluster_query(ctx, *args); });

  CLI::App* backtrace = cmd->add_subcommand(
      "backtrace",
      "Every rank's main thread stack, ranks whose stacks match grouped, the largest group first:\n"
      "the rank that differs stands out.");
  common(backtrace);
  backtrace->add_flag("--exact", args->exact, "group by line numbers too (by default: function and file)");
  backtrace->add_flag("--all-threads", args->all_threads, "every thread, grouped by its name and stack");
  backtrace->add_flag("--native", args->native,
                      "native (C/C++) frames too, for the ranks on this host: read from outside with ptrace\n"
                      "(each thread stopped a few ms), grouped by function and library");
  backtrace->add_flag("--json", args->json,
                      "the groups as JSON: {answered, asked, failed, window_ms, groups: [{ranks, thread}]}");
  on_run(backtrace, [&ctx, args] { return run_cluster_backtrace(ctx, *args); });

  CLI::App* eval =
      cmd->add_subcommand("eval",
                          "Run Python on every rank (or --ranks); ranks that print the same are shown\n"
                          "once. Needs the full right on each.");
  common(eval);
  eval->add_option("code", args->code, "the code")->required();
  eval->add_flag(
      "--json", args->json,
      "every rank's reply as JSON: {answered, asked, failed, results: {RANK: {output, value, exception}}}");
  on_run(eval, [&ctx, args] { return run_cluster_eval(ctx, *args); });

  CLI::App* ui = cmd->add_subcommand(
      "ui",
      "The job's web page: served on 127.0.0.1 like `probing PID ui`, with a Cluster page that\n"
      "asks every rank (nodes, grouped stacks, per-rank step time); the other pages show the target rank.");
  auto ui_port = std::make_shared<int>(0);
  auto ui_read_only = std::make_shared<bool>(false);
  ui->add_option("--port", *ui_port, "the port to listen on (default: any free one)");
  ui->add_flag("--read-only", *ui_read_only, "the page may read only: no Eval page, no SET");
  on_run(ui,
         [&ctx, ui_port, ui_read_only] { return serve_ui(ctx, *ui_port, *ui_read_only, /*cluster=*/true); });

  CLI::App* probe = cmd->add_subcommand(
      "probe", "Probes on every rank (or --ranks), as `probing PID probe` puts them on one: docs/probes.md.");
  probe->require_subcommand(1);
  CLI::App* add = probe->add_subcommand("add", "put the same probe on every rank; the full right on each");
  common(add);
  add->add_option("where", args->probe_where, "FILE:LINE, FILE:FUNCTION or FILE:FUNCTION:return")->required();
  add->add_option("--capture", args->probe_capture, "Python expressions to record at each hit");
  add->add_option("--when", args->probe_when, "record only when this Python expression is true");
  add->add_option("--limit", args->probe_limit, "end each rank's probe after this many hits")
      ->check(CLI::Range(0LL, 100000000LL));
  add->add_option("--expire", args->probe_expire_s, "end the probes after this many seconds")
      ->check(CLI::NonNegativeNumber);
  add->add_flag("--json", args->json, "every rank's answer as JSON");
  on_run(add, [&ctx, args] { return run_cluster_probe(ctx, *args, "add"); });
  CLI::App* list = probe->add_subcommand("list", "every rank's probes, ranks with the same shown once");
  common(list);
  list->add_flag("--json", args->json, "every rank's answer as JSON");
  on_run(list, [&ctx, args] { return run_cluster_probe(ctx, *args, "list"); });
  CLI::App* remove = probe->add_subcommand("remove", "remove a probe (by id) or all, on every rank");
  common(remove);
  remove->add_option("id", args->probe_id, "the probe's id, or all")->required();
  remove->add_flag("--json", args->json, "every rank's answer as JSON");
  on_run(remove, [&ctx, args] { return run_cluster_probe(ctx, *args, "remove"); });
  probe->footer(
      "Examples:\n"
      "  probing cluster -t 4242 probe add train.py:88 --capture \"loss.item()\" --when \"step % 100 == 0\"\n"
      "  probing cluster -t 4242 query \"SELECT _rank, captured FROM python.probe_hits WHERE probe_id = 1\"\n"
      "  probing cluster -t 4242 probe remove all");
}

}  // namespace probing::cli
