// How a thread we stopped goes back to its own work, with us or without us.
//
// A thread interrupted inside a blocking call shows the call's number in orig_rax and, in rax,
// either -ERESTART* (the kernel restarts the call on the way back to user space) or, for the
// calls Linux does not restart after a stop (epoll_wait, sigtimedwait, a socket with a timeout…),
// -EINTR, which the program would see. KeepCallRestartable turns the latter into
// -ERESTARTNOHAND: restarted when no handler runs, -EINTR when one does — what the program would
// have seen had we never stopped it (apart from a timeout that starts again: Linux keeps no
// record of when the wait began).
//
// A borrowed thread runs our system calls at a `syscall; ret` gadget whose `ret` goes to a
// `mov rax, 15; syscall` (the C library's own signal-return trampoline), over a signal frame we
// wrote below its stack's red zone holding its own registers, FPU state and signal mask. If the
// agent dies at any instant, the thread finishes the call it was given, returns through
// rt_sigreturn into exactly the state it was stopped in, and restarts its own blocked call.
#include <cstring>

#include "arch_x86_64.h"
#include "core.h"

namespace hp {

// Calls that return -EINTR (not a restart code) after a stop or a signal with no handler, and
// that can be made again with the same arguments when nothing was done (x86-64 numbers).
bool RestartableAfterEintr(uint64_t nr) {
  switch (nr) {
    case 0:    // read (a socket with SO_RCVTIMEO, inotify)
    case 1:    // write
    case 17:   // pread64
    case 18:   // pwrite64
    case 19:   // readv
    case 20:   // writev
    case 43:   // accept
    case 44:   // sendto
    case 45:   // recvfrom
    case 46:   // sendmsg
    case 47:   // recvmsg
    case 65:   // semop
    case 69:   // msgsnd
    case 70:   // msgrcv
    case 128:  // rt_sigtimedwait
    case 208:  // io_getevents
    case 220:  // semtimedop
    case 232:  // epoll_wait
    case 242:  // mq_timedsend
    case 243:  // mq_timedreceive
    case 281:  // epoll_pwait
    case 288:  // accept4
    case 299:  // recvmmsg
    case 307:  // sendmmsg
    case 333:  // io_pgetevents
    case 441:  // epoll_pwait2
      return true;
    default:
      return false;
  }
}

bool IsRestartingSyscall(const user_regs_struct& regs) {
  int64_t rax = int64_t(regs.rax);
  return int64_t(regs.orig_rax) >= 0 && (rax == -kERESTARTSYS || rax == -kERESTARTNOINTR || rax == -kERESTARTNOHAND ||
                                         rax == -kERESTART_RESTARTBLOCK);
}

bool KeepCallRestartable(user_regs_struct& regs) {
  if (int64_t(regs.orig_rax) < 0 || int64_t(regs.rax) != -kEINTR || !RestartableAfterEintr(regs.orig_rax)) return false;
  regs.rax = uint64_t(-kERESTARTNOHAND);
  return true;
}

ResumeState Resume(const user_regs_struct& stopped) {
  ResumeState r;
  r.direct = stopped;
  r.direct.orig_rax = uint64_t(-1);  // set explicitly below: nothing for the kernel to redo
  r.frame = r.direct;
  if (!IsRestartingSyscall(stopped)) return r;
  // What the kernel does when no handler runs: the call again (rip back over `syscall`).
  r.direct.rip -= kSyscallInsnLen;
  r.frame.rip -= kSyscallInsnLen;
  r.direct.rax = stopped.orig_rax;
  r.frame.rax = stopped.orig_rax;
  // A sleep that keeps its remaining time (nanosleep…) goes on through restart_syscall, which
  // needs the thread's restart block — and rt_sigreturn clears it: through the frame the sleep
  // starts again whole (longer, never shorter).
  if (int64_t(stopped.rax) == -kERESTART_RESTARTBLOCK) r.direct.rax = kNrRestartSyscall;
  return r;
}

std::vector<uint8_t> SigFrame(const user_regs_struct& regs, uint64_t sigreturnGadget, uint64_t fpstate, uint64_t sigmask) {
  RtSigFrame f;
  memset(&f, 0, sizeof f);
  f.pretcode = sigreturnGadget;
  f.uc_flags = kUcFpXstate | kUcSigcontextSs | kUcStrictRestoreSs;
  // rt_sigreturn re-installs uc_stack with sigaltstack(), ignoring its result: a mode that is
  // none of 0, SS_ONSTACK, SS_DISABLE is refused (EINVAL) and leaves the thread's own alone.
  f.uc_stack.ss_flags = 3;
  SigContext64& c = f.uc_mcontext;
  c.r8 = regs.r8, c.r9 = regs.r9, c.r10 = regs.r10, c.r11 = regs.r11;
  c.r12 = regs.r12, c.r13 = regs.r13, c.r14 = regs.r14, c.r15 = regs.r15;
  c.di = regs.rdi, c.si = regs.rsi, c.bp = regs.rbp, c.bx = regs.rbx;
  c.dx = regs.rdx, c.ax = regs.rax, c.cx = regs.rcx, c.sp = regs.rsp;
  c.ip = regs.rip, c.flags = regs.eflags;
  c.cs = uint16_t(regs.cs), c.ss = uint16_t(regs.ss), c.fs = uint16_t(regs.fs), c.gs = uint16_t(regs.gs);
  c.fpstate = fpstate;
  f.uc_sigmask = sigmask;
  std::vector<uint8_t> out(sizeof f);
  memcpy(out.data(), &f, sizeof f);
  return out;
}

bool FrameXState(std::vector<uint8_t>& xstate, CoreError& err) {
  // ptrace puts XCR0 (the enabled features) in the first 8 software-reserved bytes; a signal
  // frame wants struct _fpx_sw_bytes there: magic1, extended_size, xfeatures, xstate_size.
  if (xstate.size() < 576 || xstate.size() > 1u << 20)
    return Fail(err, "REMOTE_UNSAFE", "the kernel gave an FPU state a signal frame cannot carry; nothing was changed");
  uint64_t xcr0;
  memcpy(&xcr0, xstate.data() + kFxSwBytesOffset, 8);
  struct {
    uint32_t magic1, extendedSize;
    uint64_t xfeatures;
    uint32_t xstateSize, padding[7];
  } sw = {kFpXstateMagic1, uint32_t(xstate.size() + 4), xcr0, uint32_t(xstate.size()), {}};
  static_assert(sizeof sw == 48, "struct _fpx_sw_bytes");
  memcpy(xstate.data() + kFxSwBytesOffset, &sw, sizeof sw);
  uint32_t magic2 = kFpXstateMagic2;
  const uint8_t* m = reinterpret_cast<const uint8_t*>(&magic2);
  xstate.insert(xstate.end(), m, m + 4);
  return true;
}

}  // namespace hp
