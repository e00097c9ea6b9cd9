// N-API surface of the native core. Every call that may wait on a process runs in an
// AsyncWorker, so Node's event loop never blocks on a ptrace stop. Each worker does its whole
// job (attach → work → detach) on one thread, because ptrace binds a tracee to its tracer thread.
#include <napi.h>

#include <algorithm>
#include <array>
#include <functional>
#include <memory>

#include "core.h"

namespace hp {
void RegisterNotifySocket(Napi::Env env, Napi::Object exports);  // notify_socket.cc
}

namespace {

using hp::CoreError;

uint64_t ToU64(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return uint64_t(v.As<Napi::Number>().Int64Value());
}

// Optional fields: absent or undefined means the default. (Reading an undefined value as a
// number would leave a pending JS exception behind and corrupt the call.)
Napi::Value Field(const Napi::Object& o, const char* key) {
  return o.Has(key) ? o.Get(key) : o.Env().Undefined();
}

int64_t OptInt(const Napi::Object& o, const char* key, int64_t fallback) {
  Napi::Value v = Field(o, key);
  return v.IsNumber() ? v.As<Napi::Number>().Int64Value() : fallback;
}

bool OptBool(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = Field(o, key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

// Adds what the caller needs to know about a failure beyond code and message.
using ErrorDetails = std::function<void(Napi::Env, Napi::Error&)>;

Napi::Value RejectWith(Napi::Env env, Napi::Promise::Deferred& d, const CoreError& e, const ErrorDetails& details = nullptr) {
  Napi::Error error = Napi::Error::New(env, e.message);
  error.Set("code", Napi::String::New(env, e.code));
  error.Set("unchanged", Napi::Boolean::New(env, e.unchanged));
  if (details) details(env, error);
  d.Reject(error.Value());
  return d.Promise();
}

// Runs `work` off the JS thread; `done` builds the resolved value on the JS thread.
class CoreWorker : public Napi::AsyncWorker {
 public:
  CoreWorker(Napi::Env env, std::function<bool(CoreError&)> work, std::function<Napi::Value(Napi::Env)> done, ErrorDetails details)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), done_(std::move(done)), details_(std::move(details)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (!work_(err_) && !err_.set()) hp::Fail(err_, "INTERNAL", "native operation failed without a reason");
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    if (err_.set()) {
      RejectWith(Env(), deferred_, err_, details_);
      return;
    }
    deferred_.Resolve(done_(Env()));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<bool(CoreError&)> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  ErrorDetails details_;
  CoreError err_;
};

// Argument checks: a wrong type becomes a TypeError at the call, never a half-made request.
bool CheckArgs(const Napi::CallbackInfo& info, size_t count, const char* usage) {
  bool ok = info.Length() >= count && info[0].IsNumber();
  for (size_t i = 1; ok && i < count; i++) ok = !info[i].IsUndefined() && !info[i].IsNull();
  if (!ok) Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
  return ok;
}

bool CheckString(const Napi::CallbackInfo& info, const char* usage) {
  bool ok = info.Length() >= 1 && info[0].IsString();
  if (!ok) Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
  return ok;
}

Napi::Value Queue(Napi::Env env, std::function<bool(CoreError&)> work, std::function<Napi::Value(Napi::Env)> done, ErrorDetails details = nullptr) {
  auto* w = new CoreWorker(env, std::move(work), std::move(done), std::move(details));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Reads and writes of another process's memory are single system calls that never wait on the
// target (process_vm_readv, /proc/PID/mem): doing them right here is far cheaper than a trip
// through the thread pool, whose wake-ups dominate when a thousand processes are patched.
Napi::Value ThrowCore(Napi::Env env, const CoreError& e) {
  Napi::Error error = Napi::Error::New(env, e.message);
  error.Set("code", Napi::String::New(env, e.code));
  error.Set("unchanged", Napi::Boolean::New(env, e.unchanged));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

// readRangesSync(pid, [address, length, ...]) → one Buffer holding every range in order.
Napi::Value ReadRangesSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsArray()) {
    Napi::TypeError::New(env, "readRangesSync(pid, [address, length, ...])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  Napi::Array flat = info[1].As<Napi::Array>();
  if (flat.Length() % 2) {
    Napi::TypeError::New(env, "readRangesSync: the list holds address, length pairs").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<std::pair<uint64_t, size_t>> spans;
  size_t total = 0;
  for (uint32_t i = 0; i < flat.Length(); i += 2) {
    Napi::Value a = flat.Get(i), l = flat.Get(i + 1);
    if (!a.IsNumber() || !l.IsNumber()) {
      Napi::TypeError::New(env, "readRangesSync: addresses and lengths are numbers").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    size_t len = l.As<Napi::Number>().Uint32Value();
    spans.emplace_back(uint64_t(a.As<Napi::Number>().Int64Value()), len);
    total += len;
  }
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, total);
  std::vector<hp::Range> ranges;
  size_t at = 0;
  for (const auto& sp : spans) {
    if (sp.second) ranges.push_back({sp.first, out.Data() + at, sp.second});
    at += sp.second;
  }
  CoreError err;
  if (!hp::ReadRanges(pid, ranges, err)) return ThrowCore(env, err);
  return out;
}

// writeMemorySync(pid, address, buffer)
Napi::Value WriteMemorySync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBuffer()) {
    Napi::TypeError::New(env, "writeMemorySync(pid, address, buffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto b = info[2].As<Napi::Buffer<uint8_t>>();
  CoreError err;
  if (!hp::WriteMemory(info[0].As<Napi::Number>().Int32Value(), uint64_t(info[1].As<Napi::Number>().Int64Value()), b.Data(), b.Length(), err)) return ThrowCore(env, err);
  return env.Undefined();
}

std::vector<uint8_t> Bytes(const Napi::Value& v) {
  auto b = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

// [{ nr, args: (number | bigint | { result: i } | { string: Buffer })[] }] → calls
std::vector<hp::RemoteCall> Calls(const Napi::Array& list) {
  std::vector<hp::RemoteCall> calls;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Object c = list.Get(i).As<Napi::Object>();
    hp::RemoteCall call;
    call.nr = ToU64(c.Get("nr"));
    Napi::Array args = c.Get("args").As<Napi::Array>();
    for (uint32_t j = 0; j < args.Length() && j < 6; j++) {
      Napi::Value v = args.Get(j);
      hp::RemoteArg a;
      if (v.IsObject() && !v.IsBuffer() && v.As<Napi::Object>().Has("result")) {
        a.kind = hp::RemoteArg::Result;
        a.value = ToU64(v.As<Napi::Object>().Get("result"));
      } else if (v.IsObject() && v.As<Napi::Object>().Has("string")) {
        a.kind = hp::RemoteArg::String;
        a.bytes = Bytes(v.As<Napi::Object>().Get("string"));
      } else {
        a.value = ToU64(v);
      }
      call.args.push_back(std::move(a));
    }
    calls.push_back(std::move(call));
  }
  return calls;
}

// { fdCall, afterCall, chunks: [{ offset, data: Buffer }] } → fill (false when absent)
bool Fill(const Napi::Value& f, hp::RemoteFill& fill) {
  if (!f.IsObject()) return false;
  Napi::Object fo = f.As<Napi::Object>();
  fill.fdCall = size_t(OptInt(fo, "fdCall", 0));
  fill.afterCall = size_t(OptInt(fo, "afterCall", 0));
  Napi::Array chunks = fo.Get("chunks").As<Napi::Array>();
  for (uint32_t i = 0; i < chunks.Length(); i++) {
    Napi::Object c = chunks.Get(i).As<Napi::Object>();
    fill.chunks.emplace_back(uint64_t(OptInt(c, "offset", 0)), Bytes(c.Get("data")));
  }
  return true;
}

Napi::Object BatchResult(Napi::Env env, const hp::RemoteBatchResult& out) {
  Napi::Object r = Napi::Object::New(env);
  Napi::Array results = Napi::Array::New(env, out.results.size());
  for (size_t i = 0; i < out.results.size(); i++) results.Set(uint32_t(i), Napi::Number::New(env, double(out.results[i])));
  r.Set("results", results);
  r.Set("tid", Napi::Number::New(env, out.tid));
  r.Set("interruptedSyscall", Napi::Boolean::New(env, out.interruptedSyscall));
  r.Set("heldNs", Napi::Number::New(env, double(out.heldNs)));
  if (!out.fillError.empty()) r.Set("fillError", Napi::String::New(env, out.fillError));
  return r;
}

// { syscallRet, sigreturn } → the two instructions a remote call runs through.
hp::Gadgets GadgetPair(const Napi::Value& v) {
  hp::Gadgets g;
  Napi::Object o = v.As<Napi::Object>();
  g.syscallRet = ToU64(o.Get("syscallRet"));
  g.sigreturn = ToU64(o.Get("sigreturn"));
  return g;
}

// remoteSyscalls(pid, { tid?, gadgets: { syscallRet, sigreturn }, calls, fill? })
Napi::Value RemoteSyscalls(const Napi::CallbackInfo& info) {
  if (!CheckArgs(info, 2, "remoteSyscalls(pid, { gadgets, calls, tid? })")) return info.Env().Undefined();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  Napi::Object o = info[1].As<Napi::Object>();
  pid_t tid = pid_t(OptInt(o, "tid", 0));
  hp::Gadgets gadgets = GadgetPair(o.Get("gadgets"));
  auto calls = std::make_shared<std::vector<hp::RemoteCall>>(Calls(o.Get("calls").As<Napi::Array>()));
  auto fill = std::make_shared<hp::RemoteFill>();
  bool hasFill = Fill(Field(o, "fill"), *fill);
  auto out = std::make_shared<hp::RemoteBatchResult>();
  return Queue(
      info.Env(), [=](CoreError& err) { return hp::RemoteSyscalls(pid, tid, gadgets, *calls, hasFill ? fill.get() : nullptr, *out, err); },
      [=](Napi::Env env) { return BatchResult(env, *out); });
}

// [{ addr, expect?, write }] → sites (floor() passes no `expect`).
std::shared_ptr<std::vector<hp::Site>> Sites(const Napi::Array& arr) {
  auto sites = std::make_shared<std::vector<hp::Site>>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Object s = arr.Get(i).As<Napi::Object>();
    hp::Site site;
    site.addr = ToU64(s.Get("addr"));
    if (s.Has("expect") && s.Get("expect").IsBuffer()) site.expect = Bytes(s.Get("expect"));
    site.write = Bytes(s.Get("write"));
    sites->push_back(std::move(site));
  }
  return sites;
}

// [start, end, start, end, ...] → ranges sorted by start, overlapping ones merged (absent: none).
std::vector<hp::AddressRange> Ranges(const Napi::Value& v) {
  std::vector<hp::AddressRange> in, out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i + 1 < a.Length(); i += 2) in.push_back({ToU64(a.Get(i)), ToU64(a.Get(i + 1))});
  std::sort(in.begin(), in.end(), [](const hp::AddressRange& x, const hp::AddressRange& y) { return x.start < y.start; });
  for (auto& r : in) {
    if (r.end <= r.start) continue;
    if (!out.empty() && r.start <= out.back().end) out.back().end = std::max(out.back().end, r.end);
    else out.push_back(r);
  }
  return out;
}

Napi::Value Transaction(const Napi::CallbackInfo& info) {
  if (!CheckArgs(info, 2, "transaction(pid, sites, options?)")) return info.Env().Undefined();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  auto sites = Sites(info[1].As<Napi::Array>());
  hp::TransactionOptions opts;
  std::shared_ptr<hp::RemotePrelude> prelude;
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    opts.timeoutMs = uint64_t(OptInt(o, "timeoutMs", int64_t(opts.timeoutMs)));
    opts.realtime = OptBool(o, "realtime", opts.realtime);
    opts.activeRanges = Ranges(Field(o, "activeRanges"));
    opts.stackAreas = Ranges(Field(o, "stackAreas"));
    // prelude: { gadgets, tid?, calls, fill?, expect?: [callIndex, result, ...] }
    Napi::Value p = Field(o, "prelude");
    if (p.IsObject()) {
      Napi::Object po = p.As<Napi::Object>();
      prelude = std::make_shared<hp::RemotePrelude>();
      prelude->gadgets = GadgetPair(po.Get("gadgets"));
      prelude->tid = pid_t(OptInt(po, "tid", 0));
      prelude->calls = Calls(po.Get("calls").As<Napi::Array>());
      prelude->hasFill = Fill(Field(po, "fill"), prelude->fill);
      Napi::Value e = Field(po, "expect");
      if (e.IsArray()) {
        Napi::Array ea = e.As<Napi::Array>();
        for (uint32_t i = 0; i + 1 < ea.Length(); i += 2) prelude->expect.emplace_back(size_t(ToU64(ea.Get(i))), int64_t(ToU64(ea.Get(i + 1))));
      }
    }
  }
  auto out = std::make_shared<hp::TransactionResult>();
  return Queue(
      info.Env(),
      [=](CoreError& err) {
        hp::TransactionOptions run = opts;
        run.prelude = prelude.get();
        return hp::RunTransaction(pid, *sites, run, *out, err);
      },
      [=](Napi::Env env) {
        Napi::Object r = Napi::Object::New(env);
        if (prelude) r.Set("prelude", BatchResult(env, out->prelude));
        r.Set("switched", Napi::Boolean::New(env, out->switched));
        r.Set("pauseNs", Napi::Number::New(env, double(out->pauseNs)));
        r.Set("totalStoppedNs", Napi::Number::New(env, double(out->totalStoppedNs)));
        r.Set("attempts", Napi::Number::New(env, out->attempts));
        r.Set("threads", Napi::Number::New(env, out->threads));
        r.Set("held", Napi::Number::New(env, out->held));
        r.Set("heldRan", Napi::Boolean::New(env, out->heldRan));
        r.Set("realtime", Napi::Boolean::New(env, out->realtime));
        return r;
      },
      // After a complete prelude the target holds what it made (a mapping): the caller undoes it.
      [=](Napi::Env env, Napi::Error& error) {
        if (prelude) error.Set("preludeComplete", Napi::Boolean::New(env, out->preludeComplete));
      });
}

Napi::Value Floor(const Napi::CallbackInfo& info) {
  if (!CheckArgs(info, 2, "floor(pid, sites, options?)")) return info.Env().Undefined();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  auto sites = Sites(info[1].As<Napi::Array>());
  bool realtime = info.Length() > 2 && info[2].IsObject() ? OptBool(info[2].As<Napi::Object>(), "realtime", false) : false;
  auto out = std::make_shared<hp::FloorResult>();
  return Queue(
      info.Env(), [=](CoreError& err) { return hp::MeasureFloor(pid, *sites, realtime, *out, err); },
      [=](Napi::Env env) {
        Napi::Object r = Napi::Object::New(env);
        r.Set("pauseNs", Napi::Number::New(env, double(out->pauseNs)));
        r.Set("totalNs", Napi::Number::New(env, double(out->totalNs)));
        r.Set("threads", Napi::Number::New(env, out->threads));
        r.Set("realtime", Napi::Boolean::New(env, out->realtime));
        return r;
      });
}

Napi::Value Snapshot(const Napi::CallbackInfo& info) {
  if (!CheckArgs(info, 1, "snapshot(pid)")) return info.Env().Undefined();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  auto out = std::make_shared<std::vector<hp::ThreadSnapshot>>();
  return Queue(
      info.Env(), [=](CoreError& err) { return hp::SnapshotThreads(pid, *out, err); },
      [=](Napi::Env env) {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); i++) {
          const auto& s = (*out)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("tid", Napi::Number::New(env, s.tid));
          o.Set("pc", Napi::Number::New(env, double(s.regs.rip)));
          o.Set("sp", Napi::Number::New(env, double(s.regs.rsp)));
          o.Set("syscall", Napi::Number::New(env, double(int64_t(s.regs.orig_rax))));
          o.Set("inSyscall", Napi::Boolean::New(env, s.inSyscall));
          a.Set(uint32_t(i), o);
        }
        return a;
      });
}

// setFenceJournal(dir): where the fence writes down the masks it narrows ("" for nowhere).
Napi::Value SetFenceJournal(const Napi::CallbackInfo& info) {
  if (!CheckString(info, "setFenceJournal(dir)")) return info.Env().Undefined();
  hp::SetFenceJournal(info[0].As<Napi::String>().Utf8Value());
  return info.Env().Undefined();
}

// healFences(dir): masks a killed agent's fence left narrowed, given back; how many threads.
Napi::Value HealFences(const Napi::CallbackInfo& info) {
  if (!CheckString(info, "healFences(dir)")) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), hp::HealFences(info[0].As<Napi::String>().Utf8Value()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("readRangesSync", Napi::Function::New(env, ReadRangesSync));
  exports.Set("writeMemorySync", Napi::Function::New(env, WriteMemorySync));
  exports.Set("remoteSyscalls", Napi::Function::New(env, RemoteSyscalls));
  exports.Set("transaction", Napi::Function::New(env, Transaction));
  exports.Set("snapshot", Napi::Function::New(env, Snapshot));
  exports.Set("floor", Napi::Function::New(env, Floor));
  exports.Set("setFenceJournal", Napi::Function::New(env, SetFenceJournal));
  exports.Set("healFences", Napi::Function::New(env, HealFences));
  hp::RegisterNotifySocket(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(hpcore, Init)
