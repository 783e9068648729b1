#include "sqlext/functions.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <map>
#include <new>
#include <string>
#include <vector>

namespace probing::sql {
namespace {

constexpr size_t kMaxPercentileValues = 4'000'000;  // 32 MB of doubles
constexpr size_t kMaxHistogramBuckets = 10'000;
constexpr int kFlags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;

bool is_null(sqlite3_value* v) { return sqlite3_value_type(v) == SQLITE_NULL; }

bool is_number(sqlite3_value* v) {
  const int t = sqlite3_value_numeric_type(v);
  return t == SQLITE_INTEGER || t == SQLITE_FLOAT;
}

// An aggregate's state: made on its first step, freed by its final call (which SQLite always
// makes, even for an empty group or after an error).
template <typename T>
T* state(sqlite3_context* ctx, bool create) {
  auto** slot = static_cast<T**>(sqlite3_aggregate_context(ctx, create ? sizeof(T*) : 0));
  if (slot == nullptr) return nullptr;
  if (*slot == nullptr && create) *slot = new (std::nothrow) T();
  return *slot;
}

template <typename T>
void release(sqlite3_context* ctx) {
  auto** slot = static_cast<T**>(sqlite3_aggregate_context(ctx, 0));
  if (slot != nullptr) {
    delete *slot;
    *slot = nullptr;
  }
}

// ---- time_bucket, to_timestamp ----

// "1 minute", "5m", "250 ms", "2 hours" -> seconds; 0 when it does not parse.
double parse_width(const char* text) {
  char* end = nullptr;
  const double n = std::strtod(text, &end);
  if (end == text || !(n > 0)) return 0;
  std::string unit;
  for (const char* c = end; *c != '\0'; ++c) {
    if (!std::isspace(static_cast<unsigned char>(*c))) unit += static_cast<char>(std::tolower(*c));
  }
  if (unit.size() > 1 && unit.back() == 's' && unit != "ms" && unit != "s") unit.pop_back();  // plurals
  if (unit.empty() || unit == "s" || unit == "sec" || unit == "second") return n;
  if (unit == "ms" || unit == "millisecond") return n / 1000;
  if (unit == "m" || unit == "min" || unit == "minute") return n * 60;
  if (unit == "h" || unit == "hour") return n * 3600;
  if (unit == "d" || unit == "day") return n * 86400;
  if (unit == "w" || unit == "week") return n * 604800;
  return 0;
}

void time_bucket(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (is_null(argv[0]) || is_null(argv[1])) return sqlite3_result_null(ctx);
  double width = 0;
  if (is_number(argv[0])) {
    width = sqlite3_value_double(argv[0]);
  } else {
    width = parse_width(reinterpret_cast<const char*>(sqlite3_value_text(argv[0])));
  }
  if (!(width > 0) || !std::isfinite(width)) {
    return sqlite3_result_error(ctx, "time_bucket: the width is seconds (> 0) or text such as '1 minute'", -1);
  }
  if (!is_number(argv[1])) return sqlite3_result_error(ctx, "time_bucket: the time is unix seconds", -1);
  const double t = sqlite3_value_double(argv[1]);
  const double bucket = std::floor(t / width) * width;
  if (sqlite3_value_numeric_type(argv[1]) == SQLITE_INTEGER && width == std::floor(width)) {
    return sqlite3_result_int64(ctx, static_cast<sqlite3_int64>(bucket));
  }
  sqlite3_result_double(ctx, bucket);
}

void to_timestamp(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (is_null(argv[0]) || !is_number(argv[0])) return sqlite3_result_null(ctx);
  const double t = sqlite3_value_double(argv[0]);
  if (!std::isfinite(t) || std::fabs(t) > 1e12) return sqlite3_result_null(ctx);
  double whole = std::floor(t);
  auto micros = static_cast<long>(std::llround((t - whole) * 1e6));
  if (micros >= 1'000'000) {
    whole += 1;
    micros -= 1'000'000;
  }
  const auto secs = static_cast<time_t>(whole);
  tm utc{};
  if (gmtime_r(&secs, &utc) == nullptr) return sqlite3_result_null(ctx);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &utc);
  std::snprintf(buf + n, sizeof buf - n, ".%06ld", micros);
  sqlite3_result_text(ctx, buf, -1, SQLITE_TRANSIENT);
}

// ---- percentile, median ----

struct Percentile {
  std::vector<double> xs;
  double p = NAN;
  const char* error = nullptr;
};

void percentile_add(sqlite3_context* ctx, sqlite3_value* x, double p) {
  Percentile* s = state<Percentile>(ctx, true);
  if (s == nullptr) return sqlite3_result_error_nomem(ctx);
  if (s->error != nullptr) return;
  if (!(p >= 0 && p <= 1)) {
    s->error = "percentile: p is a fraction between 0 and 1 (0.99 for the 99th percentile)";
  } else if (!std::isnan(s->p) && p != s->p) {
    s->error = "percentile: p must be the same for every row of a group";
  }
  s->p = p;
  if (s->error != nullptr || is_null(x) || !is_number(x)) return;
  if (s->xs.size() >= kMaxPercentileValues) {
    s->error = "percentile: more than 4,000,000 values in one group";
    return;
  }
  s->xs.push_back(sqlite3_value_double(x));
}

void percentile_step(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (is_null(argv[1]) || !is_number(argv[1])) {
    return percentile_add(ctx, argv[0], -1);  // reported as out of range
  }
  percentile_add(ctx, argv[0], sqlite3_value_double(argv[1]));
}

void median_step(sqlite3_context* ctx, int, sqlite3_value** argv) { percentile_add(ctx, argv[0], 0.5); }

void percentile_final(sqlite3_context* ctx) {
  Percentile* s = state<Percentile>(ctx, false);
  if (s != nullptr && s->error != nullptr) {
    sqlite3_result_error(ctx, s->error, -1);
  } else if (s == nullptr || s->xs.empty()) {
    sqlite3_result_null(ctx);
  } else {
    // Linear between the closest ranks (numpy's default; Python's statistics.quantiles
    // method='inclusive'; the median for p = 0.5).
    std::vector<double>& xs = s->xs;
    const double h = (static_cast<double>(xs.size()) - 1) * s->p;
    const auto lo = static_cast<size_t>(std::floor(h));
    std::nth_element(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(lo), xs.end());
    const double a = xs[lo];
    double b = a;
    if (lo + 1 < xs.size()) b = *std::min_element(xs.begin() + static_cast<std::ptrdiff_t>(lo) + 1, xs.end());
    sqlite3_result_double(ctx, a + (h - static_cast<double>(lo)) * (b - a));
  }
  release<Percentile>(ctx);
}

// ---- stddev, variance ----

struct Moments {  // Welford's running mean and sum of squared deviations
  long long n = 0;
  double mean = 0, m2 = 0;
};

void moments_step(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (is_null(argv[0]) || !is_number(argv[0])) return;
  Moments* s = state<Moments>(ctx, true);
  if (s == nullptr) return sqlite3_result_error_nomem(ctx);
  const double x = sqlite3_value_double(argv[0]);
  ++s->n;
  const double d = x - s->mean;
  s->mean += d / static_cast<double>(s->n);
  s->m2 += d * (x - s->mean);
}

template <bool kSample, bool kRoot>
void moments_final(sqlite3_context* ctx) {
  Moments* s = state<Moments>(ctx, false);
  const long long n = s == nullptr ? 0 : s->n;
  if (n < (kSample ? 2 : 1)) {
    sqlite3_result_null(ctx);
  } else {
    const double var = s->m2 / static_cast<double>(kSample ? n - 1 : n);
    sqlite3_result_double(ctx, kRoot ? std::sqrt(var) : var);
  }
  release<Moments>(ctx);
}

// ---- min_by, max_by, first, last ----

struct By {
  sqlite3_value* value = nullptr;  // sqlite3_value_dup'ed
  sqlite3_value* key = nullptr;
  ~By() {
    sqlite3_value_free(value);
    sqlite3_value_free(key);
  }
};

// SQLite's order of values: NULL < numbers < text < blobs; numbers by value, text by bytes.
int compare(sqlite3_value* a, sqlite3_value* b) {
  auto rank = [](sqlite3_value* v) {
    switch (sqlite3_value_type(v)) {
      case SQLITE_NULL: return 0;
      case SQLITE_INTEGER:
      case SQLITE_FLOAT: return 1;
      case SQLITE_TEXT: return 2;
      default: return 3;
    }
  };
  const int ra = rank(a), rb = rank(b);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ra == 1) {
    const double x = sqlite3_value_double(a), y = sqlite3_value_double(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  const int na = sqlite3_value_bytes(a), nb = sqlite3_value_bytes(b);
  const void* pa = ra == 2 ? static_cast<const void*>(sqlite3_value_text(a)) : sqlite3_value_blob(a);
  const void* pb = rb == 2 ? static_cast<const void*>(sqlite3_value_text(b)) : sqlite3_value_blob(b);
  const int c = std::memcmp(pa, pb, static_cast<size_t>(std::min(na, nb)));
  return c != 0 ? c : (na < nb ? -1 : na > nb ? 1 : 0);
}

template <int kSign>  // -1: the least key wins; +1: the greatest
void by_step(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (is_null(argv[1])) return;
  By* s = state<By>(ctx, true);
  if (s == nullptr) return sqlite3_result_error_nomem(ctx);
  if (s->key != nullptr && compare(argv[1], s->key) * kSign <= 0) return;  // ties: the first row
  sqlite3_value* value = sqlite3_value_dup(argv[0]);
  sqlite3_value* key = sqlite3_value_dup(argv[1]);
  if (value == nullptr || key == nullptr) {
    sqlite3_value_free(value);
    sqlite3_value_free(key);
    return sqlite3_result_error_nomem(ctx);
  }
  sqlite3_value_free(s->value);
  sqlite3_value_free(s->key);
  s->value = value;
  s->key = key;
}

void by_final(sqlite3_context* ctx) {
  By* s = state<By>(ctx, false);
  if (s == nullptr || s->value == nullptr) {
    sqlite3_result_null(ctx);
  } else {
    sqlite3_result_value(ctx, s->value);
  }
  release<By>(ctx);
}

// ---- delta, rate ----

struct Ends {
  bool any = false;
  double first_t = 0, first_v = 0, last_t = 0, last_v = 0;
};

void ends_step(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (is_null(argv[0]) || is_null(argv[1]) || !is_number(argv[0]) || !is_number(argv[1])) return;
  Ends* s = state<Ends>(ctx, true);
  if (s == nullptr) return sqlite3_result_error_nomem(ctx);
  const double v = sqlite3_value_double(argv[0]), t = sqlite3_value_double(argv[1]);
  if (!s->any || t < s->first_t) {
    s->first_t = t;
    s->first_v = v;
  }
  if (!s->any || t >= s->last_t) {
    s->last_t = t;
    s->last_v = v;
  }
  s->any = true;
}

template <bool kRate>
void ends_final(sqlite3_context* ctx) {
  Ends* s = state<Ends>(ctx, false);
  if (s == nullptr || !s->any || (kRate && !(s->last_t > s->first_t))) {
    sqlite3_result_null(ctx);
  } else {
    const double delta = s->last_v - s->first_v;
    sqlite3_result_double(ctx, kRate ? delta / (s->last_t - s->first_t) : delta);
  }
  release<Ends>(ctx);
}

// ---- histogram ----

struct Histogram {
  double width = 0;
  std::map<long long, long long> counts;  // bucket index -> count
  const char* error = nullptr;
};

void histogram_step(sqlite3_context* ctx, int, sqlite3_value** argv) {
  Histogram* s = state<Histogram>(ctx, true);
  if (s == nullptr) return sqlite3_result_error_nomem(ctx);
  if (s->error != nullptr) return;
  const double width = is_number(argv[1]) ? sqlite3_value_double(argv[1]) : 0;
  if (!(width > 0) || !std::isfinite(width) || (s->width != 0 && width != s->width)) {
    s->error = "histogram: the width is a number > 0, the same for every row of a group";
    return;
  }
  s->width = width;
  if (is_null(argv[0]) || !is_number(argv[0])) return;
  const double b = std::floor(sqlite3_value_double(argv[0]) / width);
  if (!std::isfinite(b) || std::fabs(b) > 9e15) return;
  ++s->counts[static_cast<long long>(b)];
  if (s->counts.size() > kMaxHistogramBuckets) s->error = "histogram: more than 10,000 buckets: give a wider width";
}

void histogram_final(sqlite3_context* ctx) {
  Histogram* s = state<Histogram>(ctx, false);
  if (s != nullptr && s->error != nullptr) {
    sqlite3_result_error(ctx, s->error, -1);
  } else if (s == nullptr || s->counts.empty()) {
    sqlite3_result_null(ctx);
  } else {
    std::string json = "{";
    char key[64];
    for (const auto& [bucket, count] : s->counts) {
      std::snprintf(key, sizeof key, "%.15g", static_cast<double>(bucket) * s->width);
      if (json.size() > 1) json += ",";
      json += "\"" + std::string(key) + "\":" + std::to_string(count);
    }
    json += "}";
    sqlite3_result_text(ctx, json.c_str(), static_cast<int>(json.size()), SQLITE_TRANSIENT);
  }
  release<Histogram>(ctx);
}

}  // namespace

bool register_functions(sqlite3* db) noexcept {
  using Scalar = void (*)(sqlite3_context*, int, sqlite3_value**);
  using Final = void (*)(sqlite3_context*);
  struct Fn {
    const char* name;
    int args;
    Scalar scalar;  // or, for an aggregate, its step
    Final final;    // nullptr for a scalar
  };
  const Fn functions[] = {
      {"time_bucket", 2, time_bucket, nullptr},
      {"to_timestamp", 1, to_timestamp, nullptr},
      {"percentile", 2, percentile_step, percentile_final},
      {"median", 1, median_step, percentile_final},
      {"stddev", 1, moments_step, moments_final<true, true>},
      {"variance", 1, moments_step, moments_final<true, false>},
      {"stddev_pop", 1, moments_step, moments_final<false, true>},
      {"variance_pop", 1, moments_step, moments_final<false, false>},
      {"min_by", 2, by_step<-1>, by_final},
      {"arg_min", 2, by_step<-1>, by_final},
      {"first", 2, by_step<-1>, by_final},
      {"max_by", 2, by_step<1>, by_final},
      {"arg_max", 2, by_step<1>, by_final},
      {"last", 2, by_step<1>, by_final},
      {"delta", 2, ends_step, ends_final<false>},
      {"rate", 2, ends_step, ends_final<true>},
      {"histogram", 2, histogram_step, histogram_final},
  };
  static_assert(std::size(functions) == kProbingFunctions.size());
  bool ok = true;
  for (const Fn& f : functions) {
    const int rc = f.final == nullptr
                       ? sqlite3_create_function_v2(db, f.name, f.args, kFlags, nullptr, f.scalar, nullptr, nullptr,
                                                    nullptr)
                       : sqlite3_create_function_v2(db, f.name, f.args, kFlags, nullptr, nullptr, f.scalar, f.final,
                                                    nullptr);
    ok = ok && rc == SQLITE_OK;
  }
  return ok;
}

}  // namespace probing::sql
