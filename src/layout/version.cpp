#include "layout/version.h"

#include <cstdio>

namespace probing::layout {

Result<PythonVersion> parse_version(const char* text) {
  if (text == nullptr) return Status(Code::kInternal, "Py_GetVersion returned NULL");
  PythonVersion v;
  int consumed = 0;
  if (std::sscanf(text, "%d.%d.%d%n", &v.major, &v.minor, &v.micro, &consumed) < 2) {
    return Status(Code::kUnsupported, std::string("cannot read the Python version from '") + text + "'");
  }
  v.text = std::to_string(v.major) + "." + std::to_string(v.minor) + "." + std::to_string(v.micro);
  return v;
}

Status check_supported(const PythonVersion& v) {
  if (v.major == 3 && v.minor >= kOldestMinor && v.minor <= kNewestMinor) return {};
  return {Code::kUnsupported, "CPython " + v.text + " is not supported (probing supports 3." +
                                  std::to_string(kOldestMinor) + " to 3." +
                                  std::to_string(kNewestMinor) + ")"};
}

Status check_not_free_threaded(const PythonVersion& v, bool free_threaded) {
  if (!free_threaded) return {};
  return {Code::kUnsupported, "CPython " + v.text + " is a free-threaded build (no GIL), which probing does "
                              "not support yet: run the job on the default build of CPython " +
                              std::to_string(v.major) + "." + std::to_string(v.minor)};
}

}  // namespace probing::layout
