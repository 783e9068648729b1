#include "core/job.h"

#include <cstdlib>
#include <string_view>

#include "core/proc_files.h"

namespace probing {
namespace {

// The integer value of a variable; `fallback` when absent or not a whole non-negative number.
int int_of(const std::map<std::string, std::string, std::less<>>& env, std::string_view name, int fallback) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return fallback;
  char* end = nullptr;
  long v = std::strtol(it->second.c_str(), &end, 10);
  return *end == '\0' && v >= 0 && v < (1L << 30) ? static_cast<int>(v) : fallback;
}

}  // namespace

std::string JobInfo::key() const {
  return master_addr + ":" + std::to_string(master_port) + "/" + run_id + "/" + std::to_string(world_size);
}

int JobInfo::port_offset() const {
  if (local_rank >= 0) return local_rank;
  if (local_world_size > 0) return rank % local_world_size;
  return rank < 0 ? 0 : rank;
}

JobInfo parse_job(const std::string& block) {
  std::map<std::string, std::string, std::less<>> env;
  for (size_t at = 0; at < block.size();) {
    size_t end = block.find('\0', at);
    if (end == std::string::npos) end = block.size();
    const std::string_view entry(block.data() + at, end - at);
    const size_t eq = entry.find('=');
    if (eq != std::string_view::npos) {
      const std::string_view name = entry.substr(0, eq);
      if (name == "RANK" || name == "WORLD_SIZE" || name == "LOCAL_RANK" || name == "LOCAL_WORLD_SIZE" ||
          name == "GROUP_RANK" || name == "MASTER_ADDR" || name == "MASTER_PORT" ||
          name == "TORCHELASTIC_RUN_ID") {
        env.emplace(std::string(name), std::string(entry.substr(eq + 1)));
      }
    }
    at = end + 1;
  }
  JobInfo job;
  job.rank = int_of(env, "RANK", -1);
  job.world_size = int_of(env, "WORLD_SIZE", 0);
  if (job.rank >= job.world_size) job.rank = -1;  // not a job's rank: a stray RANK
  job.local_rank = int_of(env, "LOCAL_RANK", -1);
  job.local_world_size = int_of(env, "LOCAL_WORLD_SIZE", 0);
  job.group_rank = int_of(env, "GROUP_RANK", -1);
  if (auto it = env.find("MASTER_ADDR"); it != env.end()) job.master_addr = it->second;
  job.master_port = int_of(env, "MASTER_PORT", 0);
  if (auto it = env.find("TORCHELASTIC_RUN_ID"); it != env.end()) job.run_id = it->second;
  return job;
}

const JobInfo& this_job() {
  // Never destroyed: agent threads may read it while the process exits.
  static const JobInfo* job = new JobInfo(parse_job(read_proc_file("/proc/self/environ", 1 << 20)));
  return *job;
}

std::optional<JobInfo> job_of(pid_t pid) {
  const std::string block = read_proc_file("/proc/" + std::to_string(pid) + "/environ", 1 << 20);
  if (block.empty()) return std::nullopt;
  return parse_job(block);
}

bool is_rank_launcher(const std::string& cmdline, const JobInfo& job) {
  if (job.in_job()) return false;
  for (size_t at = 0; at < cmdline.size();) {
    size_t end = cmdline.find('\0', at);
    if (end == std::string::npos) end = cmdline.size();
    const std::string_view arg(cmdline.data() + at, end - at);
    const size_t slash = arg.rfind('/');
    const std::string_view base = slash == std::string_view::npos ? arg : arg.substr(slash + 1);
    // torchrun (or a wrapper named so: torchrun.py), python -m torch.distributed.run or .launch,
    // or their files.
    if (base.rfind("torchrun", 0) == 0 || arg == "torch.distributed.run" ||
        arg == "torch.distributed.launch" || arg.find("torch/distributed/run.py") != std::string_view::npos ||
        arg.find("torch/distributed/launch.py") != std::string_view::npos) {
      return true;
    }
    at = end + 1;
  }
  return false;
}

}  // namespace probing
