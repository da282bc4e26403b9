// steved's native addon: libfuse3 sessions and pidfd glue. Each plain function does one
// system call and returns >= 0 or -errno; everything else is decided in TypeScript.

#include <errno.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

#include "fdpoll.h"
#include "session.h"

namespace {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

// pidfdOpen(pid) -> fd | -errno
Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int pid = info[0].As<Napi::Number>().Int32Value();
  long fd = syscall(SYS_pidfd_open, pid, 0);
  return Napi::Number::New(info.Env(), fd < 0 ? -errno : static_cast<double>(fd));
}

// umount(path, flags) -> 0 | -errno   (flags: 2 = MNT_DETACH)
Napi::Value Umount(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  int flags = info[1].As<Napi::Number>().Int32Value();
  return Napi::Number::New(info.Env(), umount2(path.c_str(), flags) < 0 ? -errno : 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  steved::Session::Init(env, exports);
  steved::FdPoll::Init(env, exports);
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen));
  exports.Set("umount", Napi::Function::New(env, Umount));
  return exports;
}

}  // namespace

NODE_API_MODULE(steved, Init)
