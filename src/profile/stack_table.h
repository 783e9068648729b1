// The stacks that samples point to, each kept once (python.stacks). A frame (function, file, line)
// is interned once, a stack is a sequence of frame ids interned once, so a sample costs a stack id.
// Bounded in bytes: past the cap a new stack gets kFull, and the table says so. Thread-safe: the
// sampler interns while queries read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace probing::profile {

struct Frame {
  std::string func;
  std::string file;
  int line = 0;
};

class StackTable {
 public:
  static constexpr uint32_t kFull = 0;  // "(stack table full)": every stack past the cap

  explicit StackTable(size_t max_bytes) : max_bytes_(max_bytes) {}

  // The id of a frame, kFull when the table is full.
  uint32_t intern_frame(std::string_view func, std::string_view file, int line);
  // The id of a stack of frame ids, innermost first; kFull when the table is full.
  uint32_t intern_stack(std::span<const uint32_t> frames);

  // The frames of stack `id`, innermost first (empty for an unknown id).
  std::vector<Frame> frames_of(uint32_t id) const;
  // Calls fn(stack_id, frames) for each stack in `ids` that exists, or for all when `ids` is empty.
  template <typename Fn>
  void for_each(std::span<const uint32_t> ids, Fn fn) const;

  size_t stacks() const;
  size_t bytes() const;
  bool full() const;

 private:
  std::vector<Frame> frames_of_locked(uint32_t id) const;

  const size_t max_bytes_;
  mutable std::mutex mu_;
  size_t bytes_ = 0;
  bool full_ = false;
  std::vector<Frame> frames_;                          // by frame id - 1
  std::unordered_map<std::string, uint32_t> frame_ids_;  // func \0 file \0 line -> id
  std::vector<uint32_t> stack_frames_;                 // every stack's frame ids, one after another
  std::vector<std::pair<uint32_t, uint32_t>> stacks_;  // by stack id - 1: (first, count) in stack_frames_
  std::unordered_map<std::string, uint32_t> stack_ids_;  // the frame ids' bytes -> id
};

template <typename Fn>
void StackTable::for_each(std::span<const uint32_t> ids, Fn fn) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (ids.empty()) {
    for (uint32_t id = 1; id <= stacks_.size(); ++id) fn(id, frames_of_locked(id));
    return;
  }
  for (uint32_t id : ids) {
    if (id >= 1 && id <= stacks_.size()) fn(id, frames_of_locked(id));
  }
}

}  // namespace probing::profile
