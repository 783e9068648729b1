#include "sql/column_store.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace probing::sql {
namespace {

constexpr size_t kCellBytes = sizeof(uint8_t) + sizeof(uint64_t);
constexpr size_t kTextOverhead = sizeof(std::string) + 32;  // the string and its index entry
constexpr size_t kMaxTextBytes = 64 << 10;

}  // namespace

const char* type_name(ColumnType type) {
  switch (type) {
    case ColumnType::kInteger: return "INTEGER";
    case ColumnType::kReal: return "REAL";
    case ColumnType::kText: return "TEXT";
  }
  return "";
}

double ColumnChunk::real_at(size_t row) const { return std::bit_cast<double>(slots[row]); }

ColumnStore::ColumnStore(std::string schema, std::string name, std::vector<ColumnDef> columns, Limits limits)
    : schema_(std::move(schema)),
      name_(std::move(name)),
      columns_(std::move(columns)),
      limits_(limits),
      open_index_(columns_.size()),
      ascending_(new std::atomic<bool>[columns_.size()]),
      last_number_(columns_.size(), -1e308),
      last_int_(columns_.size()) {
  open_.columns.resize(columns_.size());
  for (size_t i = 0; i < columns_.size(); ++i) ascending_[i].store(columns_[i].type != ColumnType::kText);
}

Status ColumnStore::append(std::span<const Cell> cells) {
  if (cells.size() > columns_.size()) {
    return Status(Code::kInvalidArgument, "a row of " + std::to_string(cells.size()) + " values for the " +
                                              std::to_string(columns_.size()) + " columns of " + schema_ + "." + name_);
  }
  std::lock_guard<std::mutex> lock(mu_);
  size_t bytes = 0;
  for (size_t c = 0; c < columns_.size(); ++c) {
    ColumnChunk& col = open_.columns[c];
    const Cell& cell = c < cells.size() ? cells[c] : Cell{};
    uint8_t tag = ColumnChunk::kNull;
    uint64_t slot = 0;
    double number = 0;
    if (const long long* i = std::get_if<long long>(&cell)) {
      tag = ColumnChunk::kInt;
      slot = static_cast<uint64_t>(*i);
      number = static_cast<double>(*i);
    } else if (const double* d = std::get_if<double>(&cell); d != nullptr && !std::isnan(*d)) {
      tag = ColumnChunk::kReal;  // (NaN is stored as NULL, as SQLite shows it)
      slot = std::bit_cast<uint64_t>(*d);
      number = *d;
    } else if (const std::string_view* full = std::get_if<std::string_view>(&cell)) {
      tag = ColumnChunk::kText;
      const std::string_view* s = full;
      std::string_view cut;
      if (full->size() > kMaxTextBytes) {  // one cell never holds more than this
        cut = full->substr(0, kMaxTextBytes);
        s = &cut;
      }
      auto it = open_index_[c].find(*s);
      if (it == open_index_[c].end()) {
        it = open_index_[c].emplace(std::string(*s), static_cast<uint32_t>(col.dict.size())).first;
        col.dict.emplace_back(*s);
        bytes += s->size() + kTextOverhead;
      }
      slot = it->second;
    }
    if (tag == ColumnChunk::kInt || tag == ColumnChunk::kReal) {
      if (!col.has_numbers) {
        col.min = col.max = number;
        col.has_numbers = true;
      } else {
        col.min = std::min(col.min, number);
        col.max = std::max(col.max, number);
      }
      // Integers compare exactly (past 2^53 two of them can share a double).
      bool both_int = tag == ColumnChunk::kInt && last_int_[c].has_value();
      if (both_int ? static_cast<long long>(slot) < *last_int_[c] : number < last_number_[c]) {
        ascending_[c].store(false, std::memory_order_relaxed);
      }
      last_number_[c] = number;
      last_int_[c] = tag == ColumnChunk::kInt ? std::optional<long long>(static_cast<long long>(slot)) : std::nullopt;
    } else {
      col.has_other = true;
      ascending_[c].store(false, std::memory_order_relaxed);
    }
    col.tags.push_back(tag);
    col.slots.push_back(slot);
    bytes += kCellBytes;
  }
  ++open_.rows;
  open_.bytes += bytes;
  ++appended_;
  // Sealed by rows, or by bytes (big text): the open chunk, never dropped, stays a small part of
  // the cap, and so does the copy each query makes of it.
  if (open_.rows >= limits_.chunk_rows || open_.bytes >= limits_.max_bytes / 8) seal_locked();
  enforce_limits_locked();
  return Status::ok();
}

void ColumnStore::seal_locked() {
  if (open_.rows == 0) return;
  sealed_rows_ += open_.rows;
  sealed_bytes_ += open_.bytes;
  auto chunk = std::make_shared<Chunk>(std::move(open_));
  for (ColumnChunk& col : chunk->columns) {
    col.tags.shrink_to_fit();
    col.slots.shrink_to_fit();
  }
  sealed_.push_back(std::move(chunk));
  open_ = Chunk{};
  open_.columns.resize(columns_.size());
  for (TextIndex& index : open_index_) index.clear();
}

void ColumnStore::enforce_limits_locked() {
  // Oldest first; the open chunk is never dropped, so the newest rows always survive.
  while (!sealed_.empty() && (sealed_rows_ + open_.rows > limits_.max_rows ||
                              sealed_bytes_ + open_.bytes > limits_.max_bytes)) {
    const Chunk& oldest = *sealed_.front();
    sealed_rows_ -= oldest.rows;
    sealed_bytes_ -= oldest.bytes;
    dropped_ += oldest.rows;
    sealed_.erase(sealed_.begin());
  }
}

size_t ColumnStore::drop_below(size_t column, double cutoff) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  while (!sealed_.empty() && column < columns_.size()) {
    const Chunk& oldest = *sealed_.front();
    const ColumnChunk& c = oldest.columns[column];
    if (!c.has_numbers || c.has_other || c.max >= cutoff) break;
    sealed_rows_ -= oldest.rows;
    sealed_bytes_ -= oldest.bytes;
    dropped_ += oldest.rows;
    n += oldest.rows;
    sealed_.erase(sealed_.begin());
  }
  return n;
}

ColumnStore::Snapshot ColumnStore::snapshot() const {
  Snapshot snap;
  std::shared_ptr<Chunk> open_copy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snap.chunks = sealed_;
    snap.rows = sealed_rows_ + open_.rows;
    if (open_.rows > 0) open_copy = std::make_shared<Chunk>(open_);
  }
  if (open_copy) snap.chunks.push_back(std::move(open_copy));
  return snap;
}

ColumnStore::Stats ColumnStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {sealed_rows_ + open_.rows, sealed_bytes_ + open_.bytes, appended_, dropped_};
}

void ColumnStore::set_limits(const Limits& limits) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t chunk_rows = limits_.chunk_rows;
  limits_ = limits;
  limits_.chunk_rows = chunk_rows;  // fixed for the life of the store
  enforce_limits_locked();
}

}  // namespace probing::sql
