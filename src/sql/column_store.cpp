#include "sql/column_store.h"

#include <algorithm>
#include <atomic>
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

BitPacked::BitPacked(std::span<const uint64_t> values) {
  uint64_t all = 0;
  for (uint64_t v : values) all |= v;
  width_ = static_cast<unsigned>(std::bit_width(all));
  if (width_ == 0) return;
  words_.assign((values.size() * width_ + 63) / 64, 0);
  for (size_t i = 0; i < values.size(); ++i) {
    const size_t bit = i * width_;
    const unsigned offset = bit & 63;
    words_[bit >> 6] |= values[i] << offset;
    if (offset + width_ > 64) words_[(bit >> 6) + 1] |= values[i] >> (64 - offset);
  }
}

double ColumnChunk::real_at(size_t row) const {
  if (!encoded_) return std::bit_cast<double>(slots_[row]);
  const uint64_t v = values_.at(row);
  switch (form_) {
    case Form::kScaled: return static_cast<double>(static_cast<long long>(base_ + (v << shift_))) / scale_;
    case Form::kXor: return std::bit_cast<double>((v << shift_) ^ base_);
    default: return std::bit_cast<double>(base_ + v);
  }
}

size_t ColumnChunk::cell_bytes() const {
  if (!encoded_) return tags_.size() * kCellBytes;
  return sizeof(ColumnChunk) + packed_tags_.bytes() + values_.bytes();
}

namespace {

// A new open chunk's epoch: never 0 (a TextHint that names none) and never given twice.
uint64_t next_epoch() {
  static std::atomic<uint64_t> last{0};
  return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

// Integers as offsets from the smallest (as unsigned: a range past 2^63 wraps and still reads back).
std::vector<uint64_t> offsets_from_min(std::span<const long long> values, const std::vector<bool>& present,
                                       uint64_t* base) {
  long long low = 0;
  bool any = false;
  for (size_t i = 0; i < values.size(); ++i) {
    if (present[i] && (!any || values[i] < low)) {
      low = values[i];
      any = true;
    }
  }
  *base = static_cast<uint64_t>(low);
  std::vector<uint64_t> out(values.size(), 0);
  for (size_t i = 0; i < values.size(); ++i) {
    if (present[i]) out[i] = static_cast<uint64_t>(values[i]) - *base;
  }
  return out;
}

// Shifts out the low zero bits every value has (sizes in bytes that are multiples of 512, say);
// returns the shift.
unsigned strip_common_zeros(std::vector<uint64_t>& values) {
  int shift = 64;
  for (uint64_t v : values) {
    if (v != 0) shift = std::min(shift, std::countr_zero(v));
  }
  if (shift == 64 || shift == 0) return 0;
  for (uint64_t& v : values) v >>= shift;
  return static_cast<unsigned>(shift);
}

unsigned width_of(const std::vector<uint64_t>& values) {
  uint64_t all = 0;
  for (uint64_t v : values) all |= v;
  return static_cast<unsigned>(std::bit_width(all));
}

}  // namespace

void ColumnChunk::encode() {
  if (encoded_) return;
  const size_t n = tags_.size();
  bool has[4] = {false, false, false, false};
  for (uint8_t t : tags_) has[t & 3] = true;
  uniform_ = static_cast<int>(has[kNull]) + has[kInt] + has[kReal] + has[kText] <= 1;
  if (uniform_) {
    uniform_tag_ = n > 0 ? static_cast<Tag>(tags_[0]) : kNull;
  } else {
    std::vector<uint64_t> tags(tags_.begin(), tags_.end());
    packed_tags_ = BitPacked(tags);
  }
  std::vector<bool> present(n);
  for (size_t i = 0; i < n; ++i) present[i] = tags_[i] != kNull;
  std::vector<uint64_t> values;
  const int kinds = static_cast<int>(has[kInt]) + has[kReal] + has[kText];
  if (kinds == 1 && (has[kInt] || has[kText])) {
    form_ = Form::kOffset;
    std::vector<long long> as_signed(n);
    for (size_t i = 0; i < n; ++i) as_signed[i] = static_cast<long long>(slots_[i]);
    values = offsets_from_min(as_signed, present, &base_);
    shift_ = strip_common_zeros(values);
  } else if (kinds == 1 && has[kReal]) {
    // The XOR form always reads back; a scaled one replaces it where it is narrower.
    form_ = Form::kXor;
    uint64_t first = 0;
    for (size_t i = 0; i < n; ++i) {
      if (present[i]) {
        first = slots_[i];
        break;
      }
    }
    base_ = first;
    values.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      if (present[i]) values[i] = slots_[i] ^ first;
    }
    shift_ = strip_common_zeros(values);
    unsigned best = width_of(values);
    constexpr double kExact = 9007199254740992.0;  // 2^53: past it, doubles skip integers
    for (double scale : {1.0, 1e3, 1e6, 1e9, 1048576.0}) {  // 2^20: bytes given as MiB
      std::vector<long long> scaled(n, 0);
      bool exact = true;
      for (size_t i = 0; i < n && exact; ++i) {
        if (!present[i]) continue;
        const double v = std::bit_cast<double>(slots_[i]);
        const double x = v * scale;
        if (!(std::fabs(x) < kExact)) {
          exact = false;
          break;
        }
        scaled[i] = std::llround(x);
        exact = std::bit_cast<uint64_t>(static_cast<double>(scaled[i]) / scale) == slots_[i];
      }
      if (!exact) continue;
      uint64_t base = 0;
      std::vector<uint64_t> offsets = offsets_from_min(scaled, present, &base);
      const unsigned shift = strip_common_zeros(offsets);
      if (width_of(offsets) < best) {
        best = width_of(offsets);
        form_ = Form::kScaled;
        scale_ = scale;
        base_ = base;
        shift_ = shift;
        values = std::move(offsets);
      }
    }
  } else {
    form_ = Form::kSlots;  // integers and doubles (or text) in one column: their slots as they are
    base_ = 0;
    values.assign(slots_.begin(), slots_.end());
  }
  values_ = BitPacked(values);
  encoded_ = true;
  std::vector<uint8_t>().swap(tags_);  // gives the memory back (`= {}` would keep the capacity)
  std::vector<uint64_t>().swap(slots_);
}

ColumnStore::ColumnStore(std::string schema, std::string name, std::vector<ColumnDef> columns, Limits limits)
    : schema_(std::move(schema)),
      name_(std::move(name)),
      columns_(std::move(columns)),
      limits_(limits),
      open_index_(columns_.size()),
      open_epoch_(next_epoch()),
      ascending_(new std::atomic<bool>[columns_.size()]),
      last_number_(columns_.size(), -1e308),
      last_int_(columns_.size()) {
  open_.columns.resize(columns_.size());
  for (size_t i = 0; i < columns_.size(); ++i) ascending_[i].store(columns_[i].type != ColumnType::kText);
}

Status ColumnStore::append(std::span<const Cell> cells) { return append(cells, {}); }

Status ColumnStore::append(std::span<const Cell> cells, std::span<TextHint* const> hints) {
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
      TextHint* hint = c < hints.size() ? hints[c] : nullptr;
      if (hint != nullptr && hint->epoch == open_epoch_) {
        slot = hint->index;
      } else {
        auto it = open_index_[c].find(*s);
        if (it == open_index_[c].end()) {
          it = open_index_[c].emplace(std::string(*s), static_cast<uint32_t>(col.dict().size())).first;
          col.dict().emplace_back(*s);
          bytes += s->size() + kTextOverhead;
        }
        slot = it->second;
        if (hint != nullptr) *hint = TextHint{open_epoch_, it->second};
      }
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
    col.append(static_cast<ColumnChunk::Tag>(tag), slot);
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
  auto chunk = std::make_shared<Chunk>(std::move(open_));
  chunk->bytes = sizeof(Chunk);
  for (ColumnChunk& col : chunk->columns) {
    col.encode();
    chunk->bytes += col.cell_bytes();
    for (const std::string& text : col.dict()) chunk->bytes += text.size() + sizeof(std::string);
  }
  sealed_rows_ += chunk->rows;
  sealed_bytes_ += chunk->bytes;
  sealed_.push_back(std::move(chunk));
  open_ = Chunk{};
  open_.columns.resize(columns_.size());
  for (TextIndex& index : open_index_) index.clear();
  open_epoch_ = next_epoch();
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
