// A libfuse3 low-level session (a FUSE-mounted regular file, or a CUSE character device)
// driven from libuv: the session fd is non-blocking and watched with uv_poll, so no thread
// ever blocks in a read. Requests that need a decision (open, read, write, poll, release,
// interrupt, ioctl) are handed to JavaScript with a numeric id; JavaScript answers them, now
// or later, through the reply* methods. No token policy lives here.

#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace steved {

namespace {

// Request kinds as seen by JavaScript; mirrored in src/native.ts.
enum Kind {
  kOpen = 1,
  kRead = 2,
  kWrite = 3,
  kPoll = 4,
  kRelease = 5,
  kInterrupt = 6,
  kIoctl = 7,
  kReady = 8,
  kGone = 9,
};

Session* SessionOf(fuse_req_t req) {
  return static_cast<Session*>(fuse_req_userdata(req));
}

}  // namespace

Napi::FunctionReference Session::constructor_;

Napi::Object Session::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(
      env, "Session",
      {
          InstanceMethod("mountFile", &Session::MountFile),
          InstanceMethod("registerDevice", &Session::RegisterDevice),
          InstanceMethod("replyData", &Session::ReplyData),
          InstanceMethod("replyError", &Session::ReplyError),
          InstanceMethod("replyWrite", &Session::ReplyWrite),
          InstanceMethod("replyPoll", &Session::ReplyPoll),
          InstanceMethod("replyIoctl", &Session::ReplyIoctl),
          InstanceMethod("notifyPoll", &Session::NotifyPoll),
          InstanceMethod("close", &Session::Close),
      });
  constructor_ = Napi::Persistent(ctor);
  constructor_.SuppressDestruct();
  exports.Set("Session", ctor);
  return exports;
}

// new Session(onRequest)
//   onRequest(kind, id, fh, tid, uid, gid, a, b, data?) is called for every request JS decides.
Session::Session(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Session>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(env, "Session(onRequest): a function is required").ThrowAsJavaScriptException();
    return;
  }
  env_ = env;
  on_request_ = Napi::Persistent(info[0].As<Napi::Function>());
  async_context_ = std::make_unique<Napi::AsyncContext>(env, "steved:fuse");
  napi_add_env_cleanup_hook(env, &Session::CleanupHook, this);
}

Session::~Session() {
  Shutdown("");
  napi_remove_env_cleanup_hook(env_, &Session::CleanupHook, this);
}

void Session::CleanupHook(void* arg) { static_cast<Session*>(arg)->Shutdown(""); }

// --- the operations the kernel sends -------------------------------------------------------

void Session::DoInit(void* userdata, struct fuse_conn_info* conn) {
  // Nothing to negotiate: defaults suit a single-file server.
}

void Session::DoInitDone(void* userdata) {
  static_cast<Session*>(userdata)->Emit(kReady, 0, 0, 0, 0, 0, 0, 0, nullptr, 0);
}

void Session::DoFileInit(void* userdata, struct fuse_conn_info* conn) {
  // For a FUSE mount, INIT is the first request; the file is usable from here on.
  static_cast<Session*>(userdata)->pending_ready_ = true;
}

void Session::DoLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ENOENT);  // the mount root is a file; it has no entries
}

void Session::FillAttr(struct stat* st) const {
  memset(st, 0, sizeof(*st));
  st->st_ino = FUSE_ROOT_ID;
  st->st_mode = S_IFREG | file_mode_;
  st->st_nlink = 1;
  st->st_uid = file_uid_;
  st->st_gid = file_gid_;
  st->st_size = 0;
  st->st_blksize = 1;
  st->st_atim = st->st_mtim = st->st_ctim = started_;
}

void Session::DoGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  SessionOf(req)->FillAttr(&st);
  fuse_reply_attr(req, &st, 0);
}

void Session::DoSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                        struct fuse_file_info* fi) {
  // Shell redirections open with O_TRUNC and may truncate: accept and change nothing.
  DoGetattr(req, ino, fi);
}

void Session::DoOpen(fuse_req_t req, struct fuse_file_info* fi) {
  Session* s = SessionOf(req);
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  fi->fh = s->next_fh_++;
  // Every read and write must reach us: no page cache, no offsets, no flush traffic.
  fi->direct_io = 1;
  fi->keep_cache = 0;
  fi->nonseekable = 1;
  fi->noflush = 1;
  // Open never blocks and never fails here: accounting starts with the OPEN event below.
  if (fuse_reply_open(req, fi) != 0) return;
  s->Emit(kOpen, 0, fi->fh, ctx->pid, ctx->uid, ctx->gid, fi->flags, 0, nullptr, 0);
}

void Session::DoFileOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  // A regular file's read() and write() on one open file shared by threads take the file
  // position lock, so a write (a token coming back) would wait behind a parked blocking read
  // on the same file: a deadlock for a client that reads in a helper thread and releases from
  // another on one O_RDWR descriptor. FOPEN_STREAM removes that lock, but libfuse 3.14's
  // fuse_file_info has no bit for it, so the open reply (struct fuse_open_out) is sent whole.
  // CUSE devices are character devices: the kernel takes no position lock for them.
  constexpr uint32_t kFopenDirectIo = 1u << 0, kFopenNonseekable = 1u << 2, kFopenStream = 1u << 4,
                     kFopenNoflush = 1u << 5;
  Session* s = SessionOf(req);
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  fi->fh = s->next_fh_++;
  struct {
    uint64_t fh;
    uint32_t open_flags;
    uint32_t padding;
  } out = {fi->fh, kFopenDirectIo | kFopenNonseekable | kFopenStream | kFopenNoflush, 0};
  if (fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof(out)) != 0) return;
  s->Emit(kOpen, 0, fi->fh, ctx->pid, ctx->uid, ctx->gid, fi->flags, 0, nullptr, 0);
}

void Session::DoRead(fuse_req_t req, size_t size, off_t off, struct fuse_file_info* fi) {
  Session* s = SessionOf(req);
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  double id = s->Track(req);
  // The callback may run right here if the interrupt came first; it only records the id.
  fuse_req_interrupt_func(req, &Session::OnInterrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  s->Emit(kRead, id, fi->fh, ctx->pid, ctx->uid, ctx->gid, fi->flags, static_cast<double>(size), nullptr, 0);
}

void Session::DoFileRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi) {
  DoRead(req, size, off, fi);
}

void Session::DoWrite(fuse_req_t req, const char* buf, size_t size, off_t off, struct fuse_file_info* fi) {
  Session* s = SessionOf(req);
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  double id = s->Track(req);
  s->Emit(kWrite, id, fi->fh, ctx->pid, ctx->uid, ctx->gid, fi->flags, static_cast<double>(size), nullptr, 0);
}

void Session::DoFileWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                          struct fuse_file_info* fi) {
  DoWrite(req, buf, size, off, fi);
}

void Session::DoFlush(fuse_req_t req, struct fuse_file_info* fi) { fuse_reply_err(req, 0); }

void Session::DoFileFlush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) { fuse_reply_err(req, 0); }

void Session::DoRelease(fuse_req_t req, struct fuse_file_info* fi) {
  Session* s = SessionOf(req);
  uint64_t fh = fi->fh;
  fuse_reply_err(req, 0);
  s->DropPollHandle(fh);
  // RELEASE carries pid 0: JavaScript knows the opener from the OPEN event.
  s->Emit(kRelease, 0, fh, 0, 0, 0, 0, 0, nullptr, 0);
}

void Session::DoFileRelease(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) { DoRelease(req, fi); }

void Session::DoPoll(fuse_req_t req, struct fuse_file_info* fi, struct fuse_pollhandle* ph) {
  Session* s = SessionOf(req);
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  if (ph != nullptr) {
    // libfuse hands out a new handle per POLL for the same kernel handle: keep the newest.
    s->DropPollHandle(fi->fh);
    s->poll_handles_[fi->fh] = ph;
  }
  double id = s->Track(req);
  s->Emit(kPoll, id, fi->fh, ctx->pid, ctx->uid, ctx->gid, ph != nullptr ? 1 : 0, fi->poll_events, nullptr, 0);
}

void Session::DoFilePoll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi, struct fuse_pollhandle* ph) {
  DoPoll(req, fi, ph);
}

void Session::DoIoctl(fuse_req_t req, unsigned int cmd, unsigned flags, struct fuse_file_info* fi,
                      const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  Session* s = SessionOf(req);
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  if (flags & FUSE_IOCTL_COMPAT) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  double id = s->Track(req);
  s->Emit(kIoctl, id, fi->fh, ctx->pid, ctx->uid, ctx->gid, static_cast<double>(cmd), static_cast<double>(out_bufsz),
          in_buf, in_bufsz);
}

void Session::DoCuseIoctl(fuse_req_t req, int cmd, void* arg, struct fuse_file_info* fi, unsigned int flags,
                          const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  DoIoctl(req, static_cast<unsigned int>(cmd), flags, fi, in_buf, in_bufsz, out_bufsz);
}

void Session::DoFileIoctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void* arg, struct fuse_file_info* fi,
                          unsigned flags, const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  DoIoctl(req, cmd, flags, fi, in_buf, in_bufsz, out_bufsz);
}

void Session::OnInterrupt(fuse_req_t req, void* data) {
  // Called with libfuse's request lock held: replying here would free the request under
  // that lock. Record the id; Pump() reports it once process_buf has returned.
  SessionOf(req)->interrupted_.push_back(static_cast<double>(reinterpret_cast<uintptr_t>(data)));
}

// --- bookkeeping -------------------------------------------------------------------------

double Session::Track(fuse_req_t req) {
  double id = static_cast<double>(next_id_++);
  pending_[id] = req;
  return id;
}

fuse_req_t Session::Take(double id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return nullptr;
  fuse_req_t req = it->second;
  pending_.erase(it);
  return req;
}

void Session::DropPollHandle(uint64_t fh) {
  auto it = poll_handles_.find(fh);
  if (it == poll_handles_.end()) return;
  fuse_pollhandle_destroy(it->second);
  poll_handles_.erase(it);
}

void Session::Emit(int kind, double id, uint64_t fh, pid_t tid, uid_t uid, gid_t gid, double a, double b,
                   const void* data, size_t size) {
  if (closed_) return;
  Napi::Env env = env_;
  std::vector<napi_value> args = {
      Napi::Number::New(env, kind),
      Napi::Number::New(env, id),
      Napi::Number::New(env, static_cast<double>(fh)),
      Napi::Number::New(env, tid),
      Napi::Number::New(env, uid),
      Napi::Number::New(env, gid),
      Napi::Number::New(env, a),
      Napi::Number::New(env, b),
  };
  if (data != nullptr) args.push_back(Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(data), size));
  on_request_.Call(env.Undefined(), args);
  if (env.IsExceptionPending()) {
    // A throwing handler is a bug in the daemon: surface it as an uncaught exception.
    Napi::Error e = env.GetAndClearPendingException();
    napi_fatal_exception(env, e.Value());
  }
}

// --- the event loop ------------------------------------------------------------------------

int Session::StartPolling() {
  int fd = fuse_session_fd(se_);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env_, &loop) != napi_ok) return -EINVAL;
  poll_ = new uv_poll_t;
  poll_->data = this;
  int r = uv_poll_init(loop, poll_, fd);
  if (r == 0) r = uv_poll_start(poll_, UV_READABLE, &Session::OnReadable);
  if (r != 0) {
    delete poll_;
    poll_ = nullptr;
    return r;  // libuv errors are already -errno on Unix
  }
  return 0;
}

void Session::OnReadable(uv_poll_t* handle, int status, int events) {
  Session* s = static_cast<Session*>(handle->data);
  Napi::HandleScope scope(s->env_);
  Napi::CallbackScope cbscope(s->env_, *s->async_context_);
  s->Pump();
}

void Session::Pump() {
  // Drain everything the kernel has queued, then go back to the loop.
  while (!closed_ && se_ != nullptr) {
    int r = fuse_session_receive_buf(se_, &buf_);
    if (r == -EAGAIN) break;
    if (r == -EINTR) continue;
    if (r <= 0 || fuse_session_exited(se_)) {
      // 0 or -ENODEV: unmounted behind our back, or the CUSE device went away.
      StopPolling();
      Emit(kGone, 0, 0, 0, 0, 0, r, 0, nullptr, 0);
      return;
    }
    fuse_session_process_buf(se_, &buf_);
    if (pending_ready_) {
      pending_ready_ = false;
      Emit(kReady, 0, 0, 0, 0, 0, 0, 0, nullptr, 0);
    }
    while (!interrupted_.empty()) {
      std::vector<double> ids;
      ids.swap(interrupted_);
      for (double id : ids) {
        if (pending_.count(id)) Emit(kInterrupt, id, 0, 0, 0, 0, 0, 0, nullptr, 0);
      }
    }
  }
}

void Session::StopPolling() {
  if (poll_ == nullptr) return;
  uv_poll_stop(poll_);
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  poll_ = nullptr;
}

void Session::Shutdown(const std::string& unmount_path) {
  if (closed_) return;
  closed_ = true;
  StopPolling();
  // Requests still parked get an error so no caller is left in D state.
  for (auto& kv : pending_) fuse_reply_err(kv.second, EINTR);
  pending_.clear();
  for (auto& kv : poll_handles_) fuse_pollhandle_destroy(kv.second);
  poll_handles_.clear();
  if (se_ != nullptr) {
    // The caller may name the mount another way (/proc/self/fd/N of a handle it kept): the
    // path we mounted on is gone when a directory above it was renamed.
    bool done = !unmount_path.empty() && umount2(unmount_path.c_str(), MNT_DETACH) == 0;
    if (mounted_ && !done) fuse_session_unmount(se_);
    fuse_session_destroy(se_);
    se_ = nullptr;
  }
  free(buf_.mem);
  buf_.mem = nullptr;
}

// --- JavaScript-facing methods --------------------------------------------------------------

// mountFile(path, options, mode, uid, gid) -> 0 | -errno
Napi::Value Session::MountFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (se_ != nullptr || closed_) return Napi::Number::New(env, -EALREADY);
  std::string path = info[0].As<Napi::String>();
  std::string opts = info[1].As<Napi::String>();
  file_mode_ = info[2].As<Napi::Number>().Uint32Value() & 07777;
  file_uid_ = info[3].As<Napi::Number>().Uint32Value();
  file_gid_ = info[4].As<Napi::Number>().Uint32Value();
  clock_gettime(CLOCK_REALTIME, &started_);

  static const struct fuse_lowlevel_ops ops = [] {
    struct fuse_lowlevel_ops o;
    memset(&o, 0, sizeof(o));
    o.init = &Session::DoFileInit;
    o.lookup = &Session::DoLookup;
    o.getattr = &Session::DoGetattr;
    o.setattr = &Session::DoSetattr;
    o.open = &Session::DoFileOpen;
    o.read = &Session::DoFileRead;
    o.write = &Session::DoFileWrite;
    o.flush = &Session::DoFileFlush;
    o.release = &Session::DoFileRelease;
    o.ioctl = &Session::DoFileIoctl;
    o.poll = &Session::DoFilePoll;
    return o;
  }();
  std::vector<std::string> argv_s = {"steved"};
  if (!opts.empty()) {
    argv_s.push_back("-o");
    argv_s.push_back(opts);
  }
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
  struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  se_ = fuse_session_new(&args, &ops, sizeof(ops), this);
  if (se_ == nullptr) return Napi::Number::New(env, -EINVAL);
  if (fuse_session_mount(se_, path.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    return Napi::Number::New(env, -EIO);  // libfuse has printed why on stderr
  }
  mounted_ = true;
  int r = StartPolling();
  return Napi::Number::New(env, r);
}

// registerDevice(devName, cuseDevice) -> 0 | -errno
Napi::Value Session::RegisterDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (se_ != nullptr || closed_) return Napi::Number::New(env, -EALREADY);
  std::string name = info[0].As<Napi::String>();
  std::string cuse_path = info[1].As<Napi::String>();

  static const struct cuse_lowlevel_ops ops = [] {
    struct cuse_lowlevel_ops o;
    memset(&o, 0, sizeof(o));
    o.init = &Session::DoInit;
    o.init_done = &Session::DoInitDone;
    o.open = &Session::DoOpen;
    o.read = &Session::DoRead;
    o.write = &Session::DoWrite;
    o.flush = &Session::DoFlush;
    o.release = &Session::DoRelease;
    o.ioctl = &Session::DoCuseIoctl;
    o.poll = &Session::DoPoll;
    return o;
  }();
  std::string devinfo = "DEVNAME=" + name;
  const char* dev_info_argv[] = {devinfo.c_str()};
  struct cuse_info ci;
  memset(&ci, 0, sizeof(ci));
  ci.dev_info_argc = 1;
  ci.dev_info_argv = dev_info_argv;
  ci.flags = 0;  // restricted ioctls: sizes come from the _IOC encoding of each command

  int fd = open(cuse_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Napi::Number::New(env, -errno);
  char* argv0 = const_cast<char*>("steved");
  struct fuse_args args = FUSE_ARGS_INIT(1, &argv0);
  se_ = cuse_lowlevel_new(&args, &ci, &ops, this);
  if (se_ == nullptr) {
    close(fd);
    return Napi::Number::New(env, -EINVAL);
  }
  // libfuse adopts an already-open /dev/cuse descriptor given as /dev/fd/N.
  char fdpath[32];
  snprintf(fdpath, sizeof(fdpath), "/dev/fd/%d", fd);
  if (fuse_session_mount(se_, fdpath) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    close(fd);
    return Napi::Number::New(env, -EIO);
  }
  mounted_ = false;  // nothing to unmount: closing the fd removes the device
  int r = StartPolling();
  return Napi::Number::New(env, r);
}

// replyData(id, Buffer) -> 0 | -errno
Napi::Value Session::ReplyData(const Napi::CallbackInfo& info) {
  fuse_req_t req = Take(info[0].As<Napi::Number>().DoubleValue());
  if (req == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
  return Napi::Number::New(info.Env(), fuse_reply_buf(req, reinterpret_cast<const char*>(b.Data()), b.Length()));
}

// replyError(id, errno) -> 0 | -errno
Napi::Value Session::ReplyError(const Napi::CallbackInfo& info) {
  fuse_req_t req = Take(info[0].As<Napi::Number>().DoubleValue());
  if (req == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  return Napi::Number::New(info.Env(), fuse_reply_err(req, info[1].As<Napi::Number>().Int32Value()));
}

// replyWrite(id, count) -> 0 | -errno
Napi::Value Session::ReplyWrite(const Napi::CallbackInfo& info) {
  fuse_req_t req = Take(info[0].As<Napi::Number>().DoubleValue());
  if (req == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  return Napi::Number::New(info.Env(), fuse_reply_write(req, info[1].As<Napi::Number>().Uint32Value()));
}

// replyPoll(id, revents) -> 0 | -errno
Napi::Value Session::ReplyPoll(const Napi::CallbackInfo& info) {
  fuse_req_t req = Take(info[0].As<Napi::Number>().DoubleValue());
  if (req == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  return Napi::Number::New(info.Env(), fuse_reply_poll(req, info[1].As<Napi::Number>().Uint32Value()));
}

// replyIoctl(id, result, Buffer|undefined) -> 0 | -errno
Napi::Value Session::ReplyIoctl(const Napi::CallbackInfo& info) {
  fuse_req_t req = Take(info[0].As<Napi::Number>().DoubleValue());
  if (req == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  int result = info[1].As<Napi::Number>().Int32Value();
  if (info.Length() > 2 && info[2].IsBuffer()) {
    Napi::Buffer<uint8_t> b = info[2].As<Napi::Buffer<uint8_t>>();
    return Napi::Number::New(info.Env(), fuse_reply_ioctl(req, result, b.Data(), b.Length()));
  }
  return Napi::Number::New(info.Env(), fuse_reply_ioctl(req, result, nullptr, 0));
}

// notifyPoll(fh) -> 0 | -errno (-ENOENT: nobody polls that file)
Napi::Value Session::NotifyPoll(const Napi::CallbackInfo& info) {
  uint64_t fh = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  auto it = poll_handles_.find(fh);
  if (it == poll_handles_.end()) return Napi::Number::New(info.Env(), -ENOENT);
  return Napi::Number::New(info.Env(), fuse_lowlevel_notify_poll(it->second));
}

// close(unmountPath?): idempotent; unmounts (FUSE; through unmountPath when given and that
// works) or unregisters (CUSE).
Napi::Value Session::Close(const Napi::CallbackInfo& info) {
  std::string unmount_path;
  if (info.Length() > 0 && info[0].IsString()) unmount_path = info[0].As<Napi::String>();
  Shutdown(unmount_path);
  return info.Env().Undefined();
}

}  // namespace steved
