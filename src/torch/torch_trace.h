// PyTorch tracing into python.torch_trace (hooks.cpp records, torch_trace.py names and counts steps
// in the target). It
// starts by itself: a watcher thread checks every half second whether the tracer's state matches
// torch.trace (installing it once torch is imported, retrying a change the GIL delayed);
// changing torch.trace or torch.sample_rate (SET, config, PUT /config) applies at once.
#pragma once

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace probing::torch {

// Starts the watcher and observes the torch.* settings. Once per process; needs the SQL tables
// (python.torch_trace) registered first.
void start_torch_tracing();

// Installs or removes the hooks now, as the settings say; the tracer's status
// {"installed", "step", "rows", "error", "cuda", ...}. kUnavailable without Python or torch.
Result<nlohmann::json> apply_torch_settings();

}  // namespace probing::torch
