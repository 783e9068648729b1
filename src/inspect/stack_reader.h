// Reading the stack of a thread stopped with ptrace: the interface the injector judges threads
// by (docs/attach.md), implemented with libdw by native::open_stack_reader, so that the
// injector itself links no unwinder.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace probing::inspect {

// One frame of a stopped thread's stack.
struct StackFrame {
  std::uintptr_t pc = 0;      // frame 0: where the thread is; the others: their return address
  bool after_signal = false;  // a signal interrupted this frame: a handler runs above it
};

// A stopped thread's stack as far as it could be unwound.
struct StackRead {
  std::vector<StackFrame> frames;  // innermost first
  bool complete = false;           // unwound to the thread's first frame
  std::string error;               // why it is not complete
};

// Reads the stacks of threads the injector has stopped, so that a thread parked in a lock wait
// is judged by its whole stack (docs/attach.md). The injector itself links no unwinder: the CLI
// passes one (native::open_stack_reader). Called only from the thread that stopped the thread.
class StackReader {
 public:
  virtual ~StackReader() = default;
  // REQUIRES: `tid` is ptrace-stopped by the calling thread.
  virtual StackRead read(pid_t tid) = 0;
  // The name of the function whose code holds `address`; "" when that is not known for certain.
  virtual std::string function_at(std::uintptr_t address) = 0;
};
}  // namespace probing::inspect
