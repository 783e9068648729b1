// x86_64: System V calling convention, registers through PTRACE_GETREGS and NT_X86_XSTATE.
#if defined(__x86_64__)

#include <elf.h>
#include <sys/ptrace.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "inject/arch.h"
#include "inspect/memory.h"

namespace probing::inject::arch {
namespace {

// Large enough for every XSAVE layout shipped so far (AMX tiles included: about 11 KiB).
constexpr std::size_t kXstateMax = 64 * 1024;
constexpr unsigned long kDirectionFlag = 0x400;

std::string tid_text(pid_t tid) { return "thread " + std::to_string(tid); }

}  // namespace

const char* name() { return "x86_64"; }

Result<CpuState> read_state(pid_t tid) {
  CpuState state;
  if (::ptrace(PTRACE_GETREGS, tid, nullptr, &state.regs) != 0) {
    return errno_status("reading registers of " + tid_text(tid));
  }
  state.fp.resize(kXstateMax);
  iovec iov{state.fp.data(), state.fp.size()};
  if (::ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) == 0) {
    state.fp.resize(iov.iov_len);
    state.fp_note = NT_X86_XSTATE;
    return state;
  }
  // No XSAVE (old CPU or kernel): the legacy FXSAVE area still covers x87 and SSE.
  state.fp.resize(sizeof(user_fpregs_struct));
  if (::ptrace(PTRACE_GETFPREGS, tid, nullptr, state.fp.data()) != 0) {
    return errno_status("reading FP registers of " + tid_text(tid));
  }
  state.fp_note = NT_PRFPREG;
  return state;
}

Status write_general(pid_t tid, const CpuState& state) {
  if (::ptrace(PTRACE_SETREGS, tid, nullptr, &state.regs) != 0) {
    return errno_status("writing registers of " + tid_text(tid));
  }
  return Status::ok();
}

Status write_state(pid_t tid, const CpuState& state) {
  // FP/vector state first, then the general registers.
  if (state.fp_note == NT_X86_XSTATE) {
    std::vector<std::uint8_t> copy = state.fp;  // SETREGSET takes a non-const iovec
    iovec iov{copy.data(), copy.size()};
    if (::ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0) {
      return errno_status("writing XSAVE state of " + tid_text(tid));
    }
  } else if (state.fp_note == NT_PRFPREG) {
    std::vector<std::uint8_t> copy = state.fp;
    if (::ptrace(PTRACE_SETFPREGS, tid, nullptr, copy.data()) != 0) {
      return errno_status("writing FP registers of " + tid_text(tid));
    }
  }
  return write_general(tid, state);
}

std::uintptr_t program_counter(const CpuState& state) { return state.regs.rip; }
std::uintptr_t stack_pointer(const CpuState& state) { return state.regs.rsp; }
std::uintptr_t return_value(const CpuState& state) { return state.regs.rax; }

long stopped_syscall(const CpuState& state, long /*hint_nr*/, std::uintptr_t /*hint_pc*/) {
  // At a ptrace stop on the way out of a system call, orig_rax holds its number (and rax its
  // result, -ERESTART* when it was interrupted); -1 when the thread entered the kernel otherwise.
  const long nr = static_cast<long>(state.regs.orig_rax);
  return nr >= 0 ? nr : -1;
}

CallSetup prepare_call(const CpuState& saved, std::uintptr_t fn, std::uintptr_t arg0,
                       std::uintptr_t arg1, std::uintptr_t stack_top,
                       std::uintptr_t return_address) {
  CallSetup call;
  call.registers.regs = saved.regs;
  user_regs_struct& r = call.registers.regs;
  // At a function's first instruction rsp + 8 is a multiple of 16 (the return address on top).
  const std::uintptr_t aligned = (stack_top & ~std::uintptr_t{15}) - 16;
  const std::uintptr_t sp = aligned - 8;
  r.rsp = sp;
  r.rip = fn;
  r.rdi = arg0;
  r.rsi = arg1;
  r.rax = 0;  // no vector registers used by a variadic callee
  // -1: "not in a system call", so the kernel applies no syscall-restart logic to this setup.
  r.orig_rax = static_cast<unsigned long long>(-1);
  r.eflags &= ~kDirectionFlag;  // the ABI requires DF clear at a call
  call.stack_address = sp;
  call.stack_bytes.resize(sizeof(std::uint64_t));
  const std::uint64_t ret = return_address;
  std::memcpy(call.stack_bytes.data(), &ret, sizeof ret);
  return call;
}

namespace {

std::int32_t rel32_at(const std::vector<std::uint8_t>& bytes, std::size_t at) {
  std::int32_t v;
  std::memcpy(&v, bytes.data() + at, sizeof v);
  return v;
}

std::optional<std::uintptr_t> read_pointer(const inspect::RemoteMemory& memory, std::uintptr_t address) {
  Result<std::vector<std::uint8_t>> bytes = memory.read(address, sizeof(std::uint64_t));
  if (!bytes) return std::nullopt;
  std::uint64_t v;
  std::memcpy(&v, bytes->data(), sizeof v);
  return v;
}

}  // namespace

std::optional<std::uintptr_t> call_target(const inspect::RemoteMemory& memory,
                                          std::uintptr_t return_address) {
  Result<std::vector<std::uint8_t>> call = memory.read(return_address - 6, 6);
  if (!call) return std::nullopt;
  std::uintptr_t target = 0;
  if ((*call)[1] == 0xe8) {  // call rel32
    target = return_address + rel32_at(*call, 2);
  } else if ((*call)[0] == 0xff && (*call)[1] == 0x15) {  // call *rel32(%rip): -fno-plt
    std::optional<std::uintptr_t> slot = read_pointer(memory, return_address + rel32_at(*call, 2));
    if (!slot) return std::nullopt;
    return *slot;
  } else {
    return std::nullopt;
  }
  // A PLT stub: [endbr64] [bnd] jmp *rel32(%rip), its GOT slot holding the function.
  Result<std::vector<std::uint8_t>> stub = memory.read(target, 16);
  if (!stub) return target;
  std::size_t at = 0;
  const std::uint8_t endbr64[] = {0xf3, 0x0f, 0x1e, 0xfa};
  if (std::memcmp(stub->data(), endbr64, sizeof endbr64) == 0) at += sizeof endbr64;
  if ((*stub)[at] == 0xf2) ++at;                                      // bnd
  if ((*stub)[at] != 0xff || (*stub)[at + 1] != 0x25) return target;  // not a stub: the function
  const std::uintptr_t next = target + at + 6;
  std::optional<std::uintptr_t> slot = read_pointer(memory, next + rel32_at(*stub, at + 2));
  return slot ? slot : std::optional<std::uintptr_t>(target);
}

}  // namespace probing::inject::arch

#endif  // __x86_64__
