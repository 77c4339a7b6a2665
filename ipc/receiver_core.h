// The receiving half of a channel, shared by receivers in the owner's
// process (LocalReceiver, here) and in other processes (RemoteReceiver).
// Private to the library.
//
// Invariants:
//  - in_, ended_, stash_ and last_error_ are touched only by the one thread that
//    receives; the counters are atomics read by stats() from any thread.
//  - The stream ends exactly once: after the sender closed or died and the
//    ring is drained (kPeerGone, or kCutOff once if the sender cut this
//    receiver off), or at once when the ring is corrupt (kCorrupt once).
//    Every later call returns kPeerGone: a corrupt channel never makes a
//    receive loop spin.
//  - Readiness fd (docs/design.md, "Readiness fds"): armed_ and owed_ are
//    the receiving thread's. armed_ is true from an arm() that set the
//    ring's consumer_armed word until this side takes the word back (the
//    next arm() or a disarm); owed_ is true when the owner took an arming
//    and so has sent, or is about to send, a record to the fd. Every
//    arming the owner takes is seen exactly once, by the exchange in
//    disarm() (which arm() calls first), so every record it sends is
//    drained by a later arm(), before that arm() sets the word again.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "fbuf/base/ring.h"
#include "fbuf/receiver.h"
#include "ipc/channel.h"

namespace fbuf::detail {

class PoolCore;

class ReceiverCore {
 public:
  virtual ~ReceiverCore() = default;

  Result<View> try_receive() noexcept;
  Result<View> receive(std::chrono::nanoseconds timeout) noexcept;
  Result<Message> try_receive_message() noexcept;
  Result<Message> receive_message(std::chrono::nanoseconds timeout) noexcept;
  ReceiverStats stats() const noexcept;
  // The readiness fd and its arming (Receiver::fd(), Receiver::arm()).
  int fd() const noexcept { return ready_fd_.get(); }
  bool arm() noexcept;
  // The Receiver handle is gone: hand back everything not yet received and
  // tell the sender to stop. Views already out stay valid.
  virtual void close() noexcept = 0;
  // close(), and the readiness fd goes with the handle (the core itself
  // lives on while views are out), so it leaves every epoll set at once.
  void finish() noexcept {
    // The stash's Views name this core as their owner: dropped first, or
    // the core would keep itself alive.
    stash_.clear();
    stashed_ = false;
    close();
    close_ready();
  }

 protected:
  // Closes ready_fd_. A receiver whose views signal through it from other
  // threads (RemoteReceiver) closes it under the lock they take.
  virtual void close_ready() noexcept { ready_fd_.reset(); }
  // True once the sender closed or died.
  virtual bool peer_closed() noexcept = 0;
  // Validates a descriptor (a private copy) and wraps it in a View.
  virtual Result<View> make_view(const Descriptor& d) noexcept = 0;

  // True if the owner said no more will come (closed or cut off).
  bool sender_said_closed() const noexcept;

  ipc::ChannelHeader* header_ = nullptr;
  RingConsumer in_;
  // The waiting end of the readiness pair (fbuf/base/readiness.h).
  UniqueFd ready_fd_;
  // Set by arm() when the readiness fd read end-of-file: the owner's end
  // is closed, so the sender is gone. Receiving thread only.
  bool ready_eof_ = false;
  // Statistics, bumped and read with relaxed operations everywhere: each
  // is a counter on its own, nothing is published through it, and
  // stats() wants only recent values.
  // received_ has one writer, the receiving thread, and returned_ is
  // bumped only under the owner's return lock: both are bumped by
  // bump_single_writer() (a load and a store, no locked instruction).
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> returned_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> rejected_messages_{0};

 private:
  // Takes the next descriptor into `d`; otherwise kWouldBlock, or the
  // error that ends the stream (kCorrupt, kCutOff, kPeerGone).
  std::error_code next(Descriptor& d) noexcept;
  // Takes the rest of the chain that `first` (taken already) starts and
  // makes it a Message: all or nothing (docs/design.md, "Aggregates").
  Result<Message> collect(const Descriptor& first) noexcept;
  template <class T, class F>
  Result<T> wait_for(F try_once, std::chrono::nanoseconds timeout) noexcept;
  // Takes the ring's consumer_armed word back after an arming.
  void disarm() noexcept;

  bool ended_ = false;
  // A message plain receive() met and left for receive_message().
  Message stash_;
  bool stashed_ = false;
  bool armed_ = false;
  bool owed_ = false;
};

// Adds `n` to a counter that only one thread writes at a time (the
// others only read it): a load and a store, where fetch_add would be a
// locked instruction on the hot path. relaxed, both: a statistic; its one
// writer (or the lock it holds) orders its own updates.
inline void bump_single_writer(std::atomic<std::uint64_t>& counter, std::uint64_t n) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// Test hook: arm() calls it right after it sets consumer_armed and before
// its fence and re-check, the window in which an owner's publish() may
// take the new arming (tests/fault/hostile_test.cc, ReadinessOrder). Unset
// (nullptr) outside that test; arm() runs only before a wait, so the load
// costs nothing on the receive path.
using ArmHook = void (*)(void* context);
void set_arm_hook_for_tests(ArmHook hook, void* context) noexcept;

// The library's way to wrap a core in the public handle.
struct ReceiverAccess {
  static Receiver make(std::shared_ptr<ReceiverCore> core) noexcept { return Receiver(std::move(core)); }
};

// `ready` is the waiting end of the receiver's readiness pair.
std::shared_ptr<ReceiverCore> make_local_receiver(std::shared_ptr<PoolCore> pool,
                                                  std::shared_ptr<LocalChannel> channel, UniqueFd ready);

}  // namespace fbuf::detail
