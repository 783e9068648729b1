// aarch64: AAPCS64 calling convention, registers through PTRACE_GETREGSET.
// Written to the same contract as arch_x86_64.cpp but NOT TESTED on real hardware yet.
#if defined(__aarch64__)

#include <elf.h>
#include <sys/ptrace.h>
#include <sys/uio.h>

#include <cerrno>
#include <string>

#include "inject/arch.h"

namespace probing::inject::arch {
namespace {

constexpr std::size_t kFpsimdMax = 4096;  // user_fpsimd_struct is 528 bytes

std::string tid_text(pid_t tid) { return "thread " + std::to_string(tid); }

Status get_regset(pid_t tid, int note, void* data, std::size_t& size, const char* what) {
  iovec iov{data, size};
  if (::ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(static_cast<long>(note)), &iov) != 0) {
    return errno_status(std::string("reading ") + what + " of " + tid_text(tid));
  }
  size = iov.iov_len;
  return Status::ok();
}

Status set_regset(pid_t tid, int note, const void* data, std::size_t size, const char* what) {
  iovec iov{const_cast<void*>(data), size};
  if (::ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(static_cast<long>(note)), &iov) != 0) {
    return errno_status(std::string("writing ") + what + " of " + tid_text(tid));
  }
  return Status::ok();
}

}  // namespace

const char* name() { return "aarch64"; }

Result<CpuState> read_state(pid_t tid) {
  CpuState state;
  std::size_t size = sizeof state.regs;
  PROBING_RETURN_IF_ERROR(get_regset(tid, NT_PRSTATUS, &state.regs, size, "registers"));
  size = sizeof state.syscallno;
  PROBING_RETURN_IF_ERROR(
      get_regset(tid, NT_ARM_SYSTEM_CALL, &state.syscallno, size, "system call number"));
  state.fp.resize(kFpsimdMax);
  size = state.fp.size();
  PROBING_RETURN_IF_ERROR(get_regset(tid, NT_PRFPREG, state.fp.data(), size, "FP/SIMD registers"));
  state.fp.resize(size);
  state.fp_note = NT_PRFPREG;
  // SVE/SME state beyond the low 128 bits of each vector register is not saved; code that is
  // interrupted at a system call or in the interpreter has none live (the ABI treats it as
  // clobbered by calls).
  return state;
}

Status write_general(pid_t tid, const CpuState& state) {
  PROBING_RETURN_IF_ERROR(set_regset(tid, NT_PRSTATUS, &state.regs, sizeof state.regs, "registers"));
  return set_regset(tid, NT_ARM_SYSTEM_CALL, &state.syscallno, sizeof state.syscallno,
                    "system call number");
}

Status write_state(pid_t tid, const CpuState& state) {
  if (state.fp_note == NT_PRFPREG) {
    PROBING_RETURN_IF_ERROR(
        set_regset(tid, NT_PRFPREG, state.fp.data(), state.fp.size(), "FP/SIMD registers"));
  }
  return write_general(tid, state);
}

std::uintptr_t program_counter(const CpuState& state) { return state.regs.pc; }
std::uintptr_t stack_pointer(const CpuState& state) { return state.regs.sp; }
std::uintptr_t return_value(const CpuState& state) { return state.regs.regs[0]; }

long stopped_syscall(const CpuState& state, long hint_nr, std::uintptr_t hint_pc) {
  if (state.syscallno >= 0) return state.syscallno;
  // Before a signal or ptrace stop the arm64 kernel already rewinds pc over the `svc` of an
  // interrupted call (pc - 4), restores x0, and forgets the number; /proc/TID/syscall, read
  // just before the stop, still knew it.
  if (hint_nr >= 0 && (state.regs.pc == hint_pc || state.regs.pc + 4 == hint_pc)) return hint_nr;
  return -1;
}

CallSetup prepare_call(const CpuState& saved, std::uintptr_t fn, std::uintptr_t arg0,
                       std::uintptr_t arg1, std::uintptr_t stack_top,
                       std::uintptr_t return_address) {
  CallSetup call;
  call.registers.regs = saved.regs;
  call.registers.regs.sp = (stack_top & ~std::uintptr_t{15}) - 16;
  call.registers.regs.pc = fn;
  call.registers.regs.regs[0] = arg0;
  call.registers.regs.regs[1] = arg1;
  call.registers.regs.regs[30] = return_address;  // lr
  call.registers.syscallno = -1;  // no restart logic on the way into the call
  return call;
}

std::optional<std::uintptr_t> call_target(const inspect::RemoteMemory& /*memory*/,
                                          std::uintptr_t /*return_address*/) {
  return std::nullopt;  // bl and the PLT's adrp/ldr/br are not decoded yet: lock waits are not borrowed
}

}  // namespace probing::inject::arch

#endif  // __aarch64__
