// Corosync CPG (closed process group) binding for Node, built with node-addon-api.
//
// One CpgHandle wraps one cpg_handle_t. The handle's IPC fd is watched by a uv_poll_t on the
// Node event loop; when it becomes readable we run cpg_dispatch(CS_DISPATCH_ALL). libcpg's
// deliver/confchg callbacks copy each event into a queue, and once cpg_dispatch has returned the
// JS callbacks are called for them in order, on the main thread (see OnPoll for why not from
// inside cpg_dispatch). No threads, no timers, no busy polling.
//
// Lifetime rules:
//  * The poll is unref'd unless the handle is joined, so an idle handle never keeps the
//    process alive; while joined the JS object is also held strongly (ObjectWrap::Ref) so the
//    garbage collector cannot free it while corosync may still deliver to it.
//  * finalize() stops and closes the poll, drops queued events and calls cpg_finalize; it is
//    idempotent and may be called from a listener.
//  * The uv_poll_t is heap-allocated and freed by its close callback, never by the object.

#include <napi.h>
#include <uv.h>

#include <corosync/cpg.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <sys/uio.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

// Retry policy for CS_ERR_TRY_AGAIN (corosync is busy: flow control, membership change).
// Bounded: kTryAgainAttempts sleeps, growing from 1 ms to at most 20 ms (about 1.5 s total).
constexpr int kTryAgainAttempts = 100;

const char *CsErrorName(cs_error_t err) {
  switch (err) {
    case CS_OK: return "CS_OK";
    case CS_ERR_LIBRARY: return "CS_ERR_LIBRARY";
    case CS_ERR_VERSION: return "CS_ERR_VERSION";
    case CS_ERR_INIT: return "CS_ERR_INIT";
    case CS_ERR_TIMEOUT: return "CS_ERR_TIMEOUT";
    case CS_ERR_TRY_AGAIN: return "CS_ERR_TRY_AGAIN";
    case CS_ERR_INVALID_PARAM: return "CS_ERR_INVALID_PARAM";
    case CS_ERR_NO_MEMORY: return "CS_ERR_NO_MEMORY";
    case CS_ERR_BAD_HANDLE: return "CS_ERR_BAD_HANDLE";
    case CS_ERR_BUSY: return "CS_ERR_BUSY";
    case CS_ERR_ACCESS: return "CS_ERR_ACCESS";
    case CS_ERR_NOT_EXIST: return "CS_ERR_NOT_EXIST";
    case CS_ERR_NAME_TOO_LONG: return "CS_ERR_NAME_TOO_LONG";
    case CS_ERR_EXIST: return "CS_ERR_EXIST";
    case CS_ERR_NO_SPACE: return "CS_ERR_NO_SPACE";
    case CS_ERR_INTERRUPT: return "CS_ERR_INTERRUPT";
    case CS_ERR_NAME_NOT_FOUND: return "CS_ERR_NAME_NOT_FOUND";
    case CS_ERR_NO_RESOURCES: return "CS_ERR_NO_RESOURCES";
    case CS_ERR_NOT_SUPPORTED: return "CS_ERR_NOT_SUPPORTED";
    case CS_ERR_BAD_OPERATION: return "CS_ERR_BAD_OPERATION";
    case CS_ERR_FAILED_OPERATION: return "CS_ERR_FAILED_OPERATION";
    case CS_ERR_MESSAGE_ERROR: return "CS_ERR_MESSAGE_ERROR";
    case CS_ERR_QUEUE_FULL: return "CS_ERR_QUEUE_FULL";
    case CS_ERR_QUEUE_NOT_AVAILABLE: return "CS_ERR_QUEUE_NOT_AVAILABLE";
    case CS_ERR_BAD_FLAGS: return "CS_ERR_BAD_FLAGS";
    case CS_ERR_TOO_BIG: return "CS_ERR_TOO_BIG";
    case CS_ERR_NO_SECTIONS: return "CS_ERR_NO_SECTIONS";
    case CS_ERR_CONTEXT_NOT_FOUND: return "CS_ERR_CONTEXT_NOT_FOUND";
    case CS_ERR_TOO_MANY_GROUPS: return "CS_ERR_TOO_MANY_GROUPS";
    case CS_ERR_SECURITY: return "CS_ERR_SECURITY";
  }
  return "CS_ERR_UNKNOWN";
}

// "<what> failed: CS_ERR_X (hint)" -- the hint explains the errors a user can act on.
std::string CsMessage(const char *what, cs_error_t err) {
  std::string msg = std::string(what) + " failed: " + CsErrorName(err);
  switch (err) {
    case CS_ERR_LIBRARY:
      msg += " (is corosync running?)";
      break;
    case CS_ERR_TRY_AGAIN:
      msg += " (corosync stayed busy: flow control or membership change)";
      break;
    case CS_ERR_ACCESS:
      msg += " (permission denied by corosync: run as root or add a uidgid entry)";
      break;
    case CS_ERR_BAD_HANDLE:
      msg += " (the cpg handle is no longer valid)";
      break;
    case CS_ERR_TOO_BIG:
      msg += " (message too large)";
      break;
    default:
      break;
  }
  return msg;
}

void SleepMs(int ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = static_cast<long>(ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

// Runs op() until it returns something other than CS_ERR_TRY_AGAIN, or the retry budget runs
// out. Blocks the thread for the sleeps, which is bounded and short.
template <typename Op>
cs_error_t RetryTryAgain(Op op) {
  cs_error_t err = op();
  int delay = 1;
  for (int i = 0; err == CS_ERR_TRY_AGAIN && i < kTryAgainAttempts; i++) {
    SleepMs(delay);
    if (delay < 20) delay++;
    err = op();
  }
  return err;
}

class CpgHandle : public Napi::ObjectWrap<CpgHandle> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "CpgHandle",
                                      {
                                          InstanceMethod("join", &CpgHandle::Join),
                                          InstanceMethod("mcast", &CpgHandle::Mcast),
                                          InstanceMethod("localGet", &CpgHandle::LocalGet),
                                          InstanceMethod("leave", &CpgHandle::Leave),
                                          InstanceMethod("finalize", &CpgHandle::Finalize),
                                      });
    exports.Set("CpgHandle", ctor);
    return exports;
  }

  // new CpgHandle(groupName, onDeliver, onConfchg[, onError])
  explicit CpgHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<CpgHandle>(info) {
    Napi::Env env = info.Env();
    std::memset(&group_, 0, sizeof(group_));

    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsFunction() ||
        !info[2].IsFunction() || (info.Length() > 3 && !info[3].IsFunction() &&
                                  !info[3].IsUndefined())) {
      Napi::TypeError::New(env,
                           "CpgHandle(groupName: string, onDeliver: Function, onConfchg: "
                           "Function, onError?: Function)")
          .ThrowAsJavaScriptException();
      return;
    }
    std::string name = info[0].As<Napi::String>().Utf8Value();
    if (name.empty() || name.size() > CPG_MAX_NAME_LENGTH) {
      Napi::RangeError::New(env, "cpg group name must be 1.." +
                                     std::to_string(CPG_MAX_NAME_LENGTH) + " bytes, got " +
                                     std::to_string(name.size()))
          .ThrowAsJavaScriptException();
      return;
    }
    group_.length = static_cast<uint32_t>(name.size());
    std::memcpy(group_.value, name.data(), name.size());

    on_deliver_ = Napi::Persistent(info[1].As<Napi::Function>());
    on_confchg_ = Napi::Persistent(info[2].As<Napi::Function>());
    if (info.Length() > 3 && info[3].IsFunction()) {
      on_error_ = Napi::Persistent(info[3].As<Napi::Function>());
    }

    cpg_model_v1_data_t model;
    std::memset(&model, 0, sizeof(model));
    model.model = CPG_MODEL_V1;
    model.cpg_deliver_fn = &CpgHandle::OnDeliverC;
    model.cpg_confchg_fn = &CpgHandle::OnConfchgC;
    model.cpg_totem_confchg_fn = nullptr;
    model.flags = 0;

    cpg_handle_t handle = 0;
    cs_error_t err = RetryTryAgain([&]() {
      return cpg_model_initialize(&handle, CPG_MODEL_V1,
                                  reinterpret_cast<cpg_model_data_t *>(&model), this);
    });
    if (err != CS_OK) {
      ThrowCs(env, "cpg_initialize", err);
      return;
    }
    handle_ = handle;
    initialized_ = true;

    int fd = -1;
    err = cpg_fd_get(handle_, &fd);
    if (err != CS_OK) {
      ThrowCs(env, "cpg_fd_get", err);
      ReleaseCpg();
      return;
    }

    uv_loop_t *loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "cpg: cannot get the libuv event loop").ThrowAsJavaScriptException();
      ReleaseCpg();
      return;
    }
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(loop, poll_, fd);
    if (rc != 0) {
      delete poll_;
      poll_ = nullptr;
      Napi::Error::New(env, std::string("cpg: uv_poll_init failed: ") + uv_strerror(rc))
          .ThrowAsJavaScriptException();
      ReleaseCpg();
      return;
    }
    poll_->data = this;
    rc = uv_poll_start(poll_, UV_READABLE, &CpgHandle::OnPoll);
    if (rc != 0) {
      ClosePoll();
      Napi::Error::New(env, std::string("cpg: uv_poll_start failed: ") + uv_strerror(rc))
          .ThrowAsJavaScriptException();
      ReleaseCpg();
      return;
    }
    // Not joined yet: an idle handle must not keep the process alive.
    uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
    async_context_ = new Napi::AsyncContext(env, "CpgGroup");
  }

  ~CpgHandle() override {
    // Reached when the JS object is garbage collected (never while joined, see Ref()) or at
    // environment teardown. Release native resources without touching JS.
    ClosePoll();
    ReleaseCpg();
    delete async_context_;
    async_context_ = nullptr;
  }

 private:
  // --- JS methods -------------------------------------------------------------------------

  Napi::Value Join(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!CheckLive(env, "join")) return env.Undefined();
    if (joined_) {
      Napi::Error::New(env, "cpg_join failed: already joined to " + GroupName())
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (left_) {
      // corosync answers CS_ERR_EXIST: a handle's membership slot lasts until cpg_finalize.
      Napi::Error::New(env, "cpg_join failed: this handle already left " + GroupName() +
                                "; corosync does not let a handle join twice: finalize it and "
                                "use a new one")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    cs_error_t err = RetryTryAgain([&]() { return cpg_join(handle_, &group_); });
    if (err == CS_ERR_EXIST) {
      // corosync names a member by (nodeid, pid): one process can join a group only once.
      Napi::Error e = Napi::Error::New(
          env, "cpg_join failed: CS_ERR_EXIST (this process is already a member of " +
                   GroupName() +
                   " through another handle; one member per process per group, and a handle "
                   "that left keeps its place until it is finalized)");
      e.Set("code", Napi::String::New(env, CsErrorName(err)));
      e.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (err != CS_OK) {
      ThrowCs(env, "cpg_join", err);
      return env.Undefined();
    }
    joined_ = true;
    Ref();  // keep the JS object (and its callbacks) alive while corosync may deliver to it
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t *>(poll_));
    return env.Undefined();
  }

  Napi::Value Mcast(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!CheckLive(env, "mcast")) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsBuffer()) {
      Napi::TypeError::New(env, "mcast(msg: Buffer)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!joined_) {
      Napi::Error::New(env, "cpg_mcast_joined failed: not joined to " + GroupName() +
                                " (call join() first)")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Buffer<uint8_t> buf = info[0].As<Napi::Buffer<uint8_t>>();
    struct iovec iov;
    iov.iov_base = buf.Data();
    iov.iov_len = buf.Length();
    cs_error_t err =
        RetryTryAgain([&]() { return cpg_mcast_joined(handle_, CPG_TYPE_AGREED, &iov, 1); });
    if (err != CS_OK) ThrowCs(env, "cpg_mcast_joined", err);
    return env.Undefined();
  }

  Napi::Value LocalGet(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!CheckLive(env, "localGet")) return env.Undefined();
    unsigned int nodeid = 0;
    cs_error_t err = RetryTryAgain([&]() { return cpg_local_get(handle_, &nodeid); });
    if (err != CS_OK) {
      ThrowCs(env, "cpg_local_get", err);
      return env.Undefined();
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("nodeid", Napi::Number::New(env, static_cast<double>(nodeid)));
    o.Set("pid", Napi::Number::New(env, static_cast<double>(getpid())));
    return o;
  }

  Napi::Value Leave(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!CheckLive(env, "leave")) return env.Undefined();
    if (!joined_) return env.Undefined();
    cs_error_t err = RetryTryAgain([&]() { return cpg_leave(handle_, &group_); });
    if (err != CS_OK) {
      ThrowCs(env, "cpg_leave", err);
      return env.Undefined();
    }
    left_ = true;
    MarkNotJoined();
    return env.Undefined();
  }

  Napi::Value Finalize(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (finalized_) return env.Undefined();
    finalized_ = true;
    MarkNotJoined();
    ClosePoll();
    // Break the JS <-> native reference cycle so the object can be collected.
    on_deliver_.Reset();
    on_confchg_.Reset();
    on_error_.Reset();
    pending_.clear();
    ReleaseCpg();  // never reached during cpg_dispatch: JS runs only after it returns
    return env.Undefined();
  }

  // --- helpers ----------------------------------------------------------------------------

  std::string GroupName() const {
    return "cpg group \"" + std::string(group_.value, group_.length) + "\"";
  }

  bool CheckLive(Napi::Env env, const char *method) {
    if (finalized_ || !initialized_) {
      Napi::Error::New(env, std::string("cpg ") + method + "() on a finalized handle (" +
                                GroupName() + " was closed)")
          .ThrowAsJavaScriptException();
      return false;
    }
    if (lost_) {
      Napi::Error::New(env, std::string("cpg ") + method + "() after the connection to corosync " +
                                "was lost: " + lost_reason_)
          .ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  static void ThrowCs(Napi::Env env, const char *what, cs_error_t err) {
    Napi::Error e = Napi::Error::New(env, CsMessage(what, err));
    e.Set("code", Napi::String::New(env, CsErrorName(err)));
    e.ThrowAsJavaScriptException();
  }

  void MarkNotJoined() {
    if (!joined_) return;
    joined_ = false;
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
    Unref();
  }

  void ClosePoll() {
    if (poll_ == nullptr) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(poll_),
             [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
    poll_ = nullptr;
  }

  void ReleaseCpg() {
    if (!initialized_) return;
    initialized_ = false;
    cpg_finalize(handle_);
    handle_ = 0;
  }

  // Calls fn(args) from a libuv callback, with the raw N-API call so that a failure never
  // aborts the process. A throwing listener becomes an uncaught exception (process
  // 'uncaughtException'), exactly as for any other event-loop callback.
  void CallJs(Napi::Env env, Napi::FunctionReference &fn, std::initializer_list<napi_value> args) {
    if (fn.IsEmpty()) return;
    napi_value f = nullptr;
    if (napi_get_reference_value(env, fn, &f) != napi_ok || f == nullptr) return;
    napi_value recv = nullptr;
    napi_get_undefined(env, &recv);
    napi_value result = nullptr;
    if (napi_call_function(env, recv, f, args.size(), args.begin(), &result) == napi_ok) return;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value exc = nullptr;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }

  // False once the environment is shutting down (JS may no longer run): then node-addon-api
  // calls that need JS would abort the process, so the poll callback must not touch JS at all.
  static bool CanCallJs(napi_env env) {
    napi_value obj = nullptr;
    napi_value undefined = nullptr;
    if (napi_create_object(env, &obj) != napi_ok || napi_get_undefined(env, &undefined) != napi_ok) {
      return false;
    }
    return napi_set_named_property(env, obj, "probe", undefined) == napi_ok;
  }

  // Environment teardown: release everything without calling JS.
  void ShutDownQuietly() {
    finalized_ = true;
    pending_.clear();
    MarkNotJoined();
    ClosePoll();
    ReleaseCpg();
  }

  void ConnectionLost(Napi::Env env, const std::string &reason) {
    lost_ = true;
    lost_reason_ = reason;
    MarkNotJoined();
    ClosePoll();
    if (!on_error_.IsEmpty()) {
      CallJs(env, on_error_, {Napi::String::New(env, reason)});
    }
  }

  // --- libuv / libcpg callbacks -----------------------------------------------------------
  //
  // cpg_dispatch() reserves about 1 MiB of C stack for its receive buffer, more than V8's own
  // stack limit (--stack-size, ~984 KiB by default) leaves. Any call into JS from inside
  // cpg_dispatch's callbacks therefore fails at once with "RangeError: Maximum call stack size
  // exceeded". So the libcpg callbacks only copy each event into pending_, and OnPoll calls the
  // JS functions after cpg_dispatch has returned, still on the main thread and in order.

  static void OnPoll(uv_poll_t *handle, int status, int events) {
    CpgHandle *self = static_cast<CpgHandle *>(handle->data);
    if (self == nullptr || self->finalized_ || !self->initialized_ ||
        self->async_context_ == nullptr) {
      return;
    }
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    if (!CanCallJs(env)) {
      self->ShutDownQuietly();
      return;
    }
    // Keep the JS object alive while we call out, even if a listener drops its last reference.
    self->Ref();
    {
      // A callback scope makes promise continuations and process.nextTick callbacks queued by
      // listeners run right after these events, as for any other I/O callback.
      Napi::CallbackScope cb_scope(env, *self->async_context_);
      if (status < 0) {
        self->ConnectionLost(env, std::string("poll on the corosync IPC fd failed: ") +
                                      uv_strerror(status));
      } else if (events & UV_READABLE) {
        self->dispatching_ = true;
        cs_error_t err = cpg_dispatch(self->handle_, CS_DISPATCH_ALL);
        self->dispatching_ = false;
        self->DeliverPending(env);
        if (err != CS_OK && err != CS_ERR_TRY_AGAIN && !self->finalized_ && !self->lost_) {
          // CS_ERR_LIBRARY / CS_ERR_BAD_HANDLE here mean corosync went away. Stop polling, or
          // the hung-up fd would stay readable forever.
          self->ConnectionLost(env, CsMessage("cpg_dispatch", err));
        }
      }
    }
    self->Unref();
  }

  // Calls the JS callbacks for the events queued during cpg_dispatch. Stops as soon as a
  // listener finalizes the handle.
  void DeliverPending(Napi::Env env) {
    std::vector<Event> events;
    events.swap(pending_);
    for (Event &ev : events) {
      if (finalized_) break;
      Napi::HandleScope scope(env);
      if (ev.deliver) {
        Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, ev.data.data(), ev.data.size());
        CallJs(env, on_deliver_,
               {Napi::Number::New(env, static_cast<double>(ev.nodeid)),
                Napi::Number::New(env, static_cast<double>(ev.pid)), buf});
      } else {
        CallJs(env, on_confchg_,
               {AddressList(env, ev.members, false), AddressList(env, ev.left, true),
                AddressList(env, ev.joined, true)});
      }
    }
  }

  struct Event {
    bool deliver = false;
    uint32_t nodeid = 0;
    uint32_t pid = 0;
    std::vector<uint8_t> data;  // deliver: the message
    std::vector<struct cpg_address> members, left, joined;  // confchg
  };

  static CpgHandle *FromCpg(cpg_handle_t handle) {
    void *ctx = nullptr;
    if (cpg_context_get(handle, &ctx) != CS_OK) return nullptr;
    CpgHandle *self = static_cast<CpgHandle *>(ctx);
    if (self == nullptr || self->finalized_ || !self->dispatching_) return nullptr;
    return self;
  }

  static void OnDeliverC(cpg_handle_t handle, const struct cpg_name * /*group*/, uint32_t nodeid,
                         uint32_t pid, void *msg, size_t msg_len) {
    CpgHandle *self = FromCpg(handle);
    if (self == nullptr) return;
    Event ev;
    ev.deliver = true;
    ev.nodeid = nodeid;
    ev.pid = pid;
    const uint8_t *p = static_cast<const uint8_t *>(msg);
    ev.data.assign(p, p + msg_len);
    self->pending_.push_back(std::move(ev));
  }

  static void OnConfchgC(cpg_handle_t handle, const struct cpg_name * /*group*/,
                         const struct cpg_address *members, size_t n_members,
                         const struct cpg_address *left, size_t n_left,
                         const struct cpg_address *joined, size_t n_joined) {
    CpgHandle *self = FromCpg(handle);
    if (self == nullptr) return;
    Event ev;
    ev.members.assign(members, members + n_members);
    ev.left.assign(left, left + n_left);
    ev.joined.assign(joined, joined + n_joined);
    self->pending_.push_back(std::move(ev));
  }

  static Napi::Array AddressList(Napi::Env env, const std::vector<struct cpg_address> &list,
                                 bool with_reason) {
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("nodeid", Napi::Number::New(env, static_cast<double>(list[i].nodeid)));
      o.Set("pid", Napi::Number::New(env, static_cast<double>(list[i].pid)));
      if (with_reason) o.Set("reason", Napi::Number::New(env, static_cast<double>(list[i].reason)));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  cpg_handle_t handle_ = 0;
  struct cpg_name group_;
  uv_poll_t *poll_ = nullptr;
  Napi::AsyncContext *async_context_ = nullptr;
  Napi::FunctionReference on_deliver_;
  Napi::FunctionReference on_confchg_;
  Napi::FunctionReference on_error_;
  bool initialized_ = false;      // handle_ is a live cpg handle
  bool joined_ = false;           // between a successful join() and leave()/finalize()/loss
  bool left_ = false;             // leave() succeeded: this handle cannot join again
  bool finalized_ = false;        // finalize() was called
  bool dispatching_ = false;      // inside cpg_dispatch
  bool lost_ = false;             // cpg_dispatch reported the connection gone
  std::string lost_reason_;
  std::vector<Event> pending_;    // events from the current cpg_dispatch, for DeliverPending
};

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return CpgHandle::Init(env, exports);
}

}  // namespace

NODE_API_MODULE(cpg, InitModule)
