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

// All of the above, once (idempotent).
Status add_builtin_tables();

// Starts the thread that samples process.metrics every metrics.interval_s seconds.
void start_metrics_sampler();

}  // namespace probing::sql
