// fbuf::WaitSet: one thread waits on several Receivers at once, with a
// timeout, and learns which have something for try_receive(). Built on
// epoll over the receivers' readiness fds (Receiver::fd(), arm()); a
// program with its own event loop registers those fds there instead
// (docs/api.md, "Event loops").
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <vector>

namespace fbuf {

class Receiver;

// Owned and used by one thread, the thread that receives from its members.
class WaitSet {
 public:
  // Throws Error (epoll_create1).
  WaitSet();
  ~WaitSet();
  WaitSet(WaitSet&&) noexcept;
  WaitSet& operator=(WaitSet&&) noexcept;
  WaitSet(const WaitSet&) = delete;
  WaitSet& operator=(const WaitSet&) = delete;

  // Adds `receiver`, which is not owned: it must stay where it is (not be
  // moved or destroyed) until it is removed or the set is gone. Throws
  // Error: kInvalidArgument for a moved-from Receiver or one already in
  // the set, or the errno of epoll_ctl.
  void add(Receiver& receiver);
  // Removes `receiver`; does nothing if it is not in the set.
  void remove(Receiver& receiver) noexcept;
  std::size_t size() const noexcept { return members_.size(); }

  // Waits until at least one member has a buffer or its end of stream
  // waiting (its try_receive() will not say kWouldBlock), or `timeout`
  // passes (0 only looks; kForever waits without end). Returns the ready
  // members, in the order they were added: empty on timeout. The span is
  // valid until the next call. A member whose stream ended stays ready
  // until it is removed.
  std::span<Receiver* const> wait(std::chrono::nanoseconds timeout) noexcept;

 private:
  int epoll_ = -1;
  std::vector<Receiver*> members_;
  std::vector<Receiver*> ready_;
};

}  // namespace fbuf
