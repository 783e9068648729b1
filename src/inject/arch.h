// The processor-specific half of the injector: registers, calling convention, stop states.
// One implementation per architecture (arch_x86_64.cpp, arch_aarch64.cpp); exactly one is
// compiled in, chosen by the compiler's target.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/status.h"

namespace probing::inspect {
class RemoteMemory;
}

namespace probing::inject::arch {

// Everything of a stopped thread's CPU state that a function call can change.
struct CpuState {
  user_regs_struct regs{};
#if defined(__aarch64__)
  int syscallno = -1;  // NT_ARM_SYSTEM_CALL
#endif
  std::vector<std::uint8_t> fp;  // the FP/vector register set, as the kernel handed it out
  int fp_note = 0;               // the regset `fp` came from (NT_X86_XSTATE, NT_PRFPREG)
};

// Bytes below the stack pointer that the ABI lets the interrupted code use without moving it.
#if defined(__x86_64__)
inline constexpr std::size_t kRedZone = 128;
#else
inline constexpr std::size_t kRedZone = 128;  // none on aarch64; kept as a margin
#endif

// Name of the architecture, for messages.
const char* name();

// REQUIRES: tid is a ptrace-stopped tracee of the calling thread.
Result<CpuState> read_state(pid_t tid);
// Writes back general and FP registers. REQUIRES: as read_state.
Status write_state(pid_t tid, const CpuState& state);
// Writes the general registers only (setting up a call). REQUIRES: as read_state.
Status write_general(pid_t tid, const CpuState& state);

std::uintptr_t program_counter(const CpuState& state);
std::uintptr_t stack_pointer(const CpuState& state);
std::uintptr_t return_value(const CpuState& state);

// The system call the thread was in when it stopped, or -1. `hint_nr`/`hint_pc` come from
// /proc/TID/syscall read just before the stop (-1/0 when unknown); architectures whose stop
// state forgets the call number (aarch64) use them when the program counter agrees.
long stopped_syscall(const CpuState& state, long hint_nr, std::uintptr_t hint_pc);

// A call `fn(arg0, arg1)` that returns to `return_address`.
struct CallSetup {
  CpuState registers;                 // general registers to write (fp is not used)
  std::uintptr_t stack_address = 0;   // where `stack_bytes` go (the return address, on x86_64)
  std::vector<std::uint8_t> stack_bytes;
};
// Builds the registers for the call from the saved state, with the stack pointer 16-byte
// aligned at the call and everything it writes in [stack_top - kCallStackBytes, stack_top).
inline constexpr std::size_t kCallStackBytes = 32;
CallSetup prepare_call(const CpuState& saved, std::uintptr_t fn, std::uintptr_t arg0,
                       std::uintptr_t arg1, std::uintptr_t stack_top,
                       std::uintptr_t return_address);

// The function called by the call instruction that ends just before `return_address`, with a
// PLT stub followed to the function it jumps to (through its GOT slot). nullopt when that
// instruction is not a call this decodes (a call through a register) or cannot be read; always
// nullopt on aarch64 for now.
std::optional<std::uintptr_t> call_target(const inspect::RemoteMemory& memory,
                                          std::uintptr_t return_address);

}  // namespace probing::inject::arch
