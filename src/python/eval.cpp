#include "python/eval.h"

#include "python/helpers.h"

namespace probing::python {

extern const char kAgentHelpersSource[];

namespace {

const HelperSource kAgentHelpers{kAgentHelpersSource, "probing._agent"};

}  // namespace

Result<nlohmann::json> run_eval(PythonRuntime& runtime, const std::string& code, const EvalOptions& options) {
  bool interrupted = false;
  HelperCall call(options.gil_timeout_s, options.timeout_s);
  call.tag = options.id;
  call.interrupted = &interrupted;
  Result<nlohmann::json> j = call_helper(runtime, kAgentHelpers, "run_eval",
                                         {code, options.max_output_bytes, options.interactive ? 1 : 0}, call);
  if (j.is_ok() || j.status().code() != Code::kInternal) return j;
  // run_eval reports the code's own exceptions and timeouts in its result: only an interrupt
  // landing outside its handlers gets here.
  if (interrupted) return Status(Code::kTimeout, "the code ran past its timeout and was interrupted");
  return Status(Code::kInternal, "the eval was interrupted: " + j.status().message());
}

Result<bool> is_unfinished_block(PythonRuntime& runtime, const std::string& code, double gil_timeout_s) {
  Result<nlohmann::json> j = call_helper(runtime, kAgentHelpers, "unfinished", nlohmann::json::array({code}),
                                         HelperCall(gil_timeout_s, 5.0));
  if (!j.is_ok()) return j.status();
  return j->is_boolean() && j->get<bool>();
}

Status interrupt_eval(PythonRuntime& runtime, const std::string& id, pid_t* thread) {
  auto type = [](const CApi& api) { return helper_attribute(api, kAgentHelpers, "ProbingInterrupt"); };
  return runtime.executor().interrupt_tagged(id, type, thread);
}

Result<nlohmann::json> complete(PythonRuntime& runtime, const std::string& text, const std::string& line,
                                double gil_timeout_s) {
  // Completion evaluates at most attribute lookups (rlcompleter); a few seconds is plenty.
  Result<nlohmann::json> j =
      call_helper(runtime, kAgentHelpers, "complete", {text, line}, HelperCall(gil_timeout_s, 5.0));
  if (!j.is_ok() && j.status().code() == Code::kInternal) return j.status().with_context("completing");
  return j;
}

}  // namespace probing::python
