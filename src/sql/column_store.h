// ColumnStore: a bounded, append-only table of recorded rows (process.metrics, the tables the
// target makes with probing.table, python.torch_trace). Rows are kept in chunks of columns; a
// full chunk is sealed and never changes again, so a query scans a snapshot — the sealed chunks
// it shares and a copy of the open one — while appends go on. An append only ever waits for
// another append or for the copy of the open chunk, never for a query. When the store passes its
// cap in rows or bytes, the oldest sealed chunks are dropped.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "sql/schema.h"

namespace probing::sql {

// Unsigned integers of one fixed width (0 to 64 bits) packed into 64-bit words: any one is read
// in O(1).
class BitPacked {
 public:
  BitPacked() = default;
  explicit BitPacked(std::span<const uint64_t> values);
  uint64_t at(size_t i) const {
    if (width_ == 0) return 0;
    const size_t bit = i * width_;
    const size_t word = bit >> 6;
    const unsigned offset = bit & 63;
    uint64_t v = words_[word] >> offset;
    if (offset + width_ > 64) v |= words_[word + 1] << (64 - offset);
    return width_ == 64 ? v : v & ((uint64_t{1} << width_) - 1);
  }
  unsigned width() const { return width_; }
  size_t bytes() const { return words_.size() * sizeof(uint64_t); }

 private:
  std::vector<uint64_t> words_;
  unsigned width_ = 0;
};

// Cells of one column in one chunk. While the chunk is open each cell has a tag byte and an
// 8-byte slot (a double is stored by its bits, text as an index into the chunk's own dictionary).
// Sealing encodes the column by its data (encode()): one tag for the whole column when every
// cell has it, else 2 bits a cell; integers as offsets from the smallest, less the low zero bits
// they all have, in as few bits as the largest needs; doubles the same way where they are whole
// numbers or whole numbers of thousandths, millionths, billionths or 2^-20ths (bytes as MiB) and
// that gives each back bit for bit (the torch tracer's durations are whole nanoseconds), else by
// their bits XORed with the first one's, less the low bits every one of them has as zero; text as
// dictionary indexes in as few bits as the dictionary needs. Every cell stays readable in O(1).
class ColumnChunk {
 public:
  enum Tag : uint8_t { kNull, kInt, kReal, kText };

  void append(Tag tag, uint64_t slot) {
    tags_.push_back(tag);
    slots_.push_back(slot);
  }
  // The dictionary of the chunk's text; append() a kText cell with the index of its text.
  std::vector<std::string>& dict() { return dict_; }
  const std::vector<std::string>& dict() const { return dict_; }

  // Encodes the cells (see above); the chunk takes no more appends.
  void encode();
  bool encoded() const { return encoded_; }
  // Bytes the cells take (the dictionary's text is counted by the store).
  size_t cell_bytes() const;

  Tag tag(size_t row) const {
    if (!encoded_) return static_cast<Tag>(tags_[row]);
    return uniform_ ? uniform_tag_ : static_cast<Tag>(packed_tags_.at(row));
  }
  long long int_at(size_t row) const {
    return static_cast<long long>(encoded_ ? base_ + (values_.at(row) << shift_) : slots_[row]);
  }
  double real_at(size_t row) const;
  const std::string& text_at(size_t row) const {
    return dict_[encoded_ ? base_ + (values_.at(row) << shift_) : slots_[row]];
  }
  double number_at(size_t row) const {
    return tag(row) == kInt ? static_cast<double>(int_at(row)) : real_at(row);
  }

  // Zone map over the numeric cells, for pruning chunks by a filter.
  double min = 0, max = 0;
  bool has_numbers = false;
  bool has_other = false;  // text or NULL cells: they make the zone map incomplete

 private:
  // How an encoded column's values are read back: base + value, then as the form says.
  enum class Form : uint8_t {
    kSlots,   // the slot itself (base 0, shift 0): a column of integers and doubles both
    kOffset,  // integers, or dictionary indexes: base + (value << shift_)
    kScaled,  // doubles: (base + (value << shift_) as a signed integer) / scale_
    kXor,     // doubles: bits (value << shift_) ^ base
  };

  // Open form.
  std::vector<uint8_t> tags_;
  std::vector<uint64_t> slots_;
  std::vector<std::string> dict_;
  // Encoded form.
  bool encoded_ = false;
  bool uniform_ = false;
  Tag uniform_tag_ = kNull;
  Form form_ = Form::kSlots;
  unsigned shift_ = 0;
  double scale_ = 1;
  uint64_t base_ = 0;
  BitPacked packed_tags_;
  BitPacked values_;
};

struct Chunk {
  size_t rows = 0;
  size_t bytes = 0;
  std::vector<ColumnChunk> columns;
};

class ColumnStore {
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  using TextIndex = std::unordered_map<std::string, uint32_t, TextHash, std::equal_to<>>;

 public:
  struct Limits {
    size_t max_rows = 1'000'000;
    size_t max_bytes = 32u << 20;
    size_t chunk_rows = 8192;
  };
  struct Stats {
    size_t rows = 0;          // kept now
    size_t bytes = 0;         // kept now (cells and dictionaries)
    uint64_t appended = 0;    // since the store was made
    uint64_t dropped = 0;     // rows dropped to stay under the caps
  };
  // The rows a query sees: shared sealed chunks and a private copy of the open one.
  struct Snapshot {
    std::vector<std::shared_ptr<const Chunk>> chunks;
    size_t rows = 0;
  };

  ColumnStore(std::string schema, std::string name, std::vector<ColumnDef> columns, Limits limits);

  const std::string& schema() const { return schema_; }
  const std::string& name() const { return name_; }
  const std::vector<ColumnDef>& columns() const { return columns_; }

  // Appends one row, cells in column order (missing trailing cells are NULL). kInvalidArgument
  // for more cells than columns.
  Status append(std::span<const Cell> cells);

  // A writer's memo of where a text it appends again and again (a module's name) sits in the open
  // chunk's dictionary, so that the next append of it to the same column skips the lookup.
  struct TextHint {
    uint64_t epoch = 0;  // of the open chunk it was taken in (unique in the process); 0: none
    uint32_t index = 0;
  };
  // The same, with a hint (or null) per text cell, which is used when it is of the open chunk and
  // updated when not. The text must be the one the hint was taken for, in the same column.
  Status append(std::span<const Cell> cells, std::span<TextHint* const> hints);

  // Drops the sealed chunks in which every value of `column` (a numeric column that only grows, such
  // as a time) is below `cutoff`: a window in time rather than in rows. Returns the rows dropped.
  size_t drop_below(size_t column, double cutoff);

  Snapshot snapshot() const;
  Stats stats() const;
  void set_limits(const Limits& limits);

  // Whether every numeric value ever appended to `column` was >= the one before, with no NULL or
  // text in between: then a scan in append order is also a scan in that column's order.
  bool ascending(size_t column) const { return ascending_[column].load(std::memory_order_relaxed); }

 private:
  void seal_locked();
  void enforce_limits_locked();

  const std::string schema_;
  const std::string name_;
  const std::vector<ColumnDef> columns_;
  mutable std::mutex mu_;
  Limits limits_;
  std::vector<std::shared_ptr<const Chunk>> sealed_;
  Chunk open_;
  std::vector<TextIndex> open_index_;  // text -> dict index
  uint64_t open_epoch_;                // names the open chunk for TextHints
  size_t sealed_rows_ = 0;
  size_t sealed_bytes_ = 0;
  uint64_t appended_ = 0;
  uint64_t dropped_ = 0;
  std::unique_ptr<std::atomic<bool>[]> ascending_;
  std::vector<double> last_number_;
  std::vector<std::optional<long long>> last_int_;
};

}  // namespace probing::sql
