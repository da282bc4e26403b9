// See session.cc.
#pragma once

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <cuse_lowlevel.h>
#include <napi.h>
#include <uv.h>

#include <memory>
#include <string>
#include <time.h>
#include <unordered_map>
#include <vector>

namespace steved {

class Session : public Napi::ObjectWrap<Session> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  explicit Session(const Napi::CallbackInfo& info);
  ~Session() override;

 private:
  static Napi::FunctionReference constructor_;

  // libfuse callbacks (CUSE signatures, and FUSE-file wrappers that drop the inode).
  static void DoInit(void* userdata, struct fuse_conn_info* conn);
  static void DoInitDone(void* userdata);
  static void DoFileInit(void* userdata, struct fuse_conn_info* conn);
  static void DoLookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  static void DoGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi);
  static void DoSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, struct fuse_file_info* fi);
  static void DoOpen(fuse_req_t req, struct fuse_file_info* fi);
  static void DoFileOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi);
  static void DoRead(fuse_req_t req, size_t size, off_t off, struct fuse_file_info* fi);
  static void DoFileRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi);
  static void DoWrite(fuse_req_t req, const char* buf, size_t size, off_t off, struct fuse_file_info* fi);
  static void DoFileWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                          struct fuse_file_info* fi);
  static void DoFlush(fuse_req_t req, struct fuse_file_info* fi);
  static void DoFileFlush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi);
  static void DoRelease(fuse_req_t req, struct fuse_file_info* fi);
  static void DoFileRelease(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi);
  static void DoPoll(fuse_req_t req, struct fuse_file_info* fi, struct fuse_pollhandle* ph);
  static void DoFilePoll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi, struct fuse_pollhandle* ph);
  static void DoIoctl(fuse_req_t req, unsigned int cmd, unsigned flags, struct fuse_file_info* fi,
                      const void* in_buf, size_t in_bufsz, size_t out_bufsz);
  static void DoCuseIoctl(fuse_req_t req, int cmd, void* arg, struct fuse_file_info* fi, unsigned int flags,
                          const void* in_buf, size_t in_bufsz, size_t out_bufsz);
  static void DoFileIoctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void* arg, struct fuse_file_info* fi,
                          unsigned flags, const void* in_buf, size_t in_bufsz, size_t out_bufsz);
  static void OnInterrupt(fuse_req_t req, void* data);
  static void OnReadable(uv_poll_t* handle, int status, int events);
  static void CleanupHook(void* arg);

  Napi::Value MountFile(const Napi::CallbackInfo& info);
  Napi::Value RegisterDevice(const Napi::CallbackInfo& info);
  Napi::Value ReplyData(const Napi::CallbackInfo& info);
  Napi::Value ReplyError(const Napi::CallbackInfo& info);
  Napi::Value ReplyWrite(const Napi::CallbackInfo& info);
  Napi::Value ReplyPoll(const Napi::CallbackInfo& info);
  Napi::Value ReplyIoctl(const Napi::CallbackInfo& info);
  Napi::Value NotifyPoll(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  double Track(fuse_req_t req);
  fuse_req_t Take(double id);
  void DropPollHandle(uint64_t fh);
  void FillAttr(struct stat* st) const;
  void Emit(int kind, double id, uint64_t fh, pid_t tid, uid_t uid, gid_t gid, double a, double b,
            const void* data, size_t size);
  int StartPolling();
  void StopPolling();
  void Pump();
  void Shutdown(const std::string& unmount_path);

  Napi::Env env_ = nullptr;
  Napi::FunctionReference on_request_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  struct fuse_session* se_ = nullptr;
  struct fuse_buf buf_ = {};
  uv_poll_t* poll_ = nullptr;
  bool mounted_ = false;
  bool closed_ = false;
  bool pending_ready_ = false;
  uint64_t next_fh_ = 1;
  uint64_t next_id_ = 1;
  /** Requests handed to JavaScript and not answered yet, by id. */
  std::unordered_map<double, fuse_req_t> pending_;
  /** The newest poll handle of each open file. */
  std::unordered_map<uint64_t, struct fuse_pollhandle*> poll_handles_;
  /** Ids whose interrupt arrived while libfuse held the request lock. */
  std::vector<double> interrupted_;
  unsigned file_mode_ = 0666;
  uid_t file_uid_ = 0;
  gid_t file_gid_ = 0;
  struct timespec started_ = {};
};

}  // namespace steved
