// Owned UCX objects for the bridge: a context with active messages and
// wake-up, one worker driven by one thread, endpoints closed by force, and
// the wait on the worker's event fd. Private to the bridge library.
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <string>

namespace fbuf::bridge {

// Throws fbuf::Error (errno EIO) carrying UCX's status text and `context`.
[[noreturn]] void throw_ucx(ucs_status_t status, const std::string& context);

// A context and its one worker (UCS_THREAD_MODE_SINGLE: only the bridge
// thread touches it after construction).
class Worker {
 public:
  Worker();
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  ucp_context_h context() const noexcept { return context_; }
  ucp_worker_h get() const noexcept { return worker_; }
  // Progresses until UCX has nothing more to do right now.
  void progress() noexcept;
  // Sleeps on the worker's event fd, `extra_fd` and `extra_fd2` (-1: none)
  // until one is readable or `timeout` passes; returns at once if UCX has
  // work (ucp_worker_arm said UCS_ERR_BUSY). True if an extra fd is ready.
  bool wait(int extra_fd, int extra_fd2, std::chrono::milliseconds timeout) noexcept;
  // Closes `ep` by force (in-flight operations complete with an error)
  // and progresses until the close is done.
  void close(ucp_ep_h ep) noexcept;

 private:
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int efd_ = -1;
};

// "ADDR:PORT" or an address and port into a sockaddr for UCX. Throws Error.
struct SockAddr {
  sockaddr_storage storage{};
  socklen_t length = 0;
};
SockAddr resolve(const std::string& host, std::uint16_t port);

}  // namespace fbuf::bridge
