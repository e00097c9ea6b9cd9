// Runs one system call inside the target, in one briefly hijacked thread, without calling any of
// the target's code: the thread is pointed at a `syscall` instruction (the gadget, found by the
// caller in the target's executable memory), stepped once, and put back exactly as it was.
//
// A thread we interrupt inside a blocking call (read, accept, nanosleep, futex wait...) shows
// rax = -ERESTART* and orig_rax = the call number. We run our call with orig_rax = -1 so the
// kernel does not "restart" *our* call, then restore the saved registers and let go from the
// single-step's signal stop: on its way back to user space the kernel sees orig_rax and the
// restart code again and restarts the original call (ERESTART_RESTARTBLOCK resumes nanosleep
// with the time that was left). The program never sees EINTR or a short sleep.
#include <errno.h>
#include <sys/ptrace.h>

#include <cstdio>

#include "core.h"

namespace hp {

static std::string Hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
  return buf;
}

bool RemoteSyscall(pid_t pid, pid_t tid, uint64_t gadget, uint64_t nr, const uint64_t args[6],
                   RemoteSyscallResult& out, CoreError& err) {
  if (!ProcessAlive(pid))
    return Fail(err, "PROCESS_NOT_FOUND", "no running process with PID " + std::to_string(pid));
  if (tid == 0) {
    // Prefer the main thread; a main thread that called pthread_exit is a zombie and cannot run.
    std::vector<pid_t> tids = ListThreads(pid);
    tid = pid;
    if (!ProcessAlive(pid) && !tids.empty()) tid = tids.back();
  }
  Tracee tracee(pid);
  if (!tracee.SeizeOne(tid, err)) return false;
  TracedThread& t = tracee.threads().front();
  if (!tracee.Stop(t, err)) return false;
  if (t.gone) return Fail(err, "PROCESS_EXITED", "thread " + std::to_string(tid) + " exited before the remote call");

  user_regs_struct saved;
  if (!tracee.GetRegs(t, saved, err)) return false;
  out.interruptedSyscall = IsRestartingSyscall(saved);
  out.tid = tid;

  user_regs_struct call = saved;
  call.rip = gadget;
  call.rax = nr;
  call.orig_rax = uint64_t(-1);
  call.rdi = args[0];
  call.rsi = args[1];
  call.rdx = args[2];
  call.r10 = args[3];
  call.r8 = args[4];
  call.r9 = args[5];
  if (!tracee.SetRegs(t, call, err)) return false;

  bool stepped = tracee.SingleStep(t, err);
  user_regs_struct after;
  bool read = stepped && !t.gone && tracee.GetRegs(t, after, err);
  // Whatever happened, the thread gets its own registers back before we let go.
  CoreError restoreErr;
  if (!t.gone) tracee.SetRegs(t, saved, restoreErr);
  if (!stepped || !read) return false;
  if (after.rip != gadget + 2) {
    return Fail(err, "REMOTE_SYSCALL_FAILED",
                "the remote system call did not complete in thread " + std::to_string(tid) + " (pc " +
                    Hex(after.rip) + ", expected " + Hex(gadget + 2) + ")");
  }
  if (restoreErr.set()) {
    err = restoreErr;
    err.unchanged = false;
    return false;
  }
  out.ret = int64_t(after.rax);
  return true;  // ~Tracee detaches, handing back any signal that arrived meanwhile
}

}  // namespace hp
