// Reading /proc: whole small files, and the stat line of a process or thread (proc(5)). Plain
// read(2) underneath: a process that exits while it is read gives a short or empty text, never an
// exception (libstdc++'s filebuf throws from its iterators when read fails with ESRCH).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace probing {

// The first `max_bytes` of the file at `path`; empty when it cannot be opened or read.
std::string read_proc_file(const std::string& path, size_t max_bytes = 4 << 20) noexcept;

// One /proc/PID/stat (or /proc/PID/task/TID/stat) line.
struct ProcStat {
  std::string comm;                 // field 2, without its parentheses (it may hold both, and spaces)
  std::vector<std::string> fields;  // fields 3 onwards: fields[0] is field 3 (state)

  // Field `n` in proc(5) numbering (n >= 3); "" when the line is shorter.
  std::string field(int n) const;
  double number(int n) const;
  char state() const { return fields.empty() || fields[0].empty() ? '\0' : fields[0][0]; }
  unsigned long flags() const;  // field 9, the kernel's PF_* flags of the task
};

// Parses a stat line; nullopt when it has no "(comm)".
std::optional<ProcStat> parse_proc_stat(const std::string& text);

// /proc/PID/stat, or /proc/PID/task/TID/stat when tid > 0; nullopt when the process is gone.
std::optional<ProcStat> read_proc_stat(pid_t pid, pid_t tid = 0);

// What a thread is doing, from its stat and syscall files: "running", "sleeping in
// clock_nanosleep", "waiting on the disk in read", "stopped", "traced", "exited"... "" when the
// thread cannot be read. pid 0 is this process.
std::string thread_activity(pid_t pid, pid_t tid);

// The pid process `pid` (a pid of our namespace) has in its own pid namespace: the last number of
// its NSpid line. A process in a container sees itself as 1, or 7: its agent names its socket
// and files by that number. With `tid`, the same for that thread of it (the tids CPython keeps).
// `pid` (`tid`) itself when NSpid is absent or unreadable.
pid_t pid_in_own_namespace(pid_t pid, pid_t tid = 0);

// The thread of `pid` whose tid in the process's own pid namespace is `own_tid`, as a tid of
// ours; 0 when there is none.
pid_t tid_from_own_namespace(pid_t pid, pid_t own_tid);

}  // namespace probing
