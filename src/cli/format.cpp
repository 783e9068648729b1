#include "cli/format.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <vector>

namespace probing::cli {
namespace {

constexpr std::string_view kEllipsis = "\xe2\x80\xa6";  // …, U+2026
constexpr size_t kMinColumnWidth = 3;
constexpr std::string_view kColumnGap = " | ";
constexpr std::string_view kRuleGap = "-+-";

const nlohmann::json& field(const nlohmann::json& reply, const char* key, nlohmann::json::value_t type) {
  static const nlohmann::json kNone;
  if (!reply.is_object()) return kNone;
  auto it = reply.find(key);
  return it != reply.end() && it->type() == type ? *it : kNone;
}

const nlohmann::json& columns_of(const nlohmann::json& reply) {
  return field(reply, "columns", nlohmann::json::value_t::array);
}

const nlohmann::json& rows_of(const nlohmann::json& reply) {
  return field(reply, "rows", nlohmann::json::value_t::array);
}

// The column names as text; a name that is not a string prints as its JSON.
std::vector<std::string> column_names(const nlohmann::json& reply) {
  std::vector<std::string> names;
  for (const auto& c : columns_of(reply)) names.push_back(c.is_string() ? c.get<std::string>() : c.dump());
  return names;
}

// Cell `i` of `row`; null when the row is short or not an array.
const nlohmann::json& cell_at(const nlohmann::json& row, size_t i) {
  static const nlohmann::json kNull;
  return row.is_array() && i < row.size() ? row[i] : kNull;
}

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

size_t display_width(std::string_view text) {
  return static_cast<size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return !is_continuation(c); }));
}

// A cell as one line of a table.
std::string table_text(const nlohmann::json& cell) {
  if (cell.is_null()) return "NULL";
  if (cell.is_number_float()) {
    // Six significant digits, except that large values (unix times, byte counts) keep their
    // integer part and three decimals: 1796180000.123, not 1.79618e+09.
    char buf[64];
    double d = cell.get<double>();
    double a = d < 0 ? -d : d;
    std::snprintf(buf, sizeof buf, a >= 1e6 && a < 1e15 ? "%.3f" : "%.6g", d);
    return buf;
  }
  if (!cell.is_string()) return cell.dump();  // integers exactly, true/false, nested JSON on one line
  std::string out;
  for (char c : cell.get_ref<const std::string&>()) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      // Other control characters (a terminal escape sequence, say) are shown, not obeyed.
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// Column widths that fit `budget` code points: the widest columns shrink first, none below its
// `least` width. When even that does not fit, the result is wider than `budget`.
std::vector<size_t> fit_widths(const std::vector<size_t>& natural, const std::vector<size_t>& least,
                               size_t budget) {
  auto width_at = [&](size_t i, size_t cap) { return std::max(least[i], std::min(natural[i], cap)); };
  auto used = [&](size_t cap) {
    size_t sum = 0;
    for (size_t i = 0; i < natural.size(); ++i) sum += width_at(i, cap);
    return sum;
  };
  size_t widest = *std::max_element(natural.begin(), natural.end());
  if (used(widest) <= budget) return natural;
  // The largest cap below `widest` that fits; 0 (every column at its least) when none does.
  size_t lo = 0, hi = widest - 1;
  while (lo < hi) {
    size_t mid = lo + (hi - lo + 1) / 2;
    if (used(mid) <= budget) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  size_t cap = lo;
  size_t spare = budget > used(cap) ? budget - used(cap) : 0;
  std::vector<size_t> widths;
  for (size_t i = 0; i < natural.size(); ++i) {
    size_t width = width_at(i, cap);
    if (width < natural[i] && width == cap && spare > 0) {  // cap + 1 fits for the first few
      ++width;
      --spare;
    }
    widths.push_back(width);
  }
  return widths;
}

struct TableCell {
  std::string text;
  bool right = false;
};

void append_line(std::string& out, const std::vector<TableCell>& cells, const std::vector<size_t>& widths) {
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i > 0) out += kColumnGap;
    std::string text = cut_to_width(cells[i].text, widths[i]);
    size_t pad = widths[i] - display_width(text);
    if (cells[i].right) out.append(pad, ' ');
    out += text;
    if (!cells[i].right && i + 1 < cells.size()) out.append(pad, ' ');  // no trailing blanks
  }
  out += '\n';
}

// Names for JSON keys: each name as given, a repeat suffixed _2, _3, ... with a suffix no other
// column has.
std::vector<std::string> unique_keys(const std::vector<std::string>& names) {
  std::set<std::string> given(names.begin(), names.end());
  std::set<std::string> taken;
  std::vector<std::string> keys;
  for (const std::string& name : names) {
    std::string key = name;
    for (int n = 2; taken.count(key) > 0; ++n) {
      key = name + "_" + std::to_string(n);
      if (given.count(key) > 0) key = name;  // another column's own name: try the next suffix
    }
    taken.insert(key);
    keys.push_back(key);
  }
  return keys;
}

std::string csv_field(const nlohmann::json& cell) {
  if (cell.is_null()) return "";
  std::string text = cell.is_string() ? cell.get<std::string>() : cell.dump();
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace

std::string cut_to_width(std::string_view text, size_t width) {
  if (display_width(text) <= width) return std::string(text);
  if (width == 0) return "";
  size_t keep = width - 1;  // code points before the marker
  size_t points = 0;
  size_t end = 0;
  for (; end < text.size(); ++end) {
    if (is_continuation(text[end])) continue;
    if (points == keep) break;
    ++points;
  }
  return std::string(text.substr(0, end)) + std::string(kEllipsis);
}

std::string format_table(const nlohmann::json& reply, int max_width, bool row_count) {
  std::vector<std::string> names = column_names(reply);
  if (names.empty()) return format_notices(reply).empty() ? "OK\n" : "";
  const nlohmann::json& rows = rows_of(reply);

  std::vector<std::vector<TableCell>> lines;
  std::vector<bool> numeric(names.size(), true);  // numbers and NULLs only, one number at least
  std::vector<bool> any_number(names.size(), false);
  for (const auto& row : rows) {
    std::vector<TableCell> cells;
    for (size_t i = 0; i < names.size(); ++i) {
      const nlohmann::json& cell = cell_at(row, i);
      if (cell.is_number()) any_number[i] = true;
      if (!cell.is_number() && !cell.is_null()) numeric[i] = false;
      cells.push_back({table_text(cell), cell.is_number()});
    }
    lines.push_back(std::move(cells));
  }
  std::vector<TableCell> header;
  for (size_t i = 0; i < names.size(); ++i) {
    numeric[i] = numeric[i] && any_number[i];
    header.push_back({table_text(names[i]), numeric[i]});
    if (!numeric[i]) continue;
    for (auto& cells : lines) cells[i].right = true;  // its NULLs too
  }

  std::vector<size_t> natural;
  std::vector<size_t> least;  // a cut number would read as another number: columns of them stay whole
  for (size_t i = 0; i < names.size(); ++i) {
    size_t w = display_width(header[i].text);
    for (const auto& cells : lines) w = std::max(w, display_width(cells[i].text));
    natural.push_back(w);
    least.push_back(numeric[i] ? w : std::min(w, kMinColumnWidth));
  }
  std::vector<size_t> widths = natural;
  if (max_width > 0) {
    size_t gaps = kColumnGap.size() * (names.size() - 1);
    size_t limit = static_cast<size_t>(max_width);
    widths = fit_widths(natural, least, limit > gaps ? limit - gaps : 0);
  }

  std::string out;
  append_line(out, header, widths);
  for (size_t i = 0; i < widths.size(); ++i) {
    if (i > 0) out += kRuleGap;
    out.append(widths[i], '-');
  }
  out += '\n';
  for (const auto& cells : lines) append_line(out, cells, widths);
  if (row_count) out += "(" + std::to_string(lines.size()) + (lines.size() == 1 ? " row)\n" : " rows)\n");
  return out;
}

std::string format_json(const nlohmann::json& reply) {
  std::vector<std::string> keys = unique_keys(column_names(reply));
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& row : rows_of(reply)) {
    nlohmann::ordered_json object = nlohmann::ordered_json::object();
    for (size_t i = 0; i < keys.size(); ++i) object[keys[i]] = nlohmann::ordered_json(cell_at(row, i));
    out.push_back(std::move(object));
  }
  return out.dump(2) + "\n";
}

std::string format_csv(const nlohmann::json& reply) {
  const nlohmann::json& columns = columns_of(reply);
  if (columns.empty()) return "";
  std::string out;
  auto append_row = [&](const nlohmann::json& row) {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (i > 0) out += ',';
      out += csv_field(cell_at(row, i));
    }
    out += '\n';
  };
  append_row(columns);
  for (const auto& row : rows_of(reply)) append_row(row);
  return out;
}

std::string format_notices(const nlohmann::json& reply) {
  std::string out;
  for (const auto& notice : field(reply, "notices", nlohmann::json::value_t::array)) {
    if (notice.is_string()) out += "probing: note: " + notice.get<std::string>() + "\n";
  }
  const nlohmann::json& truncated = field(reply, "truncated", nlohmann::json::value_t::boolean);
  if (out.empty() && truncated.is_boolean() && truncated.get<bool>()) {
    out += "probing: note: the result was cut at " + std::to_string(rows_of(reply).size()) + " rows\n";
  }
  return out;
}

int terminal_width() {
  if (::isatty(STDOUT_FILENO) != 0) {
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  }
  if (const char* env = ::getenv("COLUMNS"); env != nullptr) {
    char* end = nullptr;
    long columns = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && columns > 0 && columns < 100000) return static_cast<int>(columns);
  }
  return 0;
}

}  // namespace probing::cli
