// Holding a thread asleep in its call without stopping it.
//
// A stop request of any kind (PTRACE_INTERRUPT, SIGSTOP, the cgroup freezer) makes epoll_wait,
// sigtimedwait, a recv with a timeout… return -EINTR at once. We turn that back into a restart
// at the stop (resume.cc), but a tracer killed between its interrupt and that rewrite leaves the
// program the EINTR. So such a thread is not stopped at all: it is never interrupted, only kept
// from running while the sites are checked and written, and that by the scheduler alone.
//
// The guard: one thread of ours, pinned to the tracer's CPU at SCHED_FIFO below the tracer's own
// priority (transaction.cc's RealtimeScope). The held thread, an ordinary one, is pinned to that
// same CPU. The fair class never runs while a real-time thread is runnable on a CPU, and there
// the guard always is: the tracer runs, or, whenever it sleeps (a wait, a page fault), the guard
// spins. So a held thread that its call wakes meanwhile waits, as a stopped one would, and its
// call returns whatever it would have returned. Nothing is asked of the thread itself.
//
// If the agent dies, the guard dies with it and the held thread just runs on, its call untouched:
// no signal, no EINTR. What it keeps is the one-CPU mask (given back by the next agent run: see
// fenceJournal in transaction.ts — a mask is the only trace a dead fence can leave).
//
// That it held is checked, not assumed: a thread's run time (/proc/…/schedstat) is exact while
// it is off every CPU, which a thread pinned behind the guard is whenever we look; unchanged
// means it ran no instruction since it was held. Real-time throttling (950 ms of every second)
// and the fair server of newer kernels would let it run only after far longer than the guard
// ever spins (kGuardMaxNs, after which the fence reports itself broken).
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "core.h"

namespace hp {

namespace {
constexpr int kParked = 0, kHold = 1, kExit = 2;
// Longer than any pause, far shorter than real-time throttling would allow: a guard that spins
// this long means the tracer is stuck, and the fence gives up rather than starve the CPU.
constexpr uint64_t kGuardMaxNs = 50000000;

long Futex(std::atomic<int>* word, int op, int value) {
  return syscall(SYS_futex, reinterpret_cast<int*>(word), op, value, nullptr, nullptr, 0);
}
}  // namespace

void* Fence::GuardMain(void* self) {
  Fence& f = *static_cast<Fence*>(self);
  f.guardTid_.store(int(syscall(SYS_gettid)));
  Futex(&f.guardTid_, FUTEX_WAKE_PRIVATE, 1);
  for (;;) {
    int s = f.state_.load();
    if (s == kExit) return nullptr;
    if (s == kParked) {
      Futex(&f.state_, FUTEX_WAIT_PRIVATE, kParked);
      continue;
    }
    uint64_t until = MonotonicNs() + kGuardMaxNs;
    while (f.state_.load(std::memory_order_relaxed) == kHold) {
      __builtin_ia32_pause();
      if (MonotonicNs() < until) continue;
      f.expired_.store(true);
      Futex(&f.state_, FUTEX_WAIT_PRIVATE, kHold);  // until released: the fence has failed
    }
  }
}

Fence::~Fence() {
  Release();
  if (!started_) return;
  state_.store(kExit);
  Futex(&state_, FUTEX_WAKE_PRIVATE, 1);
  pthread_join(guard_, nullptr);
}

// The guard is created parked, already real-time (so own_threads.cc leaves it alone), before the
// stop: creating a thread costs tens of microseconds that must not be pause.
bool Fence::Prepare() {
  if (started_) return true;
  if (failed_) return false;
  failed_ = true;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return false;
  sched_param p{};
  p.sched_priority = sched_get_priority_min(SCHED_FIFO);
  bool ok = pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED) == 0 &&
            pthread_attr_setschedpolicy(&attr, SCHED_FIFO) == 0 && pthread_attr_setschedparam(&attr, &p) == 0 &&
            pthread_attr_setstacksize(&attr, 64 * 1024) == 0 && pthread_create(&guard_, &attr, GuardMain, this) == 0;
  pthread_attr_destroy(&attr);
  if (!ok) return false;
  started_ = true;
  while (guardTid_.load() == 0) Futex(&guardTid_, FUTEX_WAIT_PRIVATE, 0);
  guardProbe_.reset(new ThreadProbe(getpid(), guardTid_.load()));
  guardProbe_->State();  // opened now, not in the stop
  failed_ = false;
  return true;
}

// Wants the caller at a real-time priority above the guard's (RealtimeScope), else the guard
// would take the tracer's own CPU from it.
bool Fence::Raise() {
  if (raised_) return true;
  if (!started_ || sched_getscheduler(0) != SCHED_FIFO) return false;
  cpu_ = sched_getcpu();
  if (cpu_ < 0) return false;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu_, &one);
  if (sched_setaffinity(guardTid_.load(), sizeof one, &one) != 0) return false;
  expired_.store(false);
  state_.store(kHold);
  Futex(&state_, FUTEX_WAKE_PRIVATE, 1);
  // Woken is not yet queued (a wake-up may travel to the CPU by interrupt): only a guard the
  // kernel shows runnable holds the CPU.
  for (int i = 0; i < 1000; i++) {
    if (guardProbe_->State() == 'R') {
      raised_ = true;
      return true;
    }
    sched_yield();
  }
  Park();
  return false;
}

bool Fence::Pin(pid_t tid) {
  if (!raised_) return false;
  // A real-time thread would not wait behind the guard.
  int policy = sched_getscheduler(tid);
  if (policy != SCHED_OTHER && policy != SCHED_BATCH && policy != SCHED_IDLE) return false;
  Pinned p{tid, {}};
  if (sched_getaffinity(tid, sizeof p.mask, &p.mask) != 0 || !CPU_ISSET(cpu_, &p.mask)) return false;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu_, &one);
  if (sched_setaffinity(tid, sizeof one, &one) != 0) return false;
  pinned_.push_back(p);
  return true;
}

void Fence::Unpin(pid_t tid) {
  auto it = std::find_if(pinned_.begin(), pinned_.end(), [tid](const Pinned& p) { return p.tid == tid; });
  if (it == pinned_.end()) return;
  sched_setaffinity(tid, sizeof it->mask, &it->mask);  // ESRCH: it ended, nothing to give back
  pinned_.erase(it);
}

void Fence::Park() {
  state_.store(kParked);
  Futex(&state_, FUTEX_WAKE_PRIVATE, 1);  // a guard that expired waits on kHold
  raised_ = false;
}

void Fence::Release() {
  // Masks first, guard last: a thread given its mask back while the guard still spins just runs
  // elsewhere; the other order would leave it a moment pinned to an unguarded CPU (harmless too).
  while (!pinned_.empty()) Unpin(pinned_.back().tid);
  if (raised_) Park();
}

bool Fence::Holding() const { return raised_ && !expired_.load(); }

}  // namespace hp
