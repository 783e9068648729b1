// Ctrl-C while the CLI waits on code running in the target: the code is interrupted there, and
// the user is told at once when that takes effect; a second Ctrl-C stops waiting.
#pragma once

#include <signal.h>

#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/common.h"

namespace probing::cli {

// While alive, SIGINT writes a byte to a pipe instead of ending the CLI (reads at a prompt go
// on: SA_RESTART); the previous disposition comes back after. One at a time in a process.
class SigintPipe {
 public:
  SigintPipe();
  ~SigintPipe();
  SigintPipe(const SigintPipe&) = delete;
  SigintPipe& operator=(const SigintPipe&) = delete;

  bool ok() const { return ok_; }
  int fd() const;  // readable after a Ctrl-C
  void drain() const;

 private:
  bool ok_ = false;
  struct sigaction previous_ {};
};

// Sends POST /eval `body` (which names the eval with "id") on `client` and waits up to `wait_s`
// for the reply. The first Ctrl-C on `sigint` asks the agent to interrupt that eval and says on
// stderr, at once, when the interrupt lands (and, for a local target, where the code is now); a
// second stops waiting, says the code may still run there, and gives nullopt.
std::optional<Result<client::Response>> eval_interruptibly(const Context& ctx,
                                                           std::shared_ptr<client::Client> client,
                                                           const nlohmann::json& body, double wait_s,
                                                           const SigintPipe& sigint);

}  // namespace probing::cli
