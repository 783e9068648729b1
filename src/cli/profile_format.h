// How `probing profile` and `probing top` write samples: pure functions of the agent's GET /profile
// reply (docs/profile.md), so the unit tests run them on made-up profiles.
//   folded      "thread;outer;...;inner count" lines, for flamegraph.pl, inferno and friends
//   speedscope  speedscope's file format, one sampled profile per thread
//   chrome      Chrome trace events (JSON), for Perfetto's UI and chrome://tracing: a slice per
//               frame for as long as consecutive samples had it on the stack
//   gecko       the Firefox Profiler's processed format (https://profiler.firefox.com), one
//               thread per thread, samples weighed in counts of the shortest interval
//   svg         a flamegraph in one SVG file, with zoom and search, using nothing from the network
//   top         the functions that took the most samples, as a table
#pragma once

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace probing::cli {

struct ProfileFrame {
  std::string func;
  std::string file;           // a native frame's: its library's name
  long long line = 0;         // 0 for a native frame
  std::string label() const;  // "func (file:line)", as py-spy writes frames; "func (libc.so.6)"
};

struct ProfileThread {
  long long id = 0;   // threading ident (after merge_profiles: a number of its own)
  long long tid = 0;  // kernel thread id, 0 when unknown
  std::string name;
  long long pid = 0;          // its process, when the profile holds several (merge_profiles)
  std::string process;        // "pid 4243 (fork of 4242)": put before the thread's label
  std::string label() const;  // "MainThread (tid 4242)"
};

struct ProfileSample {
  double time = 0;
  long long thread = 0;
  long long stack = 0;
  double weight = 0;  // seconds
};

struct Profile {
  double since = 0, until = 0;
  std::string mode;
  bool idle = false;
  double max_hz = 0;
  long long seen = 0, idle_left_out = 0, other_mode = 0;
  std::vector<ProfileThread> threads;
  std::map<long long, std::vector<ProfileFrame>> stacks;  // innermost first
  std::vector<ProfileSample> samples;                     // oldest first
  std::vector<std::string> notices;
  bool merge_threads = false;  // one tree for all threads (folded, svg, top)

  const ProfileThread* thread(long long id) const;
  // The samples' weights as whole counts of the shortest interval among them: a window that
  // holds recorder samples (10 Hz) and profile samples (100 Hz) is weighed by time, not count.
  std::vector<long long> counts() const;
};

// kInvalidArgument when the reply is not a GET /profile reply.
Result<Profile> parse_profile(const nlohmann::json& reply);

// One profile of several processes' (a DataLoader's workers beside the trainer): their threads
// numbered anew and labelled with their process, their stacks renumbered apart. Each part is
// (pid, how to name the process, its profile); the window and counts are the parts' together.
Profile merge_profiles(std::vector<std::tuple<long long, std::string, Profile>> parts);

// What consecutive samples of each thread had on its stack, as slices: a frame's slice lasts while
// its function stays on the stack; a gap in the samples ends them all. Innermost first per close.
struct StackSlice {
  long long thread;  // ProfileSample::thread
  double start, duration;
  size_t depth;  // 0 for the outermost frame
  const ProfileFrame* frame;
};
std::vector<StackSlice> stack_slices(const Profile& p);

std::string render_folded(const Profile& p);
std::string render_speedscope(const Profile& p, const std::string& name);
std::string render_chrome(const Profile& p, long long pid);
std::string render_gecko(const Profile& p, long long pid);
std::string render_svg(const Profile& p, const std::string& title);
// At most `rows` functions, cut to `width` columns when it is > 0.
std::string render_top(const Profile& p, size_t rows, int width);

// "svg", "speedscope", "chrome", "gecko", "folded", "top" from a --format value (perfetto: chrome,
// firefox: gecko) or, when it is empty, from the output file's name; kInvalidArgument for an
// unknown one.
Result<std::string> profile_format_for(const std::string& format, const std::string& path);

}  // namespace probing::cli
