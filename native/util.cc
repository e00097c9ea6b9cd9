// Small helpers every file of the core uses: the error convention, errno text, the clock, hex.
#include <string.h>
#include <time.h>

#include <cstdio>
#include <string>

#include "core.h"

namespace hp {

bool Fail(CoreError& err, const std::string& code, const std::string& message) {
  if (!err.set()) {
    err.code = code;
    err.message = message;
  }
  return false;
}

std::string ErrnoText(int e) { return std::string(strerror(e)); }

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

std::string Hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
  return buf;
}

}  // namespace hp
