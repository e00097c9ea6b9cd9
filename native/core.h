// The native core of hp-agent: process control only. It knows nothing about packages, ELF or
// policy; TypeScript decides *what* to write, this code decides nothing but *how* to stop, write
// and resume a process safely.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/types.h>
#include <sys/user.h>

#include <atomic>

#include <cstdint>
#include <string>
#include <deque>
#include <memory>
#include <vector>

namespace hp {

class ThreadProbe;

// Every failure carries a stable code (mapped to an HpError in TypeScript) and a message that
// says what was refused and why. `unchanged` is false only when a rollback itself failed.
struct CoreError {
  std::string code;
  std::string message;
  bool unchanged = true;
  bool set() const { return !code.empty(); }
};

// ---- util.cc ---------------------------------------------------------------------------------
bool Fail(CoreError& err, const std::string& code, const std::string& message);
std::string ErrnoText(int e);
uint64_t MonotonicNs();
std::string Hex(uint64_t v);  // 0x… for messages

// A step of the agent's work on a target (see HP_AGENT_KILL_AT_STEP in ptrace_ops.cc).
void KillPoint();

// ---- own_threads.cc: the agent's other threads step aside during a stop ---------------------
// While one exists (on the tracer's thread), every other ordinary thread of this process is in
// SCHED_IDLE, so it cannot hold a CPU an interrupted target thread needs (see own_threads.cc).
class OwnThreadsAside {
 public:
  // `target`: the process about to be stopped (whether to wait for our threads to go quiet).
  explicit OwnThreadsAside(pid_t target);
  ~OwnThreadsAside();
  OwnThreadsAside(const OwnThreadsAside&) = delete;
  OwnThreadsAside& operator=(const OwnThreadsAside&) = delete;
  static int IdledNow();  // how many threads are idled at this instant (for the test)

 private:
  pid_t tid_;
};

// ---- fence.cc: holding a thread asleep in its call without stopping it ---------------------
// A guard thread of ours spins at real-time priority on the tracer's CPU (below the tracer), and
// the held threads are pinned to that CPU: none of them can run until Release (see fence.cc).
class Fence {
 public:
  Fence() = default;
  ~Fence();
  Fence(const Fence&) = delete;
  Fence& operator=(const Fence&) = delete;
  bool Prepare();  // creates the guard, parked (before the stop); false: cannot here
  bool Raise();    // the guard holds the calling thread's CPU (the caller is SCHED_FIFO)
  bool Pin(pid_t tid);  // the thread may run only on that CPU (false: it may not be held)
  void Unpin(pid_t tid);
  void Release();  // every pinned thread's mask given back, the guard parked
  // Raised, and the guard has not given up (kGuardMaxNs): a pinned thread cannot have run.
  bool Holding() const;

 private:
  struct Pinned {
    pid_t tid;
    cpu_set_t mask;
  };
  static void* GuardMain(void* self);
  void Park();
  pthread_t guard_{};
  bool started_ = false, failed_ = false, raised_ = false;
  int cpu_ = -1;
  std::atomic<int> guardTid_{0};
  std::atomic<int> state_{0};
  std::atomic<bool> expired_{false};
  std::vector<Pinned> pinned_;
  std::unique_ptr<ThreadProbe> guardProbe_;
};

// ---- fence_journal.cc: the masks a dead fence would leave, written down and given back -------
void SetFenceJournal(const std::string& dir);  // "" (the default): write nothing
// Writes the masks `tids` have now; returns the file ("" if none was written).
std::string WriteFenceJournal(pid_t pid, const std::vector<pid_t>& tids);
void DropFenceJournal(const std::string& path);
// Gives back every mask a file of `dir` lists (to threads still on one CPU), removes the files;
// returns how many threads got their mask back.
int HealFences(const std::string& dir);

// ---- memory.cc: the one place that reads and writes target memory ---------------------------
// Through /proc/PID/mem, which (for a process we may ptrace) also writes read-only code pages,
// because the kernel uses FOLL_FORCE for it, exactly like PTRACE_POKEDATA but in one call.
// One open /proc/PID/mem: a transaction opens it before the stop, so the pause pays for no open().
class MemFile {
 public:
  MemFile(pid_t pid, CoreError& err);
  ~MemFile();
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  bool ok() const { return fd_ >= 0; }
  bool Read(uint64_t addr, void* out, size_t len, CoreError& err);
  bool Write(uint64_t addr, const void* data, size_t len, CoreError& err);

 private:
  pid_t pid_;
  int fd_ = -1;
};
// Many small ranges in one system call (process_vm_readv): how a transaction checks every site.
struct Range {
  uint64_t addr;
  void* out;
  size_t len;
};
bool ReadRanges(pid_t pid, const std::vector<Range>& ranges, CoreError& err);
bool ReadMemory(pid_t pid, uint64_t addr, void* out, size_t len, CoreError& err);
bool WriteMemory(pid_t pid, uint64_t addr, const void* data, size_t len, CoreError& err);

// ---- ptrace_ops.cc: the one ptrace wrapper -----------------------------------------------------
struct TracedThread {
  pid_t tid = 0;
  bool stopped = false;
  bool gone = false;
  // Interrupted, and its registers not yet read and settled (see Tracee::Settle): a blocked call
  // our interrupt made return EINTR would show it to the program if we died now.
  bool unsettled = false;
  // Not seized: found asleep in a call a stop would make return EINTR, it is held by the fence
  // instead of stopped (fence.cc), and seized only if it is found awake when the stop comes.
  bool seized = true;
  // Held by the fence for this stop: never interrupted; `regs` holds what /proc says of it (its
  // stack pointer and where its call returns to), `heldRunNs` its run time when held.
  bool held = false;
  uint64_t heldRunNs = 0;
  std::shared_ptr<ThreadProbe> probe;  // for an unseized thread, opened before the stop
  // Its registers as of its current stop (read once per stop; SetRegs keeps them current).
  mutable bool haveRegs = false;
  mutable user_regs_struct regs{};
};

// All threads of one process, seized by the calling OS thread. ptrace ties a tracee to the
// tracer *thread*, so one Tracee must live and die on a single thread (one AsyncWorker job).
class Tracee {
 public:
  explicit Tracee(pid_t pid) : pid_(pid) {}
  ~Tracee();
  Tracee(const Tracee&) = delete;
  Tracee& operator=(const Tracee&) = delete;

  pid_t pid() const { return pid_; }
  std::deque<TracedThread>& threads() { return threads_; }

  // PTRACE_SEIZE every thread (with TRACECLONE, so threads created meanwhile are traced too),
  // re-reading /proc/PID/task until no new thread appears. Threads keep running.
  bool SeizeAll(CoreError& err);
  // Seize a single thread (for a remote syscall; the other threads keep running untraced).
  bool SeizeOne(pid_t tid, CoreError& err);
  // Threads found asleep in a call a stop would make return EINTR are left unseized by SeizeAll
  // and held by the fence in StopAll instead of stopped (the caller must be SCHED_FIFO for that:
  // else, or if one is awake by then, it is seized and stopped like the others).
  void HoldSleepers(bool on) { holdSleepers_ = on; }
  // Interrupt every seized thread and wait until each is in a ptrace stop; hold the sleepers.
  bool StopAll(CoreError& err);
  // Every thread held in the last StopAll is still held and has run no instruction since
  // (`who` names one that did).
  bool HeldStill(std::string& who);
  int heldCount() const;
  // When the last StopAll sent its first interrupt (monotonic ns): where a pause begins.
  uint64_t stoppingSince() const { return stoppingSinceNs_; }
  bool Stop(TracedThread& t, CoreError& err);
  // Resume every stopped thread but stay attached (used between retries).
  void ContinueAll();
  // Detach every thread (resuming it).
  void DetachAll();
  // Once the threads held are let go (ContinueAll, DetachAll), their journal file is no longer
  // needed (fence_journal.cc): removed here, after the pause, or at the latest by the destructor.
  void ForgetHeld();

  bool GetRegs(const TracedThread& t, user_regs_struct& regs, CoreError& err);
  bool SetRegs(const TracedThread& t, const user_regs_struct& regs, CoreError& err);
  // PTRACE_O_TRACESYSGOOD is always kept; `options` adds to it (e.g. PTRACE_O_TRACECLONE).
  bool SetOptions(const TracedThread& t, long options, CoreError& err);
  // The thread's XSAVE area as ptrace gives it (the layout a signal frame uses).
  bool GetXState(const TracedThread& t, std::vector<uint8_t>& out, CoreError& err);
  // Resumes `t` until it is in the syscall-entry (or exit) stop of a call made with the
  // instruction pointer `ip` (just after the syscall instruction) and stack pointer `sp`;
  // signals on the way are delivered and calls of the thread's own handlers let through.
  // `result`: the call's return value (exit stops).
  bool RunToSyscall(TracedThread& t, uint64_t ip, uint64_t sp, bool exit, int64_t& result, CoreError& err);

 private:
  bool WaitForStop(TracedThread& t, CoreError& err);
  bool Vanished(TracedThread& t, CoreError& err);
  bool Interrupt(TracedThread& t);
  bool Settle(TracedThread& t, CoreError& err);
  bool SeizeLate(TracedThread& t, CoreError& err);
  bool Hold(TracedThread& t);
  bool HoldOrStop(TracedThread& t, bool raised, CoreError& err);
  bool CatchUnseen(bool raised, CoreError& err);
  void LetHeldGo();
  bool Known(pid_t tid) const;
  void Detach(TracedThread& t);
  pid_t pid_;
  uint64_t stoppingSinceNs_ = 0;
  bool holdSleepers_ = false;
  Fence fence_;
  std::string journal_;  // fence_journal.cc: the file listing the sleepers' masks, while it matters
  // A deque, because clone events append while references to other threads are held.
  std::deque<TracedThread> threads_;
};

// Refuses, before any ptrace request, a process that is gone, a zombie, a child of this very
// process, or traced by someone else.
bool CheckTraceable(pid_t pid, CoreError& err);

// ---- procfs.cc: what the core reads from /proc ------------------------------------------------
std::vector<pid_t> ListThreads(pid_t pid);
// How many threads the process has (-1: unreadable), without listing them.
int ThreadCount(pid_t pid);
struct ProcStatus {
  bool ok = false;  // false: no such process (or /proc unreadable)
  char state = 0;
  pid_t ppid = 0;
  pid_t tracer = 0;
};
ProcStatus ReadProcStatus(pid_t pid);
bool ProcessAlive(pid_t pid);
// When the process started (field 22 of /proc/PID/stat, clock ticks since boot), 0 if gone:
// with the PID, it names one process for good.
uint64_t ProcessStartTime(pid_t pid);
// A thread asleep in a system call (borrowing it disturbs no work), else the main thread.
pid_t ThreadToBorrow(pid_t pid);
int TracerOf(pid_t pid);
int TracerOfThread(pid_t pid, pid_t tid);
// What a borrowed thread's signal frame needs from /proc: its blocked signals, and whether a
// shadow stack would refuse our `ret` into the signal-return gadget.
struct ThreadSafety {
  uint64_t sigmask = 0;
  bool shadowStack = false;
};
bool ReadThreadSafety(pid_t pid, pid_t tid, ThreadSafety& out);
// The state letter of /proc/PID/task/TID/stat, 0 when there is no such thread.
char ThreadState(pid_t pid, pid_t tid);
// A state letter (or 0) that means the task has exited: zombie, dead, or gone from /proc.
bool StateIsGone(char state);
// The thread has exited (zombie or dead) or is gone from /proc.
bool ThreadFinished(pid_t pid, pid_t tid);
// The call a thread is blocked in (/proc/PID/task/TID/syscall), or -1 (running, not in a call).
long BlockedCall(pid_t pid, pid_t tid);
// The same, whole: the call, and the stack pointer and instruction pointer it will return with.
struct BlockedCallInfo {
  long nr = -1;
  uint64_t arg0 = 0;
  uint64_t sp = 0;
  uint64_t pc = 0;
};
bool ReadBlockedCall(pid_t pid, pid_t tid, BlockedCallInfo& out);
// stop_cuts_short.cc: a stop would make this call return EINTR (epoll_wait, a socket with a
// timeout…) rather than restart it; false for a thread not in a call.
bool StopCutsShort(pid_t pid, const BlockedCallInfo& call);
// A thread's /proc files kept open and re-read from the start: a stop reads them more than once,
// and the open (a path walk) is most of what a read costs.
class ThreadProbe {
 public:
  ThreadProbe(pid_t pid, pid_t tid) : pid_(pid), tid_(tid) {}
  ~ThreadProbe();
  ThreadProbe(const ThreadProbe&) = delete;
  ThreadProbe& operator=(const ThreadProbe&) = delete;
  bool Blocked(BlockedCallInfo& out);  // as ReadBlockedCall
  // How long it has run, ns (schedstat): exact while it is off every CPU.
  bool RunNs(uint64_t& ns);
  char State();  // as ThreadState

 private:
  bool Read(int& fd, const char* name, char* buf, size_t size);
  pid_t pid_, tid_;
  int syscall_ = -1, schedstat_ = -1, stat_ = -1;
};

// ---- resume.cc: how a stopped thread goes back to its work, with us or without us -----------
// A blocked call interrupted by our stop shows -ERESTART* in rax; the kernel restarts it on
// resume (rip -= 2) as long as orig_rax still holds the call number.
bool IsRestartingSyscall(const user_regs_struct& regs);
// A call our stop made return -EINTR (epoll_wait, sigtimedwait…) is made to restart instead,
// as if the stop had never happened. True when `regs` changed (the caller writes them back).
bool KeepCallRestartable(user_regs_struct& regs);
// A call a stop makes return EINTR (rather than restart), whose thread is stopped on its own and
// settled at once, so that our death can cost it an EINTR only within a few microseconds.
bool RestartableAfterEintr(uint64_t nr);
struct ResumeState {
  user_regs_struct direct;  // set by us, in a syscall-exit stop (restart blocks kept)
  user_regs_struct frame;   // through rt_sigreturn, if the agent dies (restart blocks cleared)
};
ResumeState Resume(const user_regs_struct& stopped);
// The rt_sigframe that returns a thread to `regs` (see resume.cc).
std::vector<uint8_t> SigFrame(const user_regs_struct& regs, uint64_t sigreturnGadget, uint64_t fpstate, uint64_t sigmask);
// Checks the XSAVE area from ptrace carries the signal-frame markers and appends magic2.
bool FrameXState(std::vector<uint8_t>& xstate, CoreError& err);

// ---- remote_syscall.cc --------------------------------------------------------------------------
struct RemoteArg {
  enum Kind { Value, Result, String } kind = Value;
  uint64_t value = 0;          // Value: the argument; Result: index of an earlier call in the batch
  std::vector<uint8_t> bytes;  // String: placed (NUL-terminated) in the target, its address passed
};
struct RemoteCall {
  uint64_t nr = 0;
  std::vector<RemoteArg> args;
};
// Bytes written into the file whose descriptor call `fdCall` of the batch returned, right after
// call `afterCall` (e.g. a memfd filled before it is mapped), through /proc/PID/fd/N.
struct RemoteFill {
  size_t fdCall = 0;
  size_t afterCall = 0;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> chunks;  // file offset, bytes
};
struct RemoteBatchResult {
  std::vector<int64_t> results;  // one per call run; a batch stops after a call that failed (-errno)
  pid_t tid = 0;
  bool interruptedSyscall = false;  // the hijacked thread had been blocked in a call, now restarted
  std::string fillError;            // the fill failed (the batch stopped after call `afterCall`)
  uint64_t stoppedAtNs = 0;         // when the borrowed thread was stopped (monotonic clock)
  uint64_t heldNs = 0;              // stop → let go (RemoteSyscalls; a prelude's thread stays for the switch)
};
// Two instructions of the target's own code (found by the caller, checked here): `syscall; ret`
// runs a call; `mov rax, 15; syscall` (the C library's signal-return trampoline) returns the
// borrowed thread to its own registers by itself (see resume.cc).
struct Gadgets {
  uint64_t syscallRet = 0;
  uint64_t sigreturn = 0;
};
// tid 0: the core picks the thread (ThreadToBorrow). `fill` may be null.
bool RemoteSyscalls(pid_t pid, pid_t tid, const Gadgets& gadgets, const std::vector<RemoteCall>& calls,
                    const RemoteFill* fill, RemoteBatchResult& out, CoreError& err);

// A remote batch run by a transaction before its stop, in the same attach (see RunTransaction).
struct RemotePrelude {
  Gadgets gadgets;
  pid_t tid = 0;  // 0: the core picks the thread
  std::vector<RemoteCall> calls;
  bool hasFill = false;
  RemoteFill fill;
  // (call index, result it must return): e.g. mmap must return the very address asked for.
  std::vector<std::pair<size_t, int64_t>> expect;
};
// Borrows a thread of `tracee` (seized here, left stopped with its registers restored) and runs
// the batch in it. False only for a failure of the core itself; a failed call, fill or
// expectation shows in `out` (and `complete` stays false).
bool RunPrelude(Tracee& tracee, const RemotePrelude& prelude, RemoteBatchResult& out, bool& complete, CoreError& err);

// ---- transaction.cc -----------------------------------------------------------------------------
struct Site {
  uint64_t addr = 0;
  std::vector<uint8_t> expect;  // what must be there now
  std::vector<uint8_t> write;   // what goes there (same length)
};
struct AddressRange {
  uint64_t start;
  uint64_t end;  // exclusive
};
struct TransactionOptions {
  // Remote calls to run first, in a borrowed thread of the same attach (mapping the patch the
  // sites will jump into): one seize, stop and resume of that thread fewer than two calls.
  const RemotePrelude* prelude = nullptr;
  uint64_t timeoutMs = 2000;  // retrying while a thread sits inside a site
  bool realtime = false;      // raise the calling thread to SCHED_FIFO during the stop
  // Where stacks may be: in every consistency no word of a thread's stack may point strictly
  // inside the bytes a site overwrites (RETURN_INTO_SITE after the timeout).
  // Function consistency: the code being replaced. No thread may run inside it nor have a
  // return address into it on its stack (the stack, from rsp to the end of the area of
  // `stackAreas` holding rsp, is scanned conservatively: any word in a range counts).
  std::vector<AddressRange> activeRanges;
  std::vector<AddressRange> stackAreas;
};
struct ThreadPc {
  pid_t tid;
  uint64_t pc;
};
struct TransactionResult {
  // With a prelude: what it returned; `preludeComplete` false means it stopped early (a failed
  // call, fill or expectation) and nothing was switched.
  RemoteBatchResult prelude;
  bool preludeComplete = false;
  bool switched = false;
  uint64_t pauseNs = 0;       // first thread interrupted → last thread resumed (final attempt)
  uint64_t totalStoppedNs = 0;  // summed over all attempts
  int attempts = 0;
  int threads = 0;  // every thread of the process, stopped or held
  int held = 0;     // held asleep in their calls by the fence rather than stopped (fence.cc)
  bool heldRan = false;  // one of them ran while the sites were written (never expected)
  bool realtime = false;
};
bool RunTransaction(pid_t pid, const std::vector<Site>& sites, const TransactionOptions& opts,
                    TransactionResult& out, CoreError& err);

// The physical floor of a stop, for comparison: seize + interrupt + wait for every thread +
// the writes + resume, nothing else. Callers pass the bytes that are there now, so nothing changes.
struct FloorResult {
  uint64_t pauseNs = 0;  // first interrupt → last resume
  uint64_t totalNs = 0;  // first seize → last resume
  int threads = 0;
  bool realtime = false;
};
bool MeasureFloor(pid_t pid, const std::vector<Site>& sites, bool realtime, FloorResult& out, CoreError& err);

struct ThreadSnapshot {
  pid_t tid;
  user_regs_struct regs;
  bool inSyscall;
};
bool SnapshotThreads(pid_t pid, std::vector<ThreadSnapshot>& out, CoreError& err);

}  // namespace hp

// One ptrace wrapper, enforced: outside ptrace_ops.cc the name ptrace does not compile; every
// request goes through Tracee, where the rules that keep a target safe live.
#ifndef HP_PTRACE_WRAPPER
#include <sys/ptrace.h>
#pragma GCC poison ptrace
#endif
