#include "profile/stack_table.h"

#include <cstring>

namespace probing::profile {

uint32_t StackTable::intern_frame(std::string_view func, std::string_view file, int line) {
  std::string key;
  key.reserve(func.size() + file.size() + 16);
  key.append(func).push_back('\0');
  key.append(file).push_back('\0');
  key.append(std::to_string(line));
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = frame_ids_.find(key); it != frame_ids_.end()) return it->second;
  const size_t cost = 2 * key.size() + sizeof(Frame) + 64;
  if (bytes_ + cost > max_bytes_) {
    full_ = true;
    return kFull;
  }
  bytes_ += cost;
  frames_.push_back({std::string(func), std::string(file), line});
  auto id = static_cast<uint32_t>(frames_.size());
  frame_ids_.emplace(std::move(key), id);
  return id;
}

uint32_t StackTable::intern_stack(std::span<const uint32_t> frames) {
  std::string key(frames.size() * sizeof(uint32_t), '\0');
  if (!frames.empty()) std::memcpy(key.data(), frames.data(), key.size());
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = stack_ids_.find(key); it != stack_ids_.end()) return it->second;
  const size_t cost = 2 * key.size() + 96;
  if (bytes_ + cost > max_bytes_) {
    full_ = true;
    return kFull;
  }
  bytes_ += cost;
  stacks_.emplace_back(static_cast<uint32_t>(stack_frames_.size()), static_cast<uint32_t>(frames.size()));
  stack_frames_.insert(stack_frames_.end(), frames.begin(), frames.end());
  auto id = static_cast<uint32_t>(stacks_.size());
  stack_ids_.emplace(std::move(key), id);
  return id;
}

std::vector<Frame> StackTable::frames_of_locked(uint32_t id) const {
  std::vector<Frame> out;
  if (id == 0 || id > stacks_.size()) return out;
  auto [first, count] = stacks_[id - 1];
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t frame = stack_frames_[first + i];
    out.push_back(frame == kFull ? Frame{"(stack table full)", "", 0} : frames_[frame - 1]);
  }
  return out;
}

std::vector<Frame> StackTable::frames_of(uint32_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return frames_of_locked(id);
}

size_t StackTable::stacks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stacks_.size();
}

size_t StackTable::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

bool StackTable::full() const {
  std::lock_guard<std::mutex> lock(mu_);
  return full_;
}

}  // namespace probing::profile
