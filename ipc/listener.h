// The control thread of a listening Sender: accepts receivers on the
// service's socket, runs the server side of the handshake, and notices
// receivers that detach or hang up. Private to the library.
//
// Invariants:
//  - pending_ and remotes_ are touched only by the control thread, and by
//    the owner's thread after stop() has joined it.
//  - Every connection is checked (SO_PEERCRED) at accept, before it can
//    occupy a pending slot: strangers are refused there, each process may
//    hold only a few pending handshakes, and when all slots are taken the
//    oldest idle one is evicted, so idle connections cannot lock out
//    receivers. Connected receivers, active or detached, count against
//    max_receivers.
//  - Nothing a peer sends can end the thread: every handler catches
//    everything and treats it as that peer's failure.
//  - A monitoring request is a pending connection like a handshake (same
//    accept-time checks and limits); it is answered at once on this thread
//    and the connection closed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <capnp/common.h>
#include <kj/array.h>

#include "fbuf/base/deadline.h"
#include "fbuf/base/fd.h"

namespace fbuf::ipc {
struct Datagram;
}

namespace fbuf::detail {

class RemoteOutlet;
class ReturnInlet;
class SenderCore;

class Listener {
 public:
  // Binds `service` (throws Error, EADDRINUSE if taken) and starts the
  // control thread.
  Listener(SenderCore& sender, const std::string& service);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Stops the control thread and closes the listening socket: no receiver
  // is admitted after it returns. Idempotent.
  void stop() noexcept;
  // After stop(), with the pool's lock held: every connected receiver is
  // told the stream ends; their inlets stay with the pool.
  void close_remotes_locked() noexcept;

 private:
  struct Pending {
    UniqueFd fd;
    Clock::time_point since;
    pid_t pid;  // from SO_PEERCRED
    uid_t uid;
  };

  void loop() noexcept;
  void accept_all() noexcept;
  void on_pending(int fd, std::uint32_t events) noexcept;
  void on_remote(std::map<int, std::shared_ptr<RemoteOutlet>>::iterator it, std::uint32_t events) noexcept;
  void reject(int fd, const std::string& reason) noexcept;
  // The path: a message after the handshake on a receiver's or a holder's
  // socket (a HolderRequest or a DrainRequest) from the stage behind
  // `requester`. Anything else is counted and answered with a Reject.
  void handle_peer_message(int fd, const ipc::Datagram& dg, ReturnInlet& requester) noexcept;
  void on_holder(std::map<int, std::pair<UniqueFd, std::shared_ptr<ReturnInlet>>>::iterator it,
                 std::uint32_t events) noexcept;
  // Answers a monitoring request on `fd` (the caller closes it).
  void answer_monitor(int fd, const std::vector<UniqueFd>& fds, kj::ArrayPtr<const capnp::word> words);
  void expire_pending() noexcept;
  void watch(int fd, std::uint32_t events);
  void drop_pending(std::map<int, Pending>::iterator it) noexcept;

  SenderCore& sender_;
  UniqueFd listen_fd_, epoll_fd_, stop_fd_;
  std::map<int, Pending> pending_;
  std::map<int, std::shared_ptr<RemoteOutlet>> remotes_;
  // Holder inlets granted (the path): the owner's end of each holder
  // socket and the inlet.
  std::map<int, std::pair<UniqueFd, std::shared_ptr<ReturnInlet>>> holders_;
  // Set while accept() fails for want of fds (EMFILE): the listening
  // socket is not watched until then, so the loop does not spin.
  Clock::time_point accept_paused_until_{};
  bool accept_paused_ = false;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace fbuf::detail
