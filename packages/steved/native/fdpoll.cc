// FdPoll: call back once when an fd becomes readable, then own and close that fd.
// Used with pidfds: a pidfd turns readable when its process exits.

#include "fdpoll.h"

#include <unistd.h>

namespace steved {

Napi::Object FdPoll::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "FdPoll", {InstanceMethod("close", &FdPoll::Close)});
  Napi::FunctionReference* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.SetInstanceData(ref);  // freed by node-addon-api at env teardown
  exports.Set("FdPoll", ctor);
  return exports;
}

// new FdPoll(fd, onReadable): takes ownership of fd.
FdPoll::FdPoll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdPoll>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  fd_ = info[0].As<Napi::Number>().Int32Value();
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  async_context_ = std::make_unique<Napi::AsyncContext>(env, "steved:fdpoll");
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  poll_ = new uv_poll_t;
  poll_->data = this;
  int r = uv_poll_init(loop, poll_, fd_);
  if (r == 0) r = uv_poll_start(poll_, UV_READABLE, &FdPoll::OnReadable);
  if (r != 0) {
    delete poll_;
    poll_ = nullptr;
    Napi::Error e = Napi::Error::New(env, uv_strerror(r));
    e.Set("errno", Napi::Number::New(env, r));
    e.ThrowAsJavaScriptException();
    return;
  }
  napi_add_env_cleanup_hook(env, &FdPoll::CleanupHook, this);
}

FdPoll::~FdPoll() {
  Shutdown();
  napi_remove_env_cleanup_hook(env_, &FdPoll::CleanupHook, this);
}

void FdPoll::CleanupHook(void* arg) { static_cast<FdPoll*>(arg)->Shutdown(); }

void FdPoll::OnReadable(uv_poll_t* handle, int status, int events) {
  FdPoll* self = static_cast<FdPoll*>(handle->data);
  Napi::Env env = self->env_;
  Napi::HandleScope scope(env);
  Napi::FunctionReference cb = Napi::Persistent(self->callback_.Value());
  self->Shutdown();  // one-shot: stop watching before JS runs
  cb.MakeCallback(env.Global(), {Napi::Number::New(env, status)}, *self->async_context_);
}

void FdPoll::Shutdown() {
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    int fd = fd_;
    poll_->data = reinterpret_cast<void*>(static_cast<intptr_t>(fd));
    // Close the fd only after libuv has let go of the handle.
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) {
      close(static_cast<int>(reinterpret_cast<intptr_t>(h->data)));
      delete reinterpret_cast<uv_poll_t*>(h);
    });
    poll_ = nullptr;
    fd_ = -1;
  } else if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

Napi::Value FdPoll::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

}  // namespace steved
