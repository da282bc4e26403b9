// See fdpoll.cc.
#pragma once
#include <napi.h>
#include <uv.h>

namespace steved {

class FdPoll : public Napi::ObjectWrap<FdPoll> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  explicit FdPoll(const Napi::CallbackInfo& info);
  ~FdPoll() override;

 private:
  static void OnReadable(uv_poll_t* handle, int status, int events);
  static void CleanupHook(void* arg);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Shutdown();

  Napi::Env env_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  uv_poll_t* poll_ = nullptr;
  int fd_ = -1;
};

}  // namespace steved
