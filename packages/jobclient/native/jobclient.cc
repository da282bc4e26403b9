// jobclient native layer: the few syscalls Node does not offer without a thread.
//
// Exports (shape declared once in src/native.ts):
//   read(fd, buf)          one read(2) into buf       -> bytes read (0 = EOF) or -errno
//   write(fd, buf)         one write(2) from buf      -> bytes written or -errno
//   ioctl(fd, req, arg)    one ioctl(2); arg is a Buffer (pointer) or a number (int value)
//                                                     -> the ioctl result or -errno
//   Poller(fd, cb)         a uv_poll_t on the loop of this env, readable events only;
//                          start()/stop() -> 0 or -errno, close() idempotent.
//
// Policy (retries, EAGAIN/EINTR handling, token bookkeeping) lives in TypeScript. Nothing
// here throws for a system error; only a wrong argument type gives a TypeError.
// Build: scripts/build.sh (node-gyp rebuild), test: packages/jobclient/test/native.test.ts.

#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <memory>
#include <sys/ioctl.h>
#include <unistd.h>

namespace {

bool jc_fd_arg(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "fd must be a number").ThrowAsJavaScriptException();
    return false;
  }
  *fd = info[i].As<Napi::Number>().Int32Value();
  return true;
}

bool jc_buffer_arg(const Napi::CallbackInfo& info, size_t i, Napi::Buffer<uint8_t>* out) {
  if (info.Length() <= i || !info[i].IsBuffer()) {
    Napi::TypeError::New(info.Env(), "buffer must be a Buffer").ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::Buffer<uint8_t>>();
  return true;
}

// read(fd, buf): the caller opened fd with O_NONBLOCK, so this never blocks the loop.
Napi::Value jc_read(const Napi::CallbackInfo& info) {
  int fd;
  Napi::Buffer<uint8_t> buf;
  if (!jc_fd_arg(info, 0, &fd) || !jc_buffer_arg(info, 1, &buf)) return info.Env().Undefined();
  ssize_t n = read(fd, buf.Data(), buf.Length());
  return Napi::Number::New(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

Napi::Value jc_write(const Napi::CallbackInfo& info) {
  int fd;
  Napi::Buffer<uint8_t> buf;
  if (!jc_fd_arg(info, 0, &fd) || !jc_buffer_arg(info, 1, &buf)) return info.Env().Undefined();
  ssize_t n = write(fd, buf.Data(), buf.Length());
  return Napi::Number::New(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

// ioctl(fd, request, arg): a Buffer is passed as a pointer (in/out data, e.g. FIONREAD's int),
// a number as the plain integer argument. The control-plane client builds its requests in TS.
Napi::Value jc_ioctl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!jc_fd_arg(info, 0, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "request must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // Request numbers use all 32 bits (direction bits on top), so go through int64.
  unsigned long request = static_cast<unsigned long>(info[1].As<Napi::Number>().Int64Value() & 0xffffffffLL);
  int r;
  if (info.Length() > 2 && info[2].IsBuffer()) {
    Napi::Buffer<uint8_t> buf = info[2].As<Napi::Buffer<uint8_t>>();
    r = ioctl(fd, request, buf.Data());
  } else if (info.Length() > 2 && info[2].IsNumber()) {
    r = ioctl(fd, request, static_cast<long>(info[2].As<Napi::Number>().Int64Value()));
  } else if (info.Length() > 2 && !info[2].IsUndefined()) {
    Napi::TypeError::New(env, "arg must be a Buffer, a number or undefined").ThrowAsJavaScriptException();
    return env.Undefined();
  } else {
    r = ioctl(fd, request, 0L);
  }
  return Napi::Number::New(env, r < 0 ? -errno : r);
}

// Poller: readiness of one fd, reported to JS as cb(status, events) on every loop turn while
// started (level-triggered). It does not own the fd: TS closes the poller, then the fd.
//
// Lifetime: while started, the JS object is held by a strong reference (Ref) and the active
// handle keeps the loop alive, so an awaited acquire() neither gets collected nor lets the
// process exit. Stopped, it holds nothing. The uv_poll_t is freed in its close callback; a
// cleanup hook closes it if the env (e.g. a worker thread) goes away first.
class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod("start", &Poller::Start), InstanceMethod("stop", &Poller::Stop),
                        InstanceMethod("close", &Poller::Close)});
  }

  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info), env_(info.Env()) {
    int fd;
    if (!jc_fd_arg(info, 0, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(env_, "callback must be a function").ThrowAsJavaScriptException();
      return;
    }
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    async_context_ = std::make_unique<Napi::AsyncContext>(env_, "jobclient:poll");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    handle_ = new uv_poll_t;
    // uv_poll_init also sets O_NONBLOCK on the fd: the client only polls fds whose open file
    // description is its own (see src/open.ts), so nobody else's reads change behaviour.
    int r = uv_poll_init(loop, handle_, fd);
    if (r != 0) {
      delete handle_;
      handle_ = nullptr;
      init_error_ = r;
      return;
    }
    handle_->data = this;
    napi_add_env_cleanup_hook(env_, &Poller::CleanupHook, this);
    hooked_ = true;
  }

  ~Poller() override {
    CloseHandle();
    if (hooked_) napi_remove_env_cleanup_hook(env_, &Poller::CleanupHook, this);
  }

 private:
  static void CleanupHook(void* arg) { static_cast<Poller*>(arg)->CloseHandle(); }

  static void OnEvent(uv_poll_t* handle, int status, int events) {
    Poller* self = static_cast<Poller*>(handle->data);
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    self->callback_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                                 *self->async_context_);
  }

  // start(): 0, -errno, or the uv_poll_init error that the constructor kept.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) return Napi::Number::New(info.Env(), init_error_ != 0 ? init_error_ : -EBADF);
    int r = uv_poll_start(handle_, UV_READABLE, &Poller::OnEvent);
    if (r == 0 && !active_) {
      active_ = true;
      Ref();
    }
    return Napi::Number::New(info.Env(), r);
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) return Napi::Number::New(info.Env(), 0);
    int r = uv_poll_stop(handle_);
    Deactivate();
    return Napi::Number::New(info.Env(), r);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    Deactivate();
    return info.Env().Undefined();
  }

  void Deactivate() {
    if (active_) {
      active_ = false;
      Unref();
    }
  }

  // uv_close stops the watcher and removes the fd from epoll at once, so the caller may close
  // the fd right after; the handle memory itself is freed later, in the close callback.
  void CloseHandle() {
    if (handle_ == nullptr) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  Napi::Env env_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  uv_poll_t* handle_ = nullptr;  // null once closed (or if uv_poll_init failed)
  int init_error_ = 0;           // uv_poll_init's result, reported by start()
  bool active_ = false;          // started and holding a strong reference to the JS object
  bool hooked_ = false;          // env cleanup hook registered
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("read", Napi::Function::New(env, jc_read, "read"));
  exports.Set("write", Napi::Function::New(env, jc_write, "write"));
  exports.Set("ioctl", Napi::Function::New(env, jc_ioctl, "ioctl"));
  exports.Set("Poller", Poller::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(jobclient, Init)
