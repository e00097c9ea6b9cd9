// The one ptrace wrapper. Every ptrace request and every waitpid of hp-agent goes through here,
// so the rules that keep a target safe live in one place:
//  - seize, never attach: PTRACE_SEIZE does not send SIGSTOP, so the program never sees one;
//  - a signal that arrives while we hold a thread is handed straight back to it (it runs the
//    handler's set-up and then stops for us): nothing is kept in the agent, so nothing is lost
//    if the agent dies;
//  - new threads created while we work are traced automatically (PTRACE_O_TRACECLONE) and
//    stopped like the others, so no thread can run unseen during a transaction;
//  - never single-step: a tracer that dies with a step armed leaves the thread a SIGTRAP that
//    kills it. Syscall stops are reported with PTRACE_O_TRACESYSGOOD, whose stop code (0x85) is
//    not a valid signal, so a thread left in one by a dead tracer is not sent SIGTRAP either.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <elf.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#define HP_PTRACE_WRAPPER  // the one file allowed to call ptrace(2)
#include "arch_x86_64.h"
#include "core.h"

namespace hp {

// Test hook: HP_AGENT_KILL_AT_STEP=N makes the agent SIGKILL itself at its N-th step (a ptrace
// request, a write into a target, a remote call), so a test can kill it at every point of a
// change; HP_AGENT_KILL_AT_STEP=held, at its first step while the fence holds threads (the
// writes: fence.cc). Unset, it costs one relaxed load per step.
static std::atomic<long> gSteps{0};
static const char* const kKillAtText = getenv("HP_AGENT_KILL_AT_STEP");
static const bool kKillWhenHeld = kKillAtText && strcmp(kKillAtText, "held") == 0;
static const long kKillAt = kKillAtText && !kKillWhenHeld ? atol(kKillAtText) : 0L;
// Threads the fence holds at this instant, over every Tracee of this process (for the report).
static std::atomic<long> gHeld{0};

// Threads interrupted whose registers are not yet settled (see Tracee::Settle), over every
// Tracee of this process: HP_AGENT_KILL_REPORT=FILE gets the count at the kill, so a test can
// tell the one window in which a SIGKILL can still cost a blocked call an EINTR, and how many of
// our own threads stood aside at that instant (own_threads.cc).
static std::atomic<long> gUnsettled{0};

void KillPoint() {
  if (kKillWhenHeld) {
    if (gHeld.load() == 0) return;
  } else {
    if (kKillAt <= 0) return;
    if (gSteps.fetch_add(1, std::memory_order_relaxed) + 1 != kKillAt) return;
  }
  if (const char* report = getenv("HP_AGENT_KILL_REPORT")) {
    std::string line = "unsettled " + std::to_string(gUnsettled.load()) + " idled " +
                       std::to_string(OwnThreadsAside::IdledNow()) + " held " + std::to_string(gHeld.load()) + "\n";
    int fd = open(report, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      if (write(fd, line.data(), line.size()) < 0) {
      }
      close(fd);
    }
  }
  kill(getpid(), SIGKILL);
}

// Every ptrace request of the agent; the only call of ptrace(2) in the core (core.h poisons the
// name everywhere else, so a direct call elsewhere does not compile).
static long Ptrace(enum __ptrace_request req, pid_t tid, void* addr, void* data) {
  KillPoint();
  return ptrace(req, tid, addr, data);
}

static const long kSeizeOptions = PTRACE_O_TRACESYSGOOD;

static bool AlreadyTraced(pid_t pid, pid_t tracer, CoreError& err) {
  std::string comm;
  std::ifstream in("/proc/" + std::to_string(tracer) + "/comm");
  std::getline(in, comm);
  return Fail(err, "ALREADY_TRACED",
              "process " + std::to_string(pid) + " is already traced by PID " + std::to_string(tracer) +
                  (comm.empty() ? "" : " (" + comm + ")") + "; a process can have only one tracer, so nothing was changed");
}

bool CheckTraceable(pid_t pid, CoreError& err) {
  ProcStatus st = ReadProcStatus(pid);
  if (!st.ok) return Fail(err, "PROCESS_NOT_FOUND", "no running process with PID " + std::to_string(pid));
  if (StateIsGone(st.state))
    return Fail(err, "PROCESS_NOT_FOUND", "process " + std::to_string(pid) + " has exited (a zombie not yet reaped by its parent)");
  // libuv reaps the children of a Node process with waitpid(), which would swallow their ptrace stops.
  if (st.ppid == getpid())
    return Fail(err, "TARGET_IS_OUR_CHILD", "process " + std::to_string(pid) +
                                                 " is a child of this agent process; run hp-agent as a separate process to patch it");
  if (st.tracer != 0) return AlreadyTraced(pid, st.tracer, err);
  return true;
}

static bool SeizeError(pid_t pid, pid_t tid, int e, CoreError& err) {
  if (e == ESRCH) {
    if (!ProcessAlive(pid))
      return Fail(err, "PROCESS_NOT_FOUND", "no running process with PID " + std::to_string(pid));
    return Fail(err, "PROCESS_EXITED", "thread " + std::to_string(tid) + " of process " +
                                           std::to_string(pid) + " exited while attaching");
  }
  if (e == EPERM) {
    int tracer = TracerOf(pid);
    if (tracer > 0) return AlreadyTraced(pid, tracer, err);
    return Fail(err, "PERMISSION_DENIED",
                "not allowed to trace process " + std::to_string(pid) + ": " + ErrnoText(e));
  }
  return Fail(err, "ATTACH_FAILED",
              "cannot attach to thread " + std::to_string(tid) + ": " + ErrnoText(e));
}

Tracee::~Tracee() {
  DetachAll();
  ForgetHeld();
}

bool Tracee::Known(pid_t tid) const {
  for (auto& t : threads_)
    if (t.tid == tid) return true;
  return false;
}

static bool SleepsInEintrCall(pid_t pid, ThreadProbe& probe) {
  BlockedCallInfo call;
  return probe.Blocked(call) && StopCutsShort(pid, call);
}

static bool SleepsInEintrCall(pid_t pid, pid_t tid) {
  BlockedCallInfo call;
  return ReadBlockedCall(pid, tid, call) && StopCutsShort(pid, call);
}

// A thread left unseized for the fence, its /proc files opened now (before any stop).
static TracedThread Unseized(pid_t pid, pid_t tid) {
  TracedThread t;
  t.tid = tid;
  t.seized = false;
  t.probe = std::make_shared<ThreadProbe>(pid, tid);
  return t;
}

bool Tracee::SeizeOne(pid_t tid, CoreError& err) {
  // No TRACECLONE: the other threads run on untraced, so must any thread this one creates
  // before it stops (a traced child we never hear of would stay stopped until we exit).
  if (Ptrace(PTRACE_SEIZE, tid, nullptr, (void*)kSeizeOptions) != 0)
    return SeizeError(pid_, tid, errno, err);
  TracedThread t;
  t.tid = tid;
  threads_.push_back(t);
  return true;
}

bool Tracee::SeizeAll(CoreError& err) {
  // Threads may be created while we attach; once a thread is seized its children are traced
  // automatically, so a pass that finds nothing new means every thread is ours.
  for (int pass = 0; pass < 100; pass++) {
    bool found = false;
    for (pid_t tid : ListThreads(pid_)) {
      if (Known(tid)) continue;
      found = true;
      if (holdSleepers_) {
        // Seized, it could not be let go again without a stop (PTRACE_DETACH wants one), and a
        // stop is what would cut its call short: it stays unseized, and StopAll holds it.
        TracedThread t = Unseized(pid_, tid);
        if (SleepsInEintrCall(pid_, *t.probe)) {
          threads_.push_back(t);
          continue;
        }
      }
      if (Ptrace(PTRACE_SEIZE, tid, nullptr, (void*)(kSeizeOptions | PTRACE_O_TRACECLONE)) != 0) {
        int e = errno;
        if (e == ESRCH && tid != pid_) continue;  // the thread exited meanwhile: fine
        // A thread created by one we already seized is traced by us automatically, before its
        // parent's clone event has told us its tid: it is ours already. (TracerPid names the
        // tracer *thread*, and that is this very thread.)
        if (e == EPERM && TracerOfThread(pid_, tid) == pid_t(syscall(SYS_gettid))) {
          TracedThread t;
          t.tid = tid;
          threads_.push_back(t);
          continue;
        }
        // A thread that has just exited is still listed until it is reaped, and cannot be
        // attached (EPERM): it runs no code any more, so there is nothing to stop.
        if (e == EPERM && tid != pid_ && ThreadFinished(pid_, tid)) continue;
        return SeizeError(pid_, tid, e, err);
      }
      TracedThread t;
      t.tid = tid;
      threads_.push_back(t);
    }
    if (!found) return true;
  }
  return Fail(err, "ATTACH_FAILED",
              "process " + std::to_string(pid_) + " keeps creating threads faster than they can be seized");
}

// A thread's wait ended without a stop: it or the whole process exited. Only the process's
// end is an error; a thread that exits meanwhile has nothing left to stop.
bool Tracee::Vanished(TracedThread& t, CoreError& err) {
  if (t.unsettled) gUnsettled--;
  t.unsettled = false;
  t.gone = true;
  t.stopped = false;
  if (t.tid == pid_ || !ProcessAlive(pid_))
    return Fail(err, "PROCESS_EXITED", "process " + std::to_string(pid_) + " exited while it was being patched");
  return true;
}

// Waits until `t` is in the stop we asked for: the interrupt (PTRACE_EVENT_STOP) or a clone
// event. A signal that arrives first is handed straight back (the thread sets up its handler
// and then takes our stop), so the agent never holds a signal it could die with.
bool Tracee::WaitForStop(TracedThread& t, CoreError& err) {
  for (;;) {
    int status = 0;
    pid_t r = waitpid(t.tid, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || WIFEXITED(status) || WIFSIGNALED(status)) return Vanished(t, err);
    if (!WIFSTOPPED(status)) continue;
    int event = status >> 16;
    if (event == PTRACE_EVENT_STOP) {
      t.stopped = true;
      return Settle(t, err);
    }
    if (event == PTRACE_EVENT_CLONE) {
      unsigned long child = 0;
      Ptrace(PTRACE_GETEVENTMSG, t.tid, nullptr, &child);
      if (child && !Known(pid_t(child))) {
        TracedThread n;
        n.tid = pid_t(child);
        threads_.push_back(n);  // it starts in PTRACE_EVENT_STOP; StopAll waits for it
      }
      t.stopped = true;
      return Settle(t, err);
    }
    // Another event, or a signal-delivery-stop: let it go on (with its signal); our interrupt
    // is still pending and stops it next.
    int sig = event == 0 ? WSTOPSIG(status) : 0;
    if (Ptrace(PTRACE_CONT, t.tid, nullptr, (void*)(long)sig) != 0) return Vanished(t, err);
  }
}

// First thing at each stop: read the registers (kept for the caller) and, if our interrupt made
// a blocked call return EINTR, make it restart instead (KeepCallRestartable). From the interrupt
// to here is the one window where our death would still show a program an EINTR.
bool Tracee::Settle(TracedThread& t, CoreError& err) {
  t.haveRegs = false;
  bool ok = GetRegs(t, t.regs, err);
  if (ok) {
    user_regs_struct fixed = t.regs;
    if (KeepCallRestartable(fixed)) ok = SetRegs(t, fixed, err);
  }
  if (t.unsettled) gUnsettled--;
  t.unsettled = false;
  return ok;
}

bool Tracee::Interrupt(TracedThread& t) {
  if (Ptrace(PTRACE_INTERRUPT, t.tid, nullptr, nullptr) != 0) return false;
  if (!t.unsettled) gUnsettled++;
  t.unsettled = true;
  return true;
}

bool Tracee::RunToSyscall(TracedThread& t, uint64_t ip, uint64_t sp, bool exit, int64_t& result, CoreError& err) {
  const uint8_t want = exit ? PTRACE_SYSCALL_INFO_EXIT : PTRACE_SYSCALL_INFO_ENTRY;
  int sig = 0;
  for (;;) {
    if (Ptrace(PTRACE_SYSCALL, t.tid, nullptr, (void*)(long)sig) != 0) return Vanished(t, err);
    t.stopped = false;
    t.haveRegs = false;
    sig = 0;
    int status = 0;
    pid_t r;
    do r = waitpid(t.tid, &status, __WALL);
    while (r < 0 && errno == EINTR);
    if (r < 0 || WIFEXITED(status) || WIFSIGNALED(status)) return Vanished(t, err);
    if (!WIFSTOPPED(status)) continue;
    t.stopped = true;
    if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
      // A syscall stop: ours if made at the gadget with the stack we gave it. A signal handler
      // running on top of the borrowed thread makes calls of its own (another stack), let through.
      __ptrace_syscall_info info;
      memset(&info, 0, sizeof info);
      if (Ptrace(PTRACE_GET_SYSCALL_INFO, t.tid, (void*)sizeof info, &info) <= 0)
        return Fail(err, "PTRACE_FAILED", "cannot read the system call of thread " + std::to_string(t.tid) + ": " + ErrnoText(errno));
      if (info.op == want && info.instruction_pointer == ip && info.stack_pointer == sp) {
        if (exit) result = info.exit.rval;
        return true;
      }
      continue;
    }
    if ((status >> 16) == 0) sig = WSTOPSIG(status);  // a signal for the program: hand it back
  }
}
// A thread SeizeAll left to the fence, found awake (or not holdable) when the stop came.
bool Tracee::SeizeLate(TracedThread& t, CoreError& err) {
  if (t.seized || t.gone) return true;
  if (Ptrace(PTRACE_SEIZE, t.tid, nullptr, (void*)(kSeizeOptions | PTRACE_O_TRACECLONE)) != 0) {
    int e = errno;
    if ((e == ESRCH || (e == EPERM && ThreadFinished(pid_, t.tid))) && t.tid != pid_) {
      t.gone = true;
      return true;
    }
    return SeizeError(pid_, t.tid, e, err);
  }
  t.seized = true;
  return true;
}

bool Tracee::Stop(TracedThread& t, CoreError& err) {
  if (!SeizeLate(t, err)) return false;
  if (t.stopped || t.gone) return true;
  if (!Interrupt(t)) {
    if (errno == ESRCH && t.tid != pid_ && ProcessAlive(pid_)) {
      t.gone = true;
      return true;
    }
    return Fail(err, "PROCESS_EXITED",
                "process " + std::to_string(pid_) + " exited while it was being stopped");
  }
  return WaitForStop(t, err);
}

bool Tracee::StopAll(CoreError& err) {
  // Interrupt everyone first, then collect the stops: the threads stop in parallel, and the
  // pause is one stop latency, not the sum of them. Except the threads asleep in a call our
  // interrupt makes return EINTR (epoll_wait…): those SeizeAll left unseized are held by the
  // fence once the others are stopped (fence.cc), never interrupted; a seized one (it went to
  // sleep since) is stopped and settled on its own, after the others were sent on their way, so
  // the time in which our death would leave it an EINTR is one stop, not the whole collection.
  // Which threads those are is read before the first interrupt (one /proc read per thread,
  // while nothing is stopped yet), so the reads are not part of the pause.
  enum Kind : char { kTogether, kAlone, kSleeper };
  std::vector<size_t> alone, sleepers;
  std::vector<char> kind(threads_.size(), kTogether);
  bool unseen = false;  // a thread was left unseized: its children, if any, are not traced
  for (size_t i = 0; i < threads_.size(); i++) {
    TracedThread& t = threads_[i];
    if (t.stopped || t.gone) continue;
    bool eintrCall = t.probe ? SleepsInEintrCall(pid_, *t.probe) : SleepsInEintrCall(pid_, t.tid);
    if (!t.seized) {
      unseen = true;
      if (eintrCall && fence_.Prepare()) {
        sleepers.push_back(i);
        kind[i] = kSleeper;
        continue;
      }
      if (!SeizeLate(t, err)) return false;
      if (t.gone) continue;
    }
    if (eintrCall) {
      alone.push_back(i);
      kind[i] = kAlone;
    }
  }
  if (!sleepers.empty()) {
    std::vector<pid_t> tids;
    for (size_t i : sleepers) tids.push_back(threads_[i].tid);
    journal_ = WriteFenceJournal(pid_, tids);
  }
  stoppingSinceNs_ = MonotonicNs();
  for (size_t i = 0; i < kind.size(); i++) {
    TracedThread& t = threads_[i];
    if (t.stopped || t.gone || kind[i] != kTogether) continue;
    if (!Interrupt(t) && errno == ESRCH) {
      if (t.tid == pid_ && !ProcessAlive(pid_))
        return Fail(err, "PROCESS_EXITED",
                    "process " + std::to_string(pid_) + " exited while it was being stopped");
    }
  }
  for (size_t i : alone)
    if (!Stop(threads_[i], err)) return false;
  // threads_ may grow (clone events) while we wait, so index rather than iterate.
  for (size_t i = 0; i < threads_.size(); i++) {
    if (threads_[i].stopped || threads_[i].gone || !threads_[i].seized) continue;
    if (!WaitForStop(threads_[i], err)) return false;
  }
  bool raised = !sleepers.empty() && fence_.Raise();
  for (size_t i : sleepers)
    if (!HoldOrStop(threads_[i], raised, err)) return false;
  return !unseen || CatchUnseen(raised, err);
}

// Pinned behind the raised guard, a thread that /proc then shows asleep in its call (the kernel
// answers that only for a thread off CPU) cannot run again until we let it, so what /proc says
// now holds for the whole stop: where its call returns to, and its stack.
bool Tracee::Hold(TracedThread& t) {
  if (!fence_.Pin(t.tid)) return false;
  BlockedCallInfo call;
  uint64_t ran = 0;
  // Blocked in any call will do: it was found in one that a stop would cut short, and if it has
  // moved to another since, holding it is just as good.
  if (!t.probe->Blocked(call) || !t.probe->RunNs(ran)) {
    fence_.Unpin(t.tid);
    return false;
  }
  t.held = true;
  gHeld++;
  t.heldRunNs = ran;
  // As a stop would show it, blocked in a call that restarts: whoever checks the sites looks at
  // both the return address and the `syscall` before it.
  t.regs = user_regs_struct{};
  t.regs.rip = call.pc;
  t.regs.rsp = call.sp;
  t.regs.orig_rax = uint64_t(call.nr);
  t.regs.rax = uint64_t(-kERESTARTNOHAND);
  t.haveRegs = true;
  return true;
}

bool Tracee::HoldOrStop(TracedThread& t, bool raised, CoreError& err) {
  if (raised && Hold(t)) return true;
  // Awake by now (its call returned: no EINTR to fear), or not holdable: stopped like any other.
  return Stop(t, err);
}

// A thread created by an unseized one (before it was held, or seized late) is not traced: find
// it now that nothing unseen can run, and hold or stop it too. (Only when the kernel counts other
// than the threads we know: a stat of the folder costs far less than listing it.)
bool Tracee::CatchUnseen(bool raised, CoreError& err) {
  bool lateHeld = false;
  int known = 0;
  for (auto& t : threads_) known += !t.gone;
  for (bool found = ThreadCount(pid_) != known; found;) {
    found = false;
    for (pid_t tid : ListThreads(pid_)) {
      if (Known(tid)) continue;
      found = true;
      threads_.push_back(Unseized(pid_, tid));
      TracedThread& t = threads_.back();
      if (!(SleepsInEintrCall(pid_, *t.probe) ? HoldOrStop(t, raised, err) : Stop(t, err))) return false;
      lateHeld = lateHeld || t.held;
    }
  }
  if (lateHeld) {  // rare, and then in the pause: the journal must list every held thread
    std::vector<pid_t> tids;
    for (auto& t : threads_)
      if (t.held) tids.push_back(t.tid);
    DropFenceJournal(journal_);
    journal_ = WriteFenceJournal(pid_, tids);
  }
  return true;
}

bool Tracee::HeldStill(std::string& who) {
  bool holding = fence_.Holding();
  for (auto& t : threads_) {
    if (!t.held || t.gone) continue;
    uint64_t ran = 0;
    if (!holding || !t.probe->RunNs(ran) || ran != t.heldRunNs) {
      who = "thread " + std::to_string(t.tid) + " ran while it was held asleep in its call";
      return false;
    }
  }
  return true;
}

int Tracee::heldCount() const {
  int n = 0;
  for (auto& t : threads_) n += t.held && !t.gone;
  return n;
}

// The held threads go back to their own masks: each simply goes on with its call. (Their
// journal goes with ForgetHeld, once the stop is over: removing a file is not pause.)
void Tracee::LetHeldGo() {
  fence_.Release();
  for (auto& t : threads_) {
    if (!t.held) continue;
    t.held = false;
    gHeld--;
    t.haveRegs = false;
  }
}

void Tracee::ContinueAll() {
  LetHeldGo();
  for (auto& t : threads_) {
    if (!t.stopped || t.gone) continue;
    Ptrace(PTRACE_CONT, t.tid, nullptr, nullptr);
    t.stopped = false;
    t.haveRegs = false;
  }
}

void Tracee::ForgetHeld() {
  DropFenceJournal(journal_);
  journal_.clear();
}

void Tracee::Detach(TracedThread& t) {
  if (t.gone || !t.seized) return;  // never seized: nothing to let go
  if (!t.stopped) {
    // A thread must be stopped to be detached.
    CoreError ignored;
    if (!Stop(t, ignored) || t.gone) return;
  }
  Ptrace(PTRACE_DETACH, t.tid, nullptr, nullptr);
  t.stopped = false;
  t.haveRegs = false;
  t.gone = true;
}

void Tracee::DetachAll() {
  LetHeldGo();
  for (size_t i = 0; i < threads_.size(); i++) Detach(threads_[i]);
  threads_.clear();
}

bool Tracee::GetRegs(const TracedThread& t, user_regs_struct& regs, CoreError& err) {
  if (t.haveRegs) {
    regs = t.regs;
    return true;
  }
  if (Ptrace(PTRACE_GETREGS, t.tid, nullptr, &regs) != 0)
    return Fail(err, "PTRACE_FAILED", "cannot read registers of thread " + std::to_string(t.tid) + ": " + ErrnoText(errno));
  t.regs = regs;
  t.haveRegs = true;
  return true;
}

bool Tracee::SetRegs(const TracedThread& t, const user_regs_struct& regs, CoreError& err) {
  if (t.held) return Fail(err, "PTRACE_FAILED", "thread " + std::to_string(t.tid) + " is held, not stopped: its registers cannot be set");
  if (Ptrace(PTRACE_SETREGS, t.tid, nullptr, const_cast<user_regs_struct*>(&regs)) != 0) {
    t.haveRegs = false;
    return Fail(err, "PTRACE_FAILED", "cannot set registers of thread " + std::to_string(t.tid) + ": " + ErrnoText(errno));
  }
  t.regs = regs;
  t.haveRegs = true;
  return true;
}

bool Tracee::SetOptions(const TracedThread& t, long options, CoreError& err) {
  if (Ptrace(PTRACE_SETOPTIONS, t.tid, nullptr, (void*)(kSeizeOptions | options)) != 0)
    return Fail(err, "PTRACE_FAILED", "cannot set the trace options of thread " + std::to_string(t.tid) + ": " + ErrnoText(errno));
  return true;
}

bool Tracee::GetXState(const TracedThread& t, std::vector<uint8_t>& out, CoreError& err) {
  out.assign(64 * 1024, 0);  // larger than any XSAVE area; the kernel says how much it filled
  iovec io = {out.data(), out.size()};
  if (Ptrace(PTRACE_GETREGSET, t.tid, (void*)(long)NT_X86_XSTATE, &io) != 0)
    return Fail(err, "PTRACE_FAILED", "cannot read the FPU state of thread " + std::to_string(t.tid) + ": " + ErrnoText(errno));
  out.resize(io.iov_len);
  return true;
}

}  // namespace hp
