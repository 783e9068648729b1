// Which distributed job a process belongs to, from the launcher's environment: torchrun,
// torch.distributed.launch, and anything else that sets RANK and WORLD_SIZE for each rank.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

namespace probing {

struct JobInfo {
  int rank = -1;  // RANK; -1 outside a job
  int world_size = 0;
  int local_rank = -1;  // LOCAL_RANK, else -1
  int local_world_size = 0;
  int group_rank = -1;      // GROUP_RANK: the node's index (torchrun)
  std::string master_addr;  // MASTER_ADDR
  int master_port = 0;      // MASTER_PORT
  std::string run_id;       // TORCHELASTIC_RUN_ID

  bool in_job() const { return rank >= 0 && world_size > 0; }
  // What every rank of one job shares and no other job has: the rendezvous address and the run.
  std::string key() const;
  // The rank's offset from a base port, so that the ranks on one host do not collide:
  // LOCAL_RANK, else RANK modulo LOCAL_WORLD_SIZE, else RANK.
  int port_offset() const;
};

// From an environment block as /proc/PID/environ holds it (NAME=value\0...).
JobInfo parse_job(const std::string& environ_block);

// This process's job, from the environment it started with (/proc/self/environ: getenv() could
// race the program's own setenv()). Read once.
const JobInfo& this_job();

// Another local process's job; nullopt when its environment cannot be read (gone, or not ours).
std::optional<JobInfo> job_of(pid_t pid);

// Whether this process is a launcher of ranks (torchrun or a wrapper named torchrun*, python -m
// torch.distributed.run or .launch) rather than a rank: its command line names one and RANK is
// not set.
bool is_rank_launcher(const std::string& cmdline_block, const JobInfo& job);

}  // namespace probing
