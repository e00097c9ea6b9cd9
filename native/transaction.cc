// One patch transaction: stop every thread, make sure none is executing the bytes about to be
// replaced, check that the bytes are what the caller expects, write every site, read them back,
// resume. Every failure goes through one rollback path (RestoreWritten) and leaves the process
// running with its original bytes.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ptrace.h>  // PTRACE_O_TRACECLONE only: every request goes through Tracee
#include <time.h>

#include <algorithm>
#include <optional>
#include <cstdio>
#include <cstring>

#include "core.h"

namespace hp {

// Inside the overwritten bytes, but not exactly at their start: a thread at the very first
// byte has not executed any of them yet and will simply execute the new ones.
static const Site* SiteContaining(const std::vector<Site>& sites, uint64_t pc) {
  for (auto& s : sites)
    if (pc > s.addr && pc < s.addr + s.write.size()) return &s;
  return nullptr;
}

// A thread blocked in a restartable call resumes at rip - 2 (the syscall instruction again).
static const Site* ThreadInSite(const std::vector<Site>& sites, const user_regs_struct& r) {
  if (const Site* s = SiteContaining(sites, r.rip)) return s;
  if (IsRestartingSyscall(r)) return SiteContaining(sites, r.rip - 2);
  return nullptr;
}

static void RestoreWritten(MemFile& mem, const std::vector<Site>& sites, size_t written, CoreError& err) {
  for (size_t i = 0; i < written; i++) {
    CoreError e;
    if (!mem.Write(sites[i].addr, sites[i].expect.data(), sites[i].expect.size(), e)) {
      err.unchanged = false;
      err.message += "; rollback of " + Hex(sites[i].addr) + " failed too: " + e.message;
    }
  }
}

// SCHED_FIFO for the calling thread while the target is stopped, so the tracer is not queued
// behind the target's own busy threads. Failure (no privilege) just means normal priority.
class RealtimeScope {
 public:
  explicit RealtimeScope(bool wanted) {
    if (!wanted) return;
    if (pthread_getschedparam(pthread_self(), &policy_, &param_) != 0) return;
    static const int kPriority = sched_get_priority_min(SCHED_FIFO) + 1;  // a system call: ask once
    sched_param p;
    p.sched_priority = kPriority;
    active_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0;
  }
  ~RealtimeScope() {
    if (active_) pthread_setschedparam(pthread_self(), policy_, &param_);
  }
  bool active() const { return active_; }

 private:
  bool active_ = false;
  int policy_ = SCHED_OTHER;
  sched_param param_{};
};

// Where a thread stopped on a direct `jmp` (EB rel8 or E9 rel32) goes next: executing it changes
// nothing but rip, so moving rip there ourselves is the same step, taken without the CPU (a
// tight loop whose jump back to the entry lies inside the overwritten bytes is caught there
// nearly every time: the loop's work retires just before the interrupt). 0: not such a jump.
static uint64_t DirectJumpTarget(pid_t pid, uint64_t pc) {
  uint8_t insn[5] = {0, 0, 0, 0, 0};
  CoreError ignored;
  std::vector<Range> probe{{pc, insn, sizeof insn}};
  if (!ReadRanges(pid, probe, ignored)) return 0;
  if (insn[0] == 0xeb) return pc + 2 + uint64_t(int64_t(int8_t(insn[1])));
  if (insn[0] == 0xe9) {
    int32_t rel;
    memcpy(&rel, insn + 1, 4);
    return pc + 5 + uint64_t(int64_t(rel));
  }
  return 0;
}

// Reads every thread's registers (into `regs`, in the order of tracee.threads()) and finds one
// executing inside the bytes to be replaced (or blocked in a call that would restart inside).
// It is never single-stepped out: a tracer killed mid-step leaves the thread a SIGTRAP that
// kills the program. A thread on a direct jump is moved to its target (DirectJumpTarget); any
// other is let run a little with everyone else, and stopped again.
static bool CheckSites(Tracee& tracee, const std::vector<Site>& sites, std::vector<user_regs_struct>& regs,
                       std::string& blocker, CoreError& err) {
  // By index: the list may have grown by a clone event while we stopped the threads.
  regs.assign(tracee.threads().size(), user_regs_struct{});
  for (size_t i = 0; i < tracee.threads().size(); i++) {
    TracedThread& t = tracee.threads()[i];
    user_regs_struct& r = regs[i];
    if (t.gone) continue;
    if (!tracee.GetRegs(t, r, err)) return false;
    if (!blocker.empty()) continue;
    const Site* s = ThreadInSite(sites, r);
    for (int hops = 0; s && hops < 4 && !IsRestartingSyscall(r); hops++) {
      uint64_t next = DirectJumpTarget(tracee.pid(), r.rip);
      if (next == 0) break;
      r.rip = next;
      if (!tracee.SetRegs(t, r, err)) return false;
      s = ThreadInSite(sites, r);
    }
    if (s)
      blocker = "thread " + std::to_string(t.tid) + " is executing inside the bytes at " + Hex(s->addr) + " (pc " + Hex(r.rip) + ")";
  }
  return blocker.empty();
}

// `ranges` sorted by start and not overlapping (the caller merges them).
static const AddressRange* RangeHolding(const std::vector<AddressRange>& ranges, uint64_t addr) {
  auto after = std::upper_bound(ranges.begin(), ranges.end(), addr, [](uint64_t a, const AddressRange& r) { return a < r.start; });
  if (after == ranges.begin()) return nullptr;
  const AddressRange& r = *(after - 1);
  return addr < r.end ? &r : nullptr;
}

// Stacks are scanned up to this much above rsp: deeper than any real call chain, and a bound on
// what one stop may read.
static const uint64_t kMaxStackScan = 8u << 20;
// The stacks are read this much at a time (one system call for many threads' stacks).
static const uint64_t kStackBatch = 16u << 20;
// The buffer they are read into is allocated and touched before the stop, this big (the live
// part of most programs' stacks is a few KiB per thread). Allocating it inside the stop cost
// ~150 µs of every pause: fresh pages fault, and the fault waits for our own mmap lock, which one
// of our threads — pinned beside us and idle (own_threads.cc) — may hold.
static const size_t kScratchWords = (1u << 20) / 8;

// Is any thread about to return into `code`, or (checkPc) running it? A conservative scan: every
// 8-byte word of the live stack that points into it counts as a return address (a stale value
// only delays the patch; a missed frame cannot happen). Used for function consistency (the code
// being replaced) and, in every consistency, for the bytes a jump overwrites: a call made from
// inside them returns into the middle of the new jump. `regs`: as CheckSites read them. `words`:
// where the stacks are read to, grown only if they do not fit (see kScratchWords).
static bool FindActiveCode(pid_t pid, Tracee& tracee, const std::vector<user_regs_struct>& regs, const std::vector<AddressRange>& code,
                           const std::vector<AddressRange>& stackAreas, bool checkPc, const char* what, std::vector<uint64_t>& words,
                           std::string& blocker, CoreError& err) {
  if (code.empty()) return true;
  struct Span {
    pid_t tid;
    uint64_t from;
    size_t words;
  };
  std::vector<Span> spans;
  size_t index = 0;
  for (auto& t : tracee.threads()) {
    user_regs_struct fresh;
    if (!t.gone && index >= regs.size() && !tracee.GetRegs(t, fresh, err)) return false;  // appeared since
    const user_regs_struct& r = index < regs.size() ? regs[index] : fresh;
    index++;
    if (t.gone) continue;
    if (checkPc) {
      if (const AddressRange* in = RangeHolding(code, r.rip)) {
        blocker = "thread " + std::to_string(t.tid) + " is running " + what + " (pc " + Hex(r.rip) + " in " + Hex(in->start) + "-" + Hex(in->end) + ")";
        return false;
      }
    }
    const AddressRange* area = RangeHolding(stackAreas, r.rsp);
    if (!area) continue;  // not on a known stack (e.g. a signal stack elsewhere): nothing to scan
    uint64_t from = r.rsp & ~uint64_t(7);
    uint64_t to = std::min(area->end, from + kMaxStackScan);
    if (to > from) spans.push_back({t.tid, from, size_t((to - from) / 8)});
  }
  // Most words point nowhere near the code: one comparison with its bounds rules them out.
  const uint64_t lowest = code.front().start, highest = code.back().end;
  for (size_t first = 0; first < spans.size();) {
    size_t last = first, total = 0;
    while (last < spans.size() && (last == first || (total + spans[last].words) * 8 <= kStackBatch)) total += spans[last++].words;
    if (words.size() < total) words.resize(total);
    std::vector<Range> ranges;
    size_t at = 0;
    for (size_t i = first; i < last; i++) {
      ranges.push_back({spans[i].from, words.data() + at, spans[i].words * 8});
      at += spans[i].words;
    }
    if (!ReadRanges(pid, ranges, err)) return false;
    at = 0;
    for (size_t i = first; i < last; i++) {
      for (size_t w = 0; w < spans[i].words; w++) {
        uint64_t v = words[at + w];
        if (v < lowest || v >= highest) continue;
        if (const AddressRange* in = RangeHolding(code, v)) {
          blocker = "thread " + std::to_string(spans[i].tid) + " has " + Hex(v) + " on its stack at " + Hex(spans[i].from + w * 8) +
                    ", inside " + what + " (" + Hex(in->start) + "-" + Hex(in->end) + ")";
          return false;
        }
      }
      at += spans[i].words;
    }
    first = last;
  }
  return true;
}

// The first write to a private code page makes the kernel copy it (~40 µs). Writing the bytes
// that are already there, while the target still runs, pays that copy before the stop.
static bool PrefaultSites(pid_t pid, MemFile& mem, const std::vector<Site>& sites, CoreError& err) {
  (void)pid;
  std::vector<uint64_t> pages;
  for (auto& s : sites) {
    for (uint64_t p = s.addr & ~uint64_t(4095); p < s.addr + s.write.size(); p += 4096) {
      if (std::find(pages.begin(), pages.end(), p) != pages.end()) continue;
      pages.push_back(p);
      uint64_t at = std::max(p, s.addr);
      uint8_t byte;
      if (!mem.Read(at, &byte, 1, err) || !mem.Write(at, &byte, 1, err)) return false;
    }
  }
  return true;
}

bool RunTransaction(pid_t pid, const std::vector<Site>& sites, const TransactionOptions& opts,
                    TransactionResult& out, CoreError& err) {
  for (auto& s : sites) {
    if (s.expect.size() != s.write.size() || s.write.empty())
      return Fail(err, "BAD_SITE", "site " + Hex(s.addr) + ": expected and new bytes differ in length");
  }
  if (!CheckTraceable(pid, err)) return false;
  MemFile mem(pid, err);
  if (!mem.ok()) return false;
  // Our other threads stand aside for each stop and come back for the waits between retries
  // (where a CPU hog would starve them). Set up before the stop: listing them is not pause.
  std::optional<OwnThreadsAside> aside;
  aside.emplace(pid);
  Tracee tracee(pid);
  // The thread the prelude borrowed stays stopped into the switch: if it was running (not asleep
  // in a call), the pause counts from when the prelude stopped it.
  uint64_t heldSince = 0;
  if (opts.prelude) {
    if (!RunPrelude(tracee, *opts.prelude, out.prelude, out.preludeComplete, err)) return false;
    if (!out.preludeComplete) return true;  // nothing switched; the caller reads `prelude` and undoes it
    if (!out.prelude.interruptedSyscall) heldSince = out.prelude.stoppedAtNs;
    // SeizeOne left out TRACECLONE (the other threads ran untraced); from here every thread is
    // ours, so a thread it creates while resumed between attempts must be traced too.
    for (auto& t : tracee.threads())
      if (!t.gone && !tracee.SetOptions(t, PTRACE_O_TRACECLONE, err)) return false;
  }
  if (!PrefaultSites(pid, mem, sites, err)) return false;
  std::vector<std::vector<uint8_t>> now(sites.size());
  std::vector<Range> ranges;
  for (size_t i = 0; i < sites.size(); i++) {
    now[i].resize(sites[i].expect.size());
    ranges.push_back({sites[i].addr, now[i].data(), now[i].size()});
  }
  // The overwritten bytes past each site's first (which a thread may return to: it just runs the
  // new bytes), sorted and merged as FindActiveCode wants them.
  std::vector<AddressRange> interiors;
  for (auto& s : sites)
    if (s.write.size() > 1) interiors.push_back({s.addr + 1, s.addr + s.write.size()});
  std::sort(interiors.begin(), interiors.end(), [](const AddressRange& a, const AddressRange& b) { return a.start < b.start; });
  std::vector<AddressRange> merged;
  for (auto& r : interiors) {
    if (!merged.empty() && r.start <= merged.back().end) merged.back().end = std::max(merged.back().end, r.end);
    else merged.push_back(r);
  }
  interiors.swap(merged);
  // With function consistency the function bodies are scanned anyway: interiors inside them need
  // no pass of their own over every stack (only padding sites lie outside a body).
  bool covered = !opts.activeRanges.empty();
  for (auto& r : interiors) {
    const AddressRange* in = RangeHolding(opts.activeRanges, r.start);
    covered = covered && in && r.end <= in->end;
  }
  if (covered) interiors.clear();
  std::vector<uint64_t> stackWords(kScratchWords);  // value-initialised: every page touched now
  // Held rather than stopped, a thread in epoll_wait & co. gets no EINTR even if we die (fence.cc);
  // the fence needs the tracer above its guard, at real-time priority.
  tracee.HoldSleepers(opts.realtime);
  if (!tracee.SeizeAll(err)) return false;

  uint64_t deadline = MonotonicNs() + opts.timeoutMs * 1000000ull;
  uint64_t backoffUs = 50;  // a thread inside a site leaves it within nanoseconds once let go
  for (;;) {
    out.attempts++;
    if (!aside) aside.emplace(pid);
    RealtimeScope rt(opts.realtime);
    out.realtime = rt.active();
    if (!tracee.StopAll(err)) return false;
    uint64_t t0 = heldSince ? heldSince : tracee.stoppingSince();
    heldSince = 0;  // after a retry every thread was let go and is stopped again here

    std::string blocker;
    const char* blockedBy = "THREAD_IN_SITE";
    std::vector<user_regs_struct> regs;
    bool clear = CheckSites(tracee, sites, regs, blocker, err);
    if (clear && !err.set()) {
      clear = FindActiveCode(pid, tracee, regs, interiors, opts.stackAreas, false, "the bytes a jump overwrites", stackWords, blocker, err);
      blockedBy = "RETURN_INTO_SITE";
    }
    if (clear && !err.set()) {
      clear = FindActiveCode(pid, tracee, regs, opts.activeRanges, opts.stackAreas, true, "the code being replaced", stackWords, blocker, err);
      blockedBy = "FUNCTION_ACTIVE";
    }
    // What was read of a held thread holds only if it has not run since (else: another attempt).
    if (clear && !err.set()) {
      clear = tracee.HeldStill(blocker);
      blockedBy = "HELD_THREAD_RAN";
    }
    if (!clear) {
      if (err.set()) return false;
      tracee.ContinueAll();
      out.totalStoppedNs += MonotonicNs() - t0;
      tracee.ForgetHeld();
      aside.reset();
      if (MonotonicNs() >= deadline) {
        return Fail(err, blockedBy,
                    blocker + "; gave up after " + std::to_string(opts.timeoutMs) + " ms and " +
                        std::to_string(out.attempts) + " attempts, nothing was written");
      }
      struct timespec ts = {0, long(backoffUs * 1000)};
      nanosleep(&ts, nullptr);
      if (backoffUs < 20000) backoffUs *= 2;
      continue;
    }

    // The bytes must be exactly what the caller planned against: anything else means another
    // tool, a different build, or a previous patch is there, and we must not overwrite it.
    if (!ReadRanges(pid, ranges, err)) return false;
    for (size_t i = 0; i < sites.size(); i++) {
      if (now[i] != sites[i].expect) {
        return Fail(err, "ENTRY_MISMATCH",
                    "the bytes at " + Hex(sites[i].addr) + " are not the expected ones; nothing was written");
      }
    }
    size_t written = 0;
    for (auto& s : sites) {
      if (!mem.Write(s.addr, s.write.data(), s.write.size(), err)) {
        RestoreWritten(mem, sites, written, err);
        return false;
      }
      written++;
    }
    // Read everything back in one call: what the threads will execute must be what we meant.
    if (!ReadRanges(pid, ranges, err)) {
      RestoreWritten(mem, sites, written, err);
      return false;
    }
    for (size_t i = 0; i < sites.size(); i++) {
      if (now[i] != sites[i].write) {
        Fail(err, "VERIFY_FAILED", "the bytes read back at " + Hex(sites[i].addr) + " differ from those written");
        RestoreWritten(mem, sites, written, err);
        return false;
      }
    }
    // Checked again after the writes: a held thread that ran during them is reported, never
    // expected (it would need the tracer and the guard off its CPU for a whole 50 ms: fence.cc).
    std::string ranWhileWritten;
    out.heldRan = !tracee.HeldStill(ranWhileWritten);
    out.held = tracee.heldCount();
    out.threads = 0;
    for (auto& t : tracee.threads())
      if (!t.gone) out.threads++;
    tracee.DetachAll();
    uint64_t t1 = MonotonicNs();
    out.pauseNs = t1 - t0;
    out.totalStoppedNs += out.pauseNs;
    tracee.ForgetHeld();
    out.switched = true;
    return true;
  }
}

bool MeasureFloor(pid_t pid, const std::vector<Site>& sites, bool realtime, FloorResult& out, CoreError& err) {
  if (!ProcessAlive(pid)) return Fail(err, "PROCESS_NOT_FOUND", "no running process with PID " + std::to_string(pid));
  MemFile mem(pid, err);
  if (!mem.ok()) return false;
  OwnThreadsAside aside(pid);  // as a transaction does, so the floor is measured the same way
  RealtimeScope rt(realtime);
  out.realtime = rt.active();
  Tracee tracee(pid);
  tracee.HoldSleepers(out.realtime);
  uint64_t t0 = MonotonicNs();
  if (!tracee.SeizeAll(err)) return false;
  if (!tracee.StopAll(err)) return false;
  uint64_t t1 = tracee.stoppingSince();
  for (auto& s : sites)
    if (!mem.Write(s.addr, s.write.data(), s.write.size(), err)) return false;
  out.threads = 0;
  for (auto& t : tracee.threads())
    if (!t.gone) out.threads++;
  tracee.DetachAll();
  uint64_t t2 = MonotonicNs();
  out.pauseNs = t2 - t1;
  out.totalNs = t2 - t0;
  return true;
}

bool SnapshotThreads(pid_t pid, std::vector<ThreadSnapshot>& out, CoreError& err) {
  if (!CheckTraceable(pid, err)) return false;
  Tracee tracee(pid);
  if (!tracee.SeizeAll(err)) return false;
  if (!tracee.StopAll(err)) return false;
  for (auto& t : tracee.threads()) {
    if (t.gone) continue;
    ThreadSnapshot s;
    s.tid = t.tid;
    if (!tracee.GetRegs(t, s.regs, err)) return false;
    s.inSyscall = IsRestartingSyscall(s.regs);
    out.push_back(s);
  }
  return true;
}

}  // namespace hp
