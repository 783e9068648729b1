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

// Cells of one column in one chunk. Each cell has a tag; numbers share one 8-byte slot (a double
// is stored by its bits) and text is an index into the chunk's own dictionary, so repeated text
// (module names, stages) costs 8 bytes a row.
struct ColumnChunk {
  enum Tag : uint8_t { kNull, kInt, kReal, kText };
  std::vector<uint8_t> tags;
  std::vector<uint64_t> slots;
  std::vector<std::string> dict;
  // Zone map over the numeric cells, for pruning chunks by a filter.
  double min = 0, max = 0;
  bool has_numbers = false;
  bool has_other = false;  // text or NULL cells: they make the zone map incomplete

  long long int_at(size_t row) const { return static_cast<long long>(slots[row]); }
  double real_at(size_t row) const;
  const std::string& text_at(size_t row) const { return dict[slots[row]]; }
  double number_at(size_t row) const { return tags[row] == kInt ? static_cast<double>(int_at(row)) : real_at(row); }
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
  size_t sealed_rows_ = 0;
  size_t sealed_bytes_ = 0;
  uint64_t appended_ = 0;
  uint64_t dropped_ = 0;
  std::unique_ptr<std::atomic<bool>[]> ascending_;
  std::vector<double> last_number_;
  std::vector<std::optional<long long>> last_int_;
};

}  // namespace probing::sql
