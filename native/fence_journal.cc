// What a dead fence leaves behind, and its repair.
//
// A fence pins each thread it holds to one CPU (fence.cc). Killed while it holds them, the agent
// leaves them running on that one CPU for good: no error, but a service squeezed onto a CPU. So
// before the stop, each thread that may be held is written down with its mask, in a file of the
// journal folder (one per stop: "<pid>-<tracer tid>"); the file goes once the masks are given
// back. The next agent run (it takes the lock first) gives back what a file still lists:
// HealFences. No folder set (the engine used as a library, tests): nothing is written.
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core.h"

namespace hp {

namespace {
std::mutex gMutex;
std::string gDir;

std::string MaskText(const cpu_set_t& mask) {
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &mask)) out += (out.empty() ? "" : ",") + std::to_string(c);
  return out;
}

bool ParseMask(const char* text, cpu_set_t& mask) {
  CPU_ZERO(&mask);
  for (const char* at = text; *at;) {
    char* end;
    long c = strtol(at, &end, 10);
    if (end == at || c < 0 || c >= CPU_SETSIZE) return false;
    CPU_SET(int(c), &mask);
    at = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != 0) return false;
  }
  return CPU_COUNT(&mask) > 0;
}
}  // namespace

void SetFenceJournal(const std::string& dir) {
  std::lock_guard<std::mutex> lock(gMutex);
  gDir = dir;
}

// Written with the masks the threads have now, before the stop (a file written is not pause).
std::string WriteFenceJournal(pid_t pid, const std::vector<pid_t>& tids) {
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(gMutex);
    dir = gDir;
  }
  if (dir.empty() || tids.empty()) return "";
  uint64_t start = ProcessStartTime(pid);
  if (start == 0) return "";
  std::string text = "start " + std::to_string(start) + "\n";
  for (pid_t tid : tids) {
    cpu_set_t mask;
    if (sched_getaffinity(tid, sizeof mask, &mask) == 0) text += std::to_string(tid) + " " + MaskText(mask) + "\n";
  }
  std::string path = dir + "/" + std::to_string(pid) + "-" + std::to_string(long(syscall(SYS_gettid)));
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return "";
  bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size());
  close(fd);
  if (!ok) {
    unlink(path.c_str());
    return "";
  }
  return path;
}

void DropFenceJournal(const std::string& path) {
  if (!path.empty()) unlink(path.c_str());
}

int HealFences(const std::string& dir) {
  int healed = 0;
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string path = dir + "/" + e->d_name;
    pid_t pid = pid_t(atoi(e->d_name));
    FILE* f = fopen(path.c_str(), "re");
    if (!f) continue;
    char line[8192];
    unsigned long long start = 0;
    // A process of the same PID started at another time is not the one that was held.
    bool same = fgets(line, sizeof line, f) && sscanf(line, "start %llu", &start) == 1 && start == ProcessStartTime(pid);
    while (same && fgets(line, sizeof line, f)) {
      line[strcspn(line, "\n")] = 0;
      char* space = strchr(line, ' ');
      if (!space) continue;
      *space = 0;
      pid_t tid = pid_t(atoi(line));
      cpu_set_t saved, now;
      if (tid <= 0 || !ParseMask(space + 1, saved)) continue;
      std::string task = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid);
      if (access(task.c_str(), F_OK) != 0 || sched_getaffinity(tid, sizeof now, &now) != 0) continue;
      // Only a thread still on the one CPU the fence gave it: a mask changed since is the program's.
      if (CPU_COUNT(&now) == 1 && !CPU_EQUAL(&now, &saved) && sched_setaffinity(tid, sizeof saved, &saved) == 0) healed++;
    }
    fclose(f);
    unlink(path.c_str());
  }
  closedir(d);
  return healed;
}

}  // namespace hp
