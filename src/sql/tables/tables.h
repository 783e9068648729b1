// The built-in tables, one file per schema. Each add_* registers its tables with the engine.
#pragma once

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "sql/engine.h"

namespace probing::sql {

Status add_process_tables(Engine& engine);      // process.info, env, memory, files, threads, metrics
Status add_python_tables(Engine& engine);       // python.backtrace, threads, modules, objects
Status add_information_schema(Engine& engine);  // information_schema.df_settings, tables, columns

// `probing PID memory snapshot` (POST /memory): a new base for python.memory_growth, in a process
// that traces its allocations (tracemalloc). {"traces", "bytes"}, or why not.
Result<nlohmann::json> memory_snapshot();

// `probing PID memory cuda-history start|stop|dump` (POST /memory): drives PyTorch's CUDA
// allocator history (torch.cuda.memory._record_memory_history); dump writes its snapshot (a
// pickle that pytorch.org/memory_viz opens) to `path`, a new file, in the target's filesystem.
// {"op", "path", "bytes"...}, or why not (no torch, CUDA not initialized, a PyTorch without it).
Result<nlohmann::json> cuda_history(const std::string& op, long long max_entries, const std::string& path);

// All of the above, once (idempotent).
Status add_builtin_tables();

// Starts the thread that samples process.metrics every metrics.interval_s seconds.
void start_metrics_sampler();

}  // namespace probing::sql
