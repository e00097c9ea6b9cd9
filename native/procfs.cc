// What the core reads from /proc: threads, their state, tracer, blocked signals and the call
// they sleep in. Plain reads (open + read + close), no ptrace: safe before anything is stopped.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "core.h"

namespace hp {

std::vector<pid_t> ListThreads(pid_t pid) {
  std::vector<pid_t> tids;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return tids;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    tids.push_back(pid_t(atoi(e->d_name)));
  }
  closedir(d);
  std::sort(tids.begin(), tids.end());
  return tids;
}

// /proc/PID/status in one read (open + read + close): it is read for every process patched.
ProcStatus ReadProcStatus(pid_t pid) {
  ProcStatus st;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", int(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return st;
  char buf[4096];
  ssize_t n;
  do n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0) return st;
  buf[n] = 0;
  auto field = [&](const char* name) -> const char* {
    size_t len = strlen(name);
    for (const char* line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : nullptr) {
      if (strncmp(line, name, len) == 0 && line[len] == ':') {
        const char* v = line + len + 1;
        while (*v == ' ' || *v == '\t') v++;
        return v;
      }
    }
    return nullptr;
  };
  const char* state = field("State");
  const char* ppid = field("PPid");
  const char* tracer = field("TracerPid");
  if (!state) return st;
  st.ok = true;
  st.state = *state;
  st.ppid = ppid ? pid_t(atoi(ppid)) : 0;
  st.tracer = tracer ? pid_t(atoi(tracer)) : 0;
  return st;
}

bool ProcessAlive(pid_t pid) {
  ProcStatus st = ReadProcStatus(pid);
  return st.ok && !StateIsGone(st.state);
}

int TracerOf(pid_t pid) { return ReadProcStatus(pid).tracer; }

// The state letter of /proc/PID/task/TID/stat (0: no such thread). The letter follows the
// command name, which may itself contain ") ", so it is found after the last ')'.
char ThreadState(pid_t pid, pid_t tid) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task/%d/stat", int(pid), int(tid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n;
  do n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char* close = strrchr(buf, ')');
  return close && close[1] == ' ' ? close[2] : 0;
}

uint64_t ProcessStartTime(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  // After the command name (which may hold spaces and parentheses): state is field 3, start 22.
  const char* at = strrchr(buf, ')');
  if (!at) return 0;
  at++;
  for (int field = 3; field <= 22; field++) {
    while (*at == ' ') at++;
    if (field == 22) return strtoull(at, nullptr, 10);
    at = strchr(at, ' ');
    if (!at) return 0;
  }
  return 0;
}

int ThreadCount(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", int(pid));
  struct stat st;
  return stat(path, &st) == 0 ? int(st.st_nlink) - 2 : -1;  // the kernel gives it 2 + threads
}

bool StateIsGone(char state) { return state == 0 || state == 'Z' || state == 'X' || state == 'x'; }

// A thread asleep: it was doing nothing, so borrowing it delays no work. Best one in a call a
// stop restarts by itself (nanosleep, a futex, poll…); one in a call a stop makes return EINTR
// (epoll_wait, sigtimedwait…) only if there is no other, as borrowing it is the one stop the fence
// cannot spare it (fence.cc: our death in the few µs before its call is made to restart would
// cost it an EINTR). Still better than a running thread, whose work would wait for our calls.
pid_t ThreadToBorrow(pid_t pid) {
  pid_t asleep = 0;
  for (pid_t tid : ListThreads(pid)) {
    if (ThreadState(pid, tid) != 'S') continue;
    BlockedCallInfo call;
    if (ReadBlockedCall(pid, tid, call) && !StopCutsShort(pid, call)) return tid;
    if (!asleep) asleep = tid;
  }
  return asleep ? asleep : pid;
}

bool ThreadFinished(pid_t pid, pid_t tid) { return StateIsGone(ThreadState(pid, tid)); }

int TracerOfThread(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, 10, "TracerPid:") == 0) return atoi(line.c_str() + 10);
  return 0;
}

// /proc/PID/task/TID/status of one thread, whole (a few hundred bytes).
static std::string ThreadStatus(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

static std::string StatusField(const std::string& status, const char* name) {
  std::string key = std::string("\n") + name + ":";
  size_t at = status.find(key);
  if (at == std::string::npos) return "";
  size_t from = status.find_first_not_of(" \t", at + key.size());
  size_t to = status.find('\n', from);
  return from == std::string::npos ? "" : status.substr(from, to == std::string::npos ? std::string::npos : to - from);
}

bool ReadThreadSafety(pid_t pid, pid_t tid, ThreadSafety& out) {
  std::string status = ThreadStatus(pid, tid);
  std::string blocked = StatusField(status, "SigBlk");
  if (blocked.empty()) return false;
  out.sigmask = strtoull(blocked.c_str(), nullptr, 16);
  out.shadowStack = StatusField(status, "x86_Thread_features").find("shstk") != std::string::npos;
  return true;
}

// A small /proc file, read whole from its start into `buf` (NUL-terminated).
static bool ReadAt(int fd, char* buf, size_t size) {
  ssize_t n;
  do n = pread(fd, buf, size - 1, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  buf[n] = 0;
  return true;
}

static int OpenThreadFile(pid_t pid, pid_t tid, const char* name) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task/%d/%s", int(pid), int(tid), name);
  return open(path, O_RDONLY | O_CLOEXEC);
}

// "nr arg1 … arg6 sp pc" of /proc/PID/task/TID/syscall; "running" and "-1 …" are no call. The
// kernel answers only for a thread off CPU in that call, and checks it stayed so while it read.
static bool ParseBlockedCall(const char* buf, BlockedCallInfo& out) {
  out = BlockedCallInfo{};
  if (buf[0] < '0' || buf[0] > '9') return false;
  const char* at = buf;
  uint64_t f[9];
  for (int i = 0; i < 9; i++) {
    char* end;
    f[i] = strtoull(at, &end, 0);
    if (end == at) return false;
    at = end;
  }
  out.nr = long(f[0]);
  out.arg0 = f[1];
  out.sp = f[7];
  out.pc = f[8];
  return true;
}

bool ReadBlockedCall(pid_t pid, pid_t tid, BlockedCallInfo& out) {
  char buf[256];
  int fd = OpenThreadFile(pid, tid, "syscall");
  if (fd < 0) return false;
  bool ok = ReadAt(fd, buf, sizeof buf);
  close(fd);
  return ok && ParseBlockedCall(buf, out);
}

long BlockedCall(pid_t pid, pid_t tid) {
  BlockedCallInfo info;
  return ReadBlockedCall(pid, tid, info) ? info.nr : -1;
}

ThreadProbe::~ThreadProbe() {
  for (int fd : {syscall_, schedstat_, stat_})
    if (fd >= 0) close(fd);
}

bool ThreadProbe::Read(int& fd, const char* name, char* buf, size_t size) {
  if (fd < 0) fd = OpenThreadFile(pid_, tid_, name);
  return fd >= 0 && ReadAt(fd, buf, size);
}

bool ThreadProbe::Blocked(BlockedCallInfo& out) {
  char buf[256];
  return Read(syscall_, "syscall", buf, sizeof buf) && ParseBlockedCall(buf, out);
}

// The first of /proc/PID/task/TID/schedstat's three numbers: time on CPU, ns.
bool ThreadProbe::RunNs(uint64_t& ns) {
  char buf[96];
  if (!Read(schedstat_, "schedstat", buf, sizeof buf) || buf[0] < '0' || buf[0] > '9') return false;
  ns = strtoull(buf, nullptr, 10);
  return true;
}

char ThreadProbe::State() {
  char buf[1024];
  if (!Read(stat_, "stat", buf, sizeof buf)) return 0;
  const char* close = strrchr(buf, ')');
  return close && close[1] == ' ' ? close[2] : 0;
}

}  // namespace hp
