// The one place that reads and writes another process's memory.
#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "core.h"

namespace hp {

MemFile::MemFile(pid_t pid, CoreError& err) : pid_(pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/mem";
  fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) {
    int e = errno;
    if (e == ENOENT) Fail(err, "PROCESS_NOT_FOUND", "no running process with PID " + std::to_string(pid));
    else Fail(err, "PERMISSION_DENIED", "cannot open the memory of process " + std::to_string(pid) + ": " + ErrnoText(e));
  }
}

MemFile::~MemFile() {
  if (fd_ >= 0) close(fd_);
}

bool MemFile::Read(uint64_t addr, void* out, size_t len, CoreError& err) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd_, (char*)out + done, len - done, off_t(addr + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      return Fail(err, "MEMORY_READ_FAILED", "cannot read " + std::to_string(len) + " bytes at " + Hex(addr) +
                                                 " in process " + std::to_string(pid_) + ": " + ErrnoText(e));
    }
    done += size_t(n);
  }
  return true;
}

bool MemFile::Write(uint64_t addr, const void* data, size_t len, CoreError& err) {
  KillPoint();
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd_, (const char*)data + done, len - done, off_t(addr + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      return Fail(err, "MEMORY_WRITE_FAILED", "cannot write " + std::to_string(len) + " bytes at " + Hex(addr) +
                                                  " in process " + std::to_string(pid_) + ": " + ErrnoText(e));
    }
    done += size_t(n);
  }
  return true;
}

bool ReadRanges(pid_t pid, const std::vector<Range>& ranges, CoreError& err) {
  // process_vm_readv takes at most IOV_MAX (1024) vectors per call.
  const size_t kMax = 1024;
  for (size_t first = 0; first < ranges.size(); first += kMax) {
    size_t n = std::min(kMax, ranges.size() - first);
    std::vector<iovec> local(n), remote(n);
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
      const Range& r = ranges[first + i];
      local[i] = {r.out, r.len};
      remote[i] = {reinterpret_cast<void*>(r.addr), r.len};
      want += r.len;
    }
    ssize_t got = process_vm_readv(pid, local.data(), n, remote.data(), n, 0);
    if (got != ssize_t(want)) {
      // Fall back to /proc/PID/mem range by range, which also names the range that failed.
      MemFile mem(pid, err);
      if (!mem.ok()) return false;
      for (size_t i = 0; i < n; i++) {
        const Range& r = ranges[first + i];
        if (!mem.Read(r.addr, r.out, r.len, err)) return false;
      }
    }
  }
  return true;
}

bool ReadMemory(pid_t pid, uint64_t addr, void* out, size_t len, CoreError& err) {
  MemFile mem(pid, err);
  return mem.ok() && mem.Read(addr, out, len, err);
}

bool WriteMemory(pid_t pid, uint64_t addr, const void* data, size_t len, CoreError& err) {
  MemFile mem(pid, err);
  return mem.ok() && mem.Write(addr, data, len, err);
}

}  // namespace hp
