// systemd's readiness protocol (sd_notify) from the agent's side: a datagram Unix socket the agent
// binds before it starts a service (NOTIFY_SOCKET=<path> in the service's environment) and reads,
// without blocking, while it waits for "READY=1". Node has no AF_UNIX datagram socket, hence here.
// SO_PASSCRED: each message comes with the sender's PID, so the agent can tell who said it.
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

Napi::Value ThrowErrno(Napi::Env env, const std::string& what, int e) {
  Napi::Error::New(env, what + ": " + strerror(e)).ThrowAsJavaScriptException();
  return env.Undefined();
}

// notifySocketOpen(path) -> fd. The path is unlinked first (a stale socket from a killed agent).
Napi::Value NotifySocketOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "notifySocketOpen(path)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    Napi::Error::New(env, "notify socket path is empty or longer than " + std::to_string(sizeof addr.sun_path - 1) + " bytes: " + path)
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  memcpy(addr.sun_path, path.c_str(), path.size());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ThrowErrno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
  unlink(path.c_str());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, "bind " + path, e);
  }
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, "setsockopt SO_PASSCRED", e);
  }
  return Napi::Number::New(env, fd);
}

// notifySocketRead(fd) -> [{pid, text}]: every datagram waiting now (never blocks).
Napi::Value NotifySocketRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "notifySocketRead(fd)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (;;) {
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return ThrowErrno(env, "recvmsg on the notify socket", errno);
    }
    int pid = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        memcpy(&cred, CMSG_DATA(c), sizeof cred);
        pid = cred.pid;
      }
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("pid", Napi::Number::New(env, pid));
    o.Set("text", Napi::String::New(env, buf, size_t(got)));
    out.Set(n++, o);
  }
  return out;
}

}  // namespace

namespace hp {
void RegisterNotifySocket(Napi::Env env, Napi::Object exports) {
  exports.Set("notifySocketOpen", Napi::Function::New(env, NotifySocketOpen));
  exports.Set("notifySocketRead", Napi::Function::New(env, NotifySocketRead));
}
}  // namespace hp
