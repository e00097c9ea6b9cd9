// Would a stop cut this thread's blocked call short?
//
// Only then is the thread held by the fence rather than stopped (fence.cc): holding costs the
// pause a few tens of µs per thread, and a call that restarts by itself after a stop needs none
// of it. RestartableAfterEintr (resume.cc) names the calls that may return EINTR; for those that
// take a file descriptor, the descriptor decides. A read or write on a pipe, a terminal, a file,
// an eventfd, an inotify or timer fd restarts (-ERESTARTSYS), and so does one on a socket without
// a timeout; only a socket with SO_RCVTIMEO / SO_SNDTIMEO set returns EINTR. The timeout is read
// from a copy of the descriptor (pidfd_getfd): nothing of the target changes. Anything we cannot
// tell counts as cut short (held: safe either way).
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core.h"

namespace hp {

namespace {
enum class FdCall { None, Receive, Send };

// x86-64 numbers of the calls of RestartableAfterEintr whose first argument is a descriptor
// whose kind decides.
FdCall FdCallOf(long nr) {
  switch (nr) {
    case 0: case 17: case 19:  // read, pread64, readv
    case 43: case 288:         // accept, accept4
    case 45: case 47: case 299:  // recvfrom, recvmsg, recvmmsg
      return FdCall::Receive;
    case 1: case 18: case 20:  // write, pwrite64, writev
    case 44: case 46: case 307:  // sendto, sendmsg, sendmmsg
      return FdCall::Send;
    default:
      return FdCall::None;
  }
}

bool IsSocket(pid_t pid, int fd) {
  char path[64], target[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", int(pid), fd);
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (n < 0) return true;  // cannot tell
  target[n] = 0;
  return strncmp(target, "socket:", 7) == 0;
}

// The socket's timeout for this direction is set (or cannot be read).
bool SocketTimesOut(pid_t pid, int fd, FdCall kind) {
  int pidfd = int(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return true;
  int copy = int(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  close(pidfd);
  if (copy < 0) return true;
  timeval tv{};
  socklen_t len = sizeof tv;
  int r = getsockopt(copy, SOL_SOCKET, kind == FdCall::Receive ? SO_RCVTIMEO : SO_SNDTIMEO, &tv, &len);
  close(copy);
  return r != 0 || tv.tv_sec != 0 || tv.tv_usec != 0;
}
}  // namespace

bool StopCutsShort(pid_t pid, const BlockedCallInfo& call) {
  if (call.nr < 0 || !RestartableAfterEintr(uint64_t(call.nr))) return false;
  FdCall kind = FdCallOf(call.nr);
  if (kind == FdCall::None) return true;
  int fd = int(call.arg0);
  return IsSocket(pid, fd) && SocketTimesOut(pid, fd, kind);
}

}  // namespace hp
