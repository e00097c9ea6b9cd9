// Runs system calls inside the target, in one briefly borrowed thread, without calling any of
// the target's code and without ever leaving that thread in a state only the agent could undo.
//
// The thread is pointed at a `syscall; ret` gadget with the call's number and arguments, and its
// stack pointer at a signal frame we wrote below its red zone: [frame] = the address of a
// `mov rax, 15; syscall` gadget, then the thread's own registers (a blocked call already wound
// back to restart), FPU state and signal mask (see resume.cc). We follow it through syscall
// stops (PTRACE_SYSCALL, never a single-step): at the exit of our call we read the result and
// either point it at the next call or give it its own registers back. If the agent dies at any
// instant, the thread completes the call it was given, `ret`s into rt_sigreturn and is back
// exactly where it was, its blocked call restarted: no signal, no EINTR, no lost registers.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>

#include "arch_x86_64.h"
#include "core.h"

namespace hp {

// The borrowed thread's stack below its red zone, from the top: the strings some calls take,
// the XSAVE area (64-byte aligned, as XRSTOR wants), the signal frame (where rsp points).
// A signal handler that runs on the thread meanwhile builds its frame below rsp - 128, so it
// cannot overwrite any of it. What was there is put back afterwards (it is dead stack anyway).
class StackScratch {
 public:
  StackScratch(pid_t pid, uint64_t rsp) : pid_(pid), top_(rsp - kRedZone) {}
  ~StackScratch() {
    if (saved_.empty() || !mem_) return;
    CoreError ignored;
    mem_->Write(low_, saved_.data(), saved_.size(), ignored);
  }
  uint64_t frame() const { return frame_; }
  // Lays out and writes everything; `strings` gets the address of every String argument.
  bool Place(const std::vector<RemoteCall>& calls, const user_regs_struct& resumeRegs, uint64_t sigreturnGadget,
             const std::vector<uint8_t>& xstate, uint64_t sigmask, std::vector<std::vector<uint64_t>>& strings, CoreError& err) {
    size_t total = 0;
    for (auto& c : calls)
      for (auto& a : c.args)
        if (a.kind == RemoteArg::String) total += (a.bytes.size() + 1 + 15) & ~size_t(15);
    if (total > 64 * 1024) return Fail(err, "BAD_REMOTE_CALL", "strings for a remote call are too long");
    uint64_t stringsAt = (top_ - total) & ~uint64_t(15);
    uint64_t fpstate = (stringsAt - xstate.size()) & ~uint64_t(63);
    frame_ = (fpstate - sizeof(RtSigFrame)) & ~uint64_t(15);
    low_ = frame_;
    mem_ = std::make_unique<MemFile>(pid_, err);
    if (!mem_->ok()) {
      mem_.reset();
      return false;
    }
    std::vector<uint8_t> saved(top_ - low_);
    if (!mem_->Read(low_, saved.data(), saved.size(), err)) return false;
    saved_ = std::move(saved);
    std::vector<uint8_t> image(top_ - low_, 0);
    strings.assign(calls.size(), std::vector<uint64_t>(6, 0));
    size_t at = stringsAt - low_;
    for (size_t i = 0; i < calls.size(); i++) {
      for (size_t j = 0; j < calls[i].args.size() && j < 6; j++) {
        const RemoteArg& a = calls[i].args[j];
        if (a.kind != RemoteArg::String) continue;
        memcpy(image.data() + at, a.bytes.data(), a.bytes.size());
        strings[i][j] = low_ + at;
        at += (a.bytes.size() + 1 + 15) & ~size_t(15);
      }
    }
    memcpy(image.data() + (fpstate - low_), xstate.data(), xstate.size());
    std::vector<uint8_t> frame = SigFrame(resumeRegs, sigreturnGadget, fpstate, sigmask);
    memcpy(image.data() + (frame_ - low_), frame.data(), frame.size());
    return mem_->Write(low_, image.data(), image.size(), err);
  }

 private:
  pid_t pid_;
  uint64_t top_;
  uint64_t low_ = 0;
  uint64_t frame_ = 0;
  std::vector<uint8_t> saved_;
  std::unique_ptr<MemFile> mem_;
};

// Writes the fill into the target's descriptor `fd` through /proc/PID/fd/N: plain file writes
// from our side while the borrowed thread waits, no ptrace involved.
static bool FillFile(pid_t pid, int64_t fd, const RemoteFill& fill, CoreError& err) {
  std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  int file = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (file < 0) return Fail(err, "REMOTE_FILL_FAILED", "cannot open " + path + ": " + ErrnoText(errno));
  bool ok = true;
  for (const auto& chunk : fill.chunks) {
    size_t done = 0;
    while (ok && done < chunk.second.size()) {
      KillPoint();
      ssize_t n = pwrite(file, chunk.second.data() + done, chunk.second.size() - done, off_t(chunk.first + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ok = Fail(err, "REMOTE_FILL_FAILED", "cannot write " + path + ": " + ErrnoText(n < 0 ? errno : EIO));
      else done += size_t(n);
    }
  }
  close(file);
  return ok;
}

static bool Matches(pid_t pid, uint64_t addr, const std::vector<uint8_t>& want, CoreError& err) {
  std::vector<uint8_t> got(want.size(), 0);
  std::vector<Range> probe{{addr, got.data(), got.size()}};
  return ReadRanges(pid, probe, err) && got == want;
}

// The caller may pass gadgets remembered from another process of the same program: make sure
// the bytes really are these instructions here before pointing a thread at them.
static bool CheckGadgets(pid_t pid, const Gadgets& g, CoreError& err) {
  static const std::vector<uint8_t> kSyscallRet(std::begin(kSyscallRetBytes), std::end(kSyscallRetBytes));
  static const std::vector<uint8_t> kSigreturn(std::begin(kSigreturnBytes), std::end(kSigreturnBytes));
  if (!Matches(pid, g.syscallRet, kSyscallRet, err))
    return Fail(err, "NO_SYSCALL_GADGET", "the bytes at " + Hex(g.syscallRet) + " in process " + std::to_string(pid) + " are not `syscall; ret`");
  if (!Matches(pid, g.sigreturn, kSigreturn, err))
    return Fail(err, "NO_SYSCALL_GADGET", "the bytes at " + Hex(g.sigreturn) + " in process " + std::to_string(pid) + " are not `mov rax, 15; syscall`");
  return true;
}

// Runs the calls in `t` (seized and stopped) and gives it its registers back. A call that fails
// (-errno), a failed fill or a result other than `expect` says stops the batch there.
static bool RunBatch(Tracee& tracee, TracedThread& t, const Gadgets& g, const std::vector<RemoteCall>& calls,
                     const RemoteFill* fill, const std::vector<std::pair<size_t, int64_t>>* expect,
                     RemoteBatchResult& out, CoreError& err) {
  pid_t pid = tracee.pid();
  pid_t tid = t.tid;
  user_regs_struct stopped;
  if (!tracee.GetRegs(t, stopped, err)) return false;  // as its stop settled them (no EINTR left)
  out.interruptedSyscall = IsRestartingSyscall(stopped);
  out.tid = tid;
  ThreadSafety safety;
  if (!ReadThreadSafety(pid, tid, safety)) return Fail(err, "PROCESS_EXITED", "thread " + std::to_string(tid) + " exited before the remote call");
  if (safety.shadowStack)
    return Fail(err, "REMOTE_UNSAFE", "thread " + std::to_string(tid) + " of process " + std::to_string(pid) +
                                          " has a shadow stack, which a borrowed thread's return path cannot pass; nothing was changed");
  std::vector<uint8_t> xstate;
  if (!tracee.GetXState(t, xstate, err) || !FrameXState(xstate, err)) return false;
  ResumeState resume = Resume(stopped);

  bool ok = true;
  bool ran = false;  // a call ran: the thread sits in its syscall-exit stop, not in our interrupt
  {
    StackScratch scratch(pid, stopped.rsp);
    std::vector<std::vector<uint64_t>> strings;
    ok = scratch.Place(calls, resume.frame, g.sigreturn, xstate, safety.sigmask, strings, err);
    for (size_t i = 0; ok && i < calls.size(); i++) {
      uint64_t args[6] = {0, 0, 0, 0, 0, 0};
      for (size_t j = 0; j < calls[i].args.size() && j < 6; j++) {
        const RemoteArg& a = calls[i].args[j];
        if (a.kind == RemoteArg::Value) args[j] = a.value;
        else if (a.kind == RemoteArg::String) args[j] = strings[i][j];
        else if (a.kind == RemoteArg::Result) {
          if (a.value >= out.results.size()) {
            ok = Fail(err, "BAD_REMOTE_CALL", "a remote call refers to the result of a later call");
            break;
          }
          args[j] = uint64_t(out.results[a.value]);
        }
      }
      if (!ok) break;
      user_regs_struct call = stopped;
      call.rip = g.syscallRet;
      call.rsp = scratch.frame();
      SetSyscall(call, calls[i].nr, args);  // orig_rax -1: the frame, not the kernel, has the thread's own call
      int64_t ret = 0;
      ok = tracee.SetRegs(t, call, err) && tracee.RunToSyscall(t, g.syscallRet + kSyscallInsnLen, scratch.frame(), true, ret, err);
      if (ok && t.gone) ok = Fail(err, "PROCESS_EXITED", "thread " + std::to_string(tid) + " exited during a remote call");
      if (!ok) break;
      ran = true;
      out.results.push_back(ret);
      if (ret < 0 && ret >= -4095) break;  // the caller sees which call failed and why
      if (expect) {
        bool unexpected = false;
        for (auto& e : *expect) unexpected = unexpected || (e.first == i && e.second != ret);
        if (unexpected) break;  // the caller sees the result and undoes what ran
      }
      if (fill && i == fill->afterCall) {
        // A failed fill stops the batch like a failed call: the caller undoes what ran.
        CoreError fillErr;
        if (!FillFile(pid, out.results[fill->fdCall], *fill, fillErr)) {
          out.fillError = fillErr.message;
          break;
        }
      }
    }
    // The thread gets its own registers back before the scratch goes: from then on it needs no
    // frame. In a syscall-exit stop the kernel restarts nothing, so the restart is already in
    // `direct`; in our interrupt stop the kernel does it itself.
    CoreError restoreErr;
    if (!t.gone) tracee.SetRegs(t, ran ? resume.direct : stopped, restoreErr);
    if (ok && restoreErr.set()) {
      err = restoreErr;
      err.unchanged = false;
      ok = false;
    }
  }
  return ok;
}

// Seizes the thread to borrow (tid 0: one asleep in a system call) and stops it.
static TracedThread* Borrow(Tracee& tracee, pid_t tid, RemoteBatchResult& out, CoreError& err) {
  if (tid == 0) tid = ThreadToBorrow(tracee.pid());
  if (!tracee.SeizeOne(tid, err)) return nullptr;
  TracedThread& t = tracee.threads().back();
  out.stoppedAtNs = MonotonicNs();
  if (!tracee.Stop(t, err)) return nullptr;
  if (t.gone) {
    Fail(err, "PROCESS_EXITED", "thread " + std::to_string(tid) + " exited before the remote call");
    return nullptr;
  }
  return &t;
}

bool RemoteSyscalls(pid_t pid, pid_t tid, const Gadgets& gadgets, const std::vector<RemoteCall>& calls,
                    const RemoteFill* fill, RemoteBatchResult& out, CoreError& err) {
  if (!CheckTraceable(pid, err)) return false;
  if (fill && (fill->fdCall > fill->afterCall || fill->afterCall >= calls.size()))
    return Fail(err, "BAD_REMOTE_CALL", "the fill names a call that is not in the batch");
  if (!CheckGadgets(pid, gadgets, err)) return false;
  OwnThreadsAside aside(pid);  // the borrowed thread is held: it must not wait for our other threads
  Tracee tracee(pid);  // its destructor detaches, handing back any signal that arrived meanwhile
  TracedThread* t = Borrow(tracee, tid, out, err);
  bool ok = t && RunBatch(tracee, *t, gadgets, calls, fill, nullptr, out, err);
  tracee.DetachAll();
  if (out.stoppedAtNs) out.heldNs = MonotonicNs() - out.stoppedAtNs;
  return ok;
}

bool RunPrelude(Tracee& tracee, const RemotePrelude& prelude, RemoteBatchResult& out, bool& complete, CoreError& err) {
  complete = false;
  const RemoteFill* fill = prelude.hasFill ? &prelude.fill : nullptr;
  if (fill && (fill->fdCall > fill->afterCall || fill->afterCall >= prelude.calls.size()))
    return Fail(err, "BAD_REMOTE_CALL", "the fill names a call that is not in the batch");
  if (!CheckGadgets(tracee.pid(), prelude.gadgets, err)) return false;
  TracedThread* t = Borrow(tracee, prelude.tid, out, err);
  if (!t || !RunBatch(tracee, *t, prelude.gadgets, prelude.calls, fill, &prelude.expect, out, err)) return false;
  complete = out.results.size() == prelude.calls.size() && out.fillError.empty();
  if (complete && !out.results.empty()) {
    int64_t last = out.results.back();
    complete = !(last < 0 && last >= -4095);
  }
  for (auto& e : prelude.expect)
    if (e.first >= out.results.size() || out.results[e.first] != e.second) complete = false;
  return true;
}

}  // namespace hp
