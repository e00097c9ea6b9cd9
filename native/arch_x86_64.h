// x86-64 Linux facts the core relies on, in one place.
#pragma once

#include <sys/user.h>

#include <cstdint>

namespace hp {

// The SysV red zone: 128 bytes below rsp that leaf code may use without moving rsp.
constexpr uint64_t kRedZone = 128;
// `syscall` is two bytes (0f 05): a restarted call resumes at rip - 2.
constexpr uint64_t kSyscallInsnLen = 2;

constexpr int64_t kEINTR = 4;
// What a call interrupted by a signal (or by our stop) leaves in rax; the kernel restarts it on
// the way back to user space unless a handler runs.
constexpr int64_t kERESTARTSYS = 512;
constexpr int64_t kERESTARTNOINTR = 513;
constexpr int64_t kERESTARTNOHAND = 514;
constexpr int64_t kERESTART_RESTARTBLOCK = 516;

// The two instructions of the target's C library a borrowed thread runs (see remote_syscall.cc):
//   0f 05        syscall        a call with our registers …
//   c3           ret            … then back into the signal frame's return address:
//   48 c7 c0 0f 00 00 00   mov rax, 15 (rt_sigreturn)
//   0f 05                  syscall      glibc's __restore_rt, which gives the thread its own registers
constexpr uint8_t kSyscallRetBytes[] = {0x0f, 0x05, 0xc3};
constexpr uint8_t kSigreturnBytes[] = {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};

// The system call convention: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9; the kernel
// keeps the number in orig_rax for a restart (-1: nothing to restart).
inline void SetSyscall(user_regs_struct& r, uint64_t nr, const uint64_t (&args)[6]) {
  r.rax = nr;
  r.orig_rax = uint64_t(-1);
  r.rdi = args[0];
  r.rsi = args[1];
  r.rdx = args[2];
  r.r10 = args[3];
  r.r8 = args[4];
  r.r9 = args[5];
}

constexpr uint64_t kNrRtSigreturn = 15;
constexpr uint64_t kNrRestartSyscall = 219;

// The frame rt_sigreturn reads (arch/x86/include/asm/sigframe.h, 64-bit), without the siginfo,
// which only has to be readable: the kernel's struct sigcontext_64 and struct ucontext.
struct SigContext64 {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
  uint64_t di, si, bp, bx, dx, ax, cx, sp, ip, flags;
  uint16_t cs, gs, fs, ss;
  uint64_t err, trapno, oldmask, cr2;
  uint64_t fpstate;  // an XSAVE area (64-byte aligned), 0 would reset the FPU
  uint64_t reserved1[8];
};
static_assert(sizeof(SigContext64) == 256, "struct sigcontext_64");
struct KernelStack {
  uint64_t ss_sp;
  int32_t ss_flags;
  int32_t pad;
  uint64_t ss_size;
};
struct RtSigFrame {
  uint64_t pretcode;  // where the handler returns: a `mov rax, 15; syscall`
  uint64_t uc_flags;
  uint64_t uc_link;
  KernelStack uc_stack;
  SigContext64 uc_mcontext;
  uint64_t uc_sigmask;
  uint8_t info[128];  // struct siginfo: read by access_ok only
};
static_assert(sizeof(RtSigFrame) == 8 + 304 + 128, "struct rt_sigframe");
constexpr uint64_t kUcFpXstate = 0x1, kUcSigcontextSs = 0x2, kUcStrictRestoreSs = 0x4;
// fpx_sw_bytes.magic1 sits in the FXSAVE area's software-reserved bytes; magic2 follows the
// XSAVE area. A frame without them restores x87/SSE only.
constexpr uint32_t kFpXstateMagic1 = 0x46505853;
constexpr uint32_t kFpXstateMagic2 = 0x46505845;
constexpr size_t kFxSwBytesOffset = 464;

}  // namespace hp
