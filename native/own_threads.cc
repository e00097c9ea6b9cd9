// The agent's own other threads step aside while a target is stopped.
//
// Measured (README, "Pauses under contention"): the stop of a target lasted 0.5–20 ms instead of
// ~0.2 because Node's own helper threads (V8's compiler and GC workers, libuv's pool, the event
// loop) took the CPU an interrupted target thread had just given up on its way into the stop,
// and kept it for a scheduler tick while the target's other interrupted threads queued behind.
// For the length of a stop they are put in SCHED_IDLE, meant to run only when no other thread
// wants the CPU. Only this process is touched, so a killed agent leaves nothing behind in
// the target. Raising the *target's* threads instead would outlive a killed agent.
//
// SCHED_IDLE alone is not enough: EEVDF still picks an idle thread whose lag is positive over a
// target thread that has just run, and it then keeps the CPU until the next tick (perf sched
// showed V8 workers running 3–4 ms inside a stop while interrupted target threads queued). So
// they are also pinned to the tracer's CPU for the stop: every other CPU is left to the target.
// Only with two CPUs or more, and only when a thread of the target is runnable (IdleOthers). (Polling for the stops instead of sleeping, so the tracer at
// SCHED_FIFO would hold that CPU against them, was tried and was worse: a target thread queued
// behind the poller waited for it, as the other CPU, rarely idle, does not pull it over.)
//
// Several transactions may run at once (one per AsyncWorker, apply on many processes): the
// first to enter idles every thread that is not itself inside a stop, the last to leave gives
// them back, and a tracer idled by another's stop restores itself when its own begins.
#include <sched.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "core.h"

namespace hp {

namespace {
std::mutex gMutex;
int gDepth = 0;
std::vector<pid_t> gTracers;  // threads inside a stop: never idled
std::vector<pid_t> gIdled;    // threads we moved to SCHED_IDLE (back to SCHED_OTHER at the end)
// Every thread there was when we idled them: a thread not among them that is in SCHED_IDLE was
// created meanwhile by an idled one and inherited the policy (SCHED_RESET_ON_FORK does not reset
// SCHED_IDLE), so it is given SCHED_OTHER too — else a libuv worker born during a stop would
// stay idle, and trace the next target at the mercy of every other process.
std::vector<pid_t> gSeen;
// Affinity masks we narrowed to gCpu, to be given back (the first tracer's own among them).
struct Pinned {
  pid_t tid;
  cpu_set_t mask;
};
std::vector<Pinned> gPinned;
int gCpu = -1;  // the CPU our threads are pinned to for this stop, -1: not pinned
cpu_set_t gFirstMask;  // the first tracer's own mask: what a thread born pinned is given

bool Seen(pid_t tid) { return std::find(gSeen.begin(), gSeen.end(), tid) != gSeen.end(); }

pid_t SelfTid() { return pid_t(syscall(SYS_gettid)); }

bool SetPolicy(pid_t tid, int policy) {
  sched_param p{};
  return sched_setscheduler(tid, policy, &p) == 0;
}

// Narrows `tid` to gCpu, remembering its mask (a thread that ended meanwhile is just skipped).
void Pin(pid_t tid) {
  Pinned p{tid, {}};
  if (sched_getaffinity(tid, sizeof p.mask, &p.mask) != 0) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(gCpu, &one);
  if (sched_setaffinity(tid, sizeof one, &one) == 0) gPinned.push_back(p);
}

void Unpin(pid_t tid) {
  for (auto it = gPinned.begin(); it != gPinned.end(); ++it) {
    if (it->tid != tid) continue;
    sched_setaffinity(tid, sizeof it->mask, &it->mask);
    gPinned.erase(it);
    return;
  }
}

// Pinned beside us and idle, one of our threads that still has work (a V8 compile or GC job)
// can yet be picked over a target thread woken onto our CPU — wakeups land on the waker's CPU —
// and then keeps it for a tick (perf sched: 1.2–4 ms). So the stop begins when none of them is
// runnable: we sleep a little at a time, which lets them run out their work on our CPU, for at
// most kQuietWaitNs (then we go on anyway). This costs wall time, never pause — so only when it
// can matter, with our threads pinned (IdleOthers: some thread of the target wants a CPU too;
// with every target thread asleep, a woken one finds the other CPU idle). And an agent patching a thousand
// processes keeps its event loop busy planning the next ones, so the waits of one agent process
// add up to kQuietBudgetNs at most, and then it no longer waits.
uint64_t gQuietWaitedNs = 0;

bool AnyThreadRunnable(pid_t pid) {
  for (pid_t tid : ListThreads(pid))
    if (ThreadState(pid, tid) == 'R') return true;
  return false;
}

void WaitForQuiet() {
  constexpr uint64_t kQuietWaitNs = 20000000, kQuietBudgetNs = 200000000, kNapNs = 100000;
  uint64_t start = MonotonicNs();
  uint64_t until = start + std::min(kQuietWaitNs, kQuietBudgetNs - std::min(gQuietWaitedNs, kQuietBudgetNs));
  for (;;) {
    bool busy = false;
    for (pid_t tid : gIdled) busy = busy || ThreadState(getpid(), tid) == 'R';
    if (!busy || MonotonicNs() >= until) break;
    struct timespec nap = {0, long(kNapNs)};
    nanosleep(&nap, nullptr);
  }
  gQuietWaitedNs += MonotonicNs() - start;
}

void IdleOthers(pid_t target) {
  gSeen.clear();
  // Pinning pays only with a CPU left for the target (the tracer's own mask must allow two), and
  // only when the target competes for the CPUs: with its threads asleep it cost (scale bench,
  // idle targets) pause 105 → 450 µs for one process and 2.5 → 4.2 s for a thousand, our work
  // squeezed onto one CPU while the overlapping stops of many processes kept it pinned.
  bool contended = target > 0 && AnyThreadRunnable(target);
  cpu_set_t allowed;
  gCpu = -1;
  if (contended && sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) >= 2) {
    gCpu = sched_getcpu();
    gFirstMask = allowed;
    if (gCpu >= 0) Pin(SelfTid());
  }
  for (pid_t tid : ListThreads(getpid())) {
    gSeen.push_back(tid);
    if (std::find(gTracers.begin(), gTracers.end(), tid) != gTracers.end()) continue;
    // Only ordinary threads: one a user made real-time or idle on purpose is left as it is.
    if (sched_getscheduler(tid) != SCHED_OTHER) continue;
    if (SetPolicy(tid, SCHED_IDLE)) gIdled.push_back(tid);
    if (gCpu >= 0) Pin(tid);
  }
  if (gCpu >= 0) WaitForQuiet();
}

// A thread born idle from one of ours during a stop (see gSeen).
bool InheritedIdle(pid_t tid) { return !Seen(tid) && sched_getscheduler(tid) == SCHED_IDLE; }

// A thread born during a stop from a pinned one inherited the one-CPU mask: it gets the mask the
// process had (one a user narrowed on purpose to that same CPU is indistinguishable, and widened).
void UnpinBorn(pid_t tid) {
  cpu_set_t mask;
  if (Seen(tid) || gCpu < 0 || sched_getaffinity(tid, sizeof mask, &mask) != 0) return;
  if (CPU_COUNT(&mask) == 1 && CPU_ISSET(gCpu, &mask)) sched_setaffinity(tid, sizeof gFirstMask, &gFirstMask);
}
}  // namespace

OwnThreadsAside::OwnThreadsAside(pid_t target) : tid_(SelfTid()) {
  std::lock_guard<std::mutex> lock(gMutex);
  gTracers.push_back(tid_);
  auto self = std::find(gIdled.begin(), gIdled.end(), tid_);
  // A second stop at once: its tracer must not be held to the first one's CPU.
  Unpin(tid_);
  if (self != gIdled.end()) {
    SetPolicy(tid_, SCHED_OTHER);
    gIdled.erase(self);
  } else if (gDepth > 0 && InheritedIdle(tid_)) {
    SetPolicy(tid_, SCHED_OTHER);
  }
  if (gDepth++ == 0) IdleOthers(target);
}

OwnThreadsAside::~OwnThreadsAside() {
  std::lock_guard<std::mutex> lock(gMutex);
  gTracers.erase(std::find(gTracers.begin(), gTracers.end(), tid_));
  if (--gDepth > 0) return;
  for (pid_t tid : gIdled) SetPolicy(tid, SCHED_OTHER);  // ESRCH: the thread has ended, nothing to do
  gIdled.clear();
  for (auto& p : gPinned) sched_setaffinity(p.tid, sizeof p.mask, &p.mask);
  gPinned.clear();
  for (pid_t tid : ListThreads(getpid())) {
    if (InheritedIdle(tid)) SetPolicy(tid, SCHED_OTHER);
    UnpinBorn(tid);
  }
  gCpu = -1;
  gSeen.clear();
}

int OwnThreadsAside::IdledNow() {
  std::lock_guard<std::mutex> lock(gMutex);
  return int(gIdled.size());
}

}  // namespace hp
