// The built-in tables, one file per schema. Each add_* registers its tables with the engine.
#pragma once

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "sql/engine.h"

namespace probing::sql {

Status add_process_tables(Engine& engine);      // process.info, env, memory, files, threads, metrics
Status add_python_tables(Engine& engine);       // python.backtrace, threads, modules, objects
Status add_information_schema(Engine& engine);  // information_schema.df_settings, tables, columns

// `probing PID memory track start|stop` and `memory snapshot` (POST /memory): tracemalloc on (with
// `frames` frames per trace) or off, and a new base for python.memory_growth. What the helper
// answers ({"tracing", "note"} or {"traces", "bytes"}), or why not.
Result<nlohmann::json> memory_track(bool on, int frames);
Result<nlohmann::json> memory_snapshot();

// All of the above, once (idempotent).
Status add_builtin_tables();

// Starts the thread that samples process.metrics every metrics.interval_s seconds.
void start_metrics_sampler();

}  // namespace probing::sql
