// Everything that differs between CPython versions is decided here, once.
#pragma once

#include <string>

#include "core/status.h"

namespace probing::layout {

struct PythonVersion {
  int major = 0;
  int minor = 0;
  int micro = 0;
  std::string text;  // "3.11.7"
};

constexpr int kOldestMinor = 9;   // 3.9
constexpr int kNewestMinor = 15;  // 3.15

// Parses the leading "X.Y.Z" of Py_GetVersion()'s text ("3.11.7 (main, ...) [GCC 12]").
Result<PythonVersion> parse_version(const char* py_get_version);

// kUnsupported, with a message naming the supported range, outside 3.9-3.13. probing never
// guesses at the layout of an interpreter it was not written for.
Status check_supported(const PythonVersion& v);

// A symbol that only free-threaded builds (3.13t, 3.14t: Py_GIL_DISABLED) export: their
// Py_DECREF calls it. Their objects and thread states are laid out differently, and the agent is
// built around the GIL, so such a build is refused.
constexpr const char* kFreeThreadedSymbol = "_Py_MergeZeroLocalRefcount";

// kUnsupported for a free-threaded build, naming it.
Status check_not_free_threaded(const PythonVersion& v, bool free_threaded);

}  // namespace probing::layout
