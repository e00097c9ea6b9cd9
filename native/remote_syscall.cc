// Runs system calls inside the target, in one briefly hijacked thread, without calling any of
// the target's code: the thread is pointed at a `syscall` instruction (the gadget, found by the
// caller in the target's executable memory), stepped once per call, and put back exactly as it
// was. A batch runs several calls in one hijack; an argument may be the result of an earlier
// call of the batch, or a string the core places below the thread's stack red zone.
//
// A thread we interrupt inside a blocking call (read, accept, nanosleep, futex wait...) shows
// rax = -ERESTART* and orig_rax = the call number. We run our calls with orig_rax = -1 so the
// kernel does not "restart" *our* call, then restore the saved registers and let go from the
// single-step's signal stop: on its way back to user space the kernel sees orig_rax and the
// restart code again and restarts the original call (ERESTART_RESTARTBLOCK resumes nanosleep
// with the time that was left). The program never sees EINTR or a short sleep.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ptrace.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "core.h"

namespace hp {

static std::string Hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
  return buf;
}

// The x86-64 SysV red zone: 128 bytes below rsp that leaf code may use without moving rsp.
static const uint64_t kRedZone = 128;

// Strings go below the red zone of the hijacked thread's stack; this puts back what was there.
// One open /proc/PID/mem serves the save, the strings and the restore.
class StackScratch {
 public:
  StackScratch(pid_t pid, uint64_t rsp) : pid_(pid), top_((rsp - kRedZone) & ~uint64_t(15)) {}
  ~StackScratch() {
    if (saved_.empty() || !mem_) return;
    CoreError ignored;
    mem_->Write(top_ - saved_.size(), saved_.data(), saved_.size(), ignored);
  }
  // Lays out every string (NUL-terminated, 16-byte aligned) and returns their addresses.
  bool Place(const std::vector<RemoteCall>& calls, std::vector<std::vector<uint64_t>>& addrs, CoreError& err) {
    size_t total = 0;
    for (auto& c : calls)
      for (auto& a : c.args)
        if (a.kind == RemoteArg::String) total += (a.bytes.size() + 1 + 15) & ~size_t(15);
    addrs.assign(calls.size(), std::vector<uint64_t>(6, 0));
    if (total == 0) return true;
    if (total > 64 * 1024) return Fail(err, "BAD_REMOTE_CALL", "strings for a remote call are too long");
    mem_ = std::make_unique<MemFile>(pid_, err);
    if (!mem_->ok()) {
      mem_.reset();
      return false;
    }
    saved_.resize(total);
    uint64_t base = top_ - total;
    if (!mem_->Read(base, saved_.data(), total, err)) {
      saved_.clear();
      return false;
    }
    std::vector<uint8_t> image(total, 0);
    size_t at = 0;
    for (size_t i = 0; i < calls.size(); i++) {
      for (size_t j = 0; j < calls[i].args.size() && j < 6; j++) {
        const RemoteArg& a = calls[i].args[j];
        if (a.kind != RemoteArg::String) continue;
        memcpy(image.data() + at, a.bytes.data(), a.bytes.size());
        addrs[i][j] = base + at;
        at += (a.bytes.size() + 1 + 15) & ~size_t(15);
      }
    }
    return mem_->Write(base, image.data(), total, err);
  }

 private:
  pid_t pid_;
  uint64_t top_;
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
      ssize_t n = pwrite(file, chunk.second.data() + done, chunk.second.size() - done, off_t(chunk.first + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ok = Fail(err, "REMOTE_FILL_FAILED", "cannot write " + path + ": " + ErrnoText(n < 0 ? errno : EIO));
      else done += size_t(n);
    }
  }
  close(file);
  return ok;
}

// The caller may pass a gadget remembered from another process of the same program: make sure
// these two bytes really are `syscall` here before pointing a thread at them.
static bool CheckGadget(pid_t pid, uint64_t gadget, CoreError& err) {
  uint8_t insn[2] = {0, 0};
  std::vector<Range> probe{{gadget, insn, sizeof insn}};
  if (!ReadRanges(pid, probe, err)) return false;
  if (insn[0] != 0x0f || insn[1] != 0x05)
    return Fail(err, "NO_SYSCALL_GADGET", "the bytes at " + Hex(gadget) + " in process " + std::to_string(pid) + " are not a syscall instruction");
  return true;
}

// Runs the calls in `t` (seized and stopped) and gives it its registers back. A call that fails
// (-errno), a failed fill or a result other than `expect` says stops the batch there.
static bool RunBatch(Tracee& tracee, TracedThread& t, uint64_t gadget, const std::vector<RemoteCall>& calls,
                     const RemoteFill* fill, const std::vector<std::pair<size_t, int64_t>>* expect,
                     RemoteBatchResult& out, CoreError& err) {
  pid_t pid = tracee.pid();
  pid_t tid = t.tid;
  user_regs_struct saved;
  if (!tracee.GetRegs(t, saved, err)) return false;
  out.interruptedSyscall = IsRestartingSyscall(saved);
  out.tid = tid;

  bool ok = true;
  {
    StackScratch scratch(pid, saved.rsp);
    std::vector<std::vector<uint64_t>> strings;
    ok = scratch.Place(calls, strings, err);
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
      user_regs_struct call = saved;
      call.rip = gadget;
      call.rax = calls[i].nr;
      call.orig_rax = uint64_t(-1);
      call.rdi = args[0];
      call.rsi = args[1];
      call.rdx = args[2];
      call.r10 = args[3];
      call.r8 = args[4];
      call.r9 = args[5];
      user_regs_struct after;
      ok = tracee.SetRegs(t, call, err) && tracee.SingleStep(t, err) && !t.gone && tracee.GetRegs(t, after, err);
      if (!ok) break;
      if (after.rip != gadget + 2) {
        ok = Fail(err, "REMOTE_SYSCALL_FAILED",
                  "the remote system call did not complete in thread " + std::to_string(tid) + " (pc " + Hex(after.rip) +
                      ", expected " + Hex(gadget + 2) + ")");
        break;
      }
      int64_t ret = int64_t(after.rax);
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
  }  // the stack scratch is restored here, while the thread is still ours
  // Whatever happened, the thread gets its own registers back before we let go.
  CoreError restoreErr;
  if (!t.gone) tracee.SetRegs(t, saved, restoreErr);
  if (!ok) return false;
  if (restoreErr.set()) {
    err = restoreErr;
    err.unchanged = false;
    return false;
  }
  return true;
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

bool RemoteSyscalls(pid_t pid, pid_t tid, uint64_t gadget, const std::vector<RemoteCall>& calls,
                    const RemoteFill* fill, RemoteBatchResult& out, CoreError& err) {
  if (!CheckTraceable(pid, err)) return false;
  if (fill && (fill->fdCall > fill->afterCall || fill->afterCall >= calls.size()))
    return Fail(err, "BAD_REMOTE_CALL", "the fill names a call that is not in the batch");
  if (!CheckGadget(pid, gadget, err)) return false;
  Tracee tracee(pid);  // its destructor detaches, handing back any signal that arrived meanwhile
  TracedThread* t = Borrow(tracee, tid, out, err);
  return t && RunBatch(tracee, *t, gadget, calls, fill, nullptr, out, err);
}

bool RunPrelude(Tracee& tracee, const RemotePrelude& prelude, RemoteBatchResult& out, bool& complete, CoreError& err) {
  complete = false;
  const RemoteFill* fill = prelude.hasFill ? &prelude.fill : nullptr;
  if (fill && (fill->fdCall > fill->afterCall || fill->afterCall >= prelude.calls.size()))
    return Fail(err, "BAD_REMOTE_CALL", "the fill names a call that is not in the batch");
  if (!CheckGadget(tracee.pid(), prelude.gadget, err)) return false;
  TracedThread* t = Borrow(tracee, prelude.tid, out, err);
  if (!t || !RunBatch(tracee, *t, prelude.gadget, prelude.calls, fill, &prelude.expect, out, err)) return false;
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
