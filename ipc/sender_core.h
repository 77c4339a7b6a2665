// The owner's end of a channel: its outlets (one per receiver), the send
// path that publishes buffers to all of them, and, for a listening Sender,
// the Listener that admits receivers from other processes.
// Private to the library.
//
// Invariants:
//  - outlets_, counters_, sequence_ and closed_ are guarded by the pool's
//    lock, the lock the send path holds anyway to mark buffers sent: a
//    send protects, writes to every outlet, publishes and marks in one
//    critical section, so a return can never overtake its own send.
//  - receivers_ mirrors outlets_.size() for lock-free reads; it is written
//    with count_mu_ held so wait_for_receivers() cannot miss a change.
//  - Slow receivers (docs/design.md, "Slow receivers"): lenient_ is false
//    while every outlet has the default terms (block, no hold timeout);
//    the send path then takes the same steps as without the policies.
//    watched_ holds every outlet with a hold timeout whose buffers the
//    owner can still take back, including remote receivers that detached
//    but still hold views. Both guarded by the pool's lock, like outlets_.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fbuf/base/deadline.h"
#include "fbuf/base/fd.h"
#include "fbuf/buffers/returns.h"
#include "fbuf/sender.h"
#include "ipc/layout.h"

namespace fbuf::ipc {
struct HelloInfo;
struct MonitorInfo;
}

namespace fbuf::detail {

class Listener;
class Outlet;
class PoolCore;
class RemoteOutlet;
struct ReceiverTerms;

// One slice the send path publishes: bytes [offset, offset + length) of
// a Buffer of the Sender's pool, whose handle is emptied when it is sent.
using ipc::kMoreFollows;

struct OutSlice {
  Buffer* buffer;
  std::uint32_t offset;
  std::uint32_t length;
};

class SenderCore {
 public:
  SenderCore(Pool pool, std::string service, SenderOptions options);
  ~SenderCore();
  SenderCore(const SenderCore&) = delete;
  SenderCore& operator=(const SenderCore&) = delete;

  Receiver connect_local();
  std::error_code send(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                       std::chrono::nanoseconds timeout) noexcept;
  // Sends `message` as one chain (docs/design.md, "Aggregates"); on
  // success it is left empty, on failure untouched.
  std::error_code send(Message& message, std::chrono::nanoseconds timeout) noexcept;
  // The path (ipc/forward.cc): forwards a view this process holds of
  // another process's pool to every receiver.
  std::error_code send_view(const View& view, std::chrono::nanoseconds timeout) noexcept;
  // A view of this Sender's own pool, held in this process (a receiver of
  // another Sender's connect_local()), sent on to every receiver as one
  // more holder of the buffer (ipc/forward.cc).
  std::error_code send_own_view(const View& view, std::chrono::nanoseconds timeout) noexcept;
  // The path: a message with View slices (ipc/forward.cc): its Buffer
  // slices sent as by send(Message&), its View slices forwarded as by
  // send_view(), all as one chain, all or nothing.
  std::error_code send_forwarded(Message& message, std::chrono::nanoseconds timeout) noexcept;
  // The readiness fd (Sender::fd(), Sender::arm()).
  int fd() const noexcept { return epoll_.get(); }
  bool arm(std::size_t size) noexcept;
  bool wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const;
  // relaxed: a recent count is all a caller can use; nothing is published
  // through it (wait_for_receivers() reads it under count_mu_).
  std::size_t receiver_count() const noexcept { return receivers_.load(std::memory_order_relaxed); }
  // Also checks hold timeouts.
  SenderStats stats();
  const std::string& service() const noexcept { return service_; }
  const Pool& pool() const noexcept { return pool_handle_; }
  PoolCore& pool_core() const noexcept { return *pool_; }
  const SenderOptions& options() const noexcept { return options_; }

  // --- For the Listener's control thread. ---
  // Throws Error(kProtocol) if no receiver may be added now.
  void check_room(std::size_t connections) const;
  // Makes the channel for a receiver that said Hello, sends it the Welcome
  // and starts serving it. `sock` is consumed only on success; on a throw
  // the caller still owns it (and may send a Reject through it).
  // `hello` says what the receiver asked for itself.
  std::shared_ptr<RemoteOutlet> add_remote(UniqueFd& sock, const ipc::HelloInfo& hello);
  // The receiver shut its socket for writing. Returns true if it holds
  // nothing more, so its connection can be closed now.
  bool on_detach(RemoteOutlet& outlet) noexcept;
  // The receiver's socket hung up: it closed or died.
  void on_hang_up(RemoteOutlet& outlet) noexcept;
  void count_rejected_handshake() noexcept;
  // The path, at the owner: a holder inlet for a downstream of the stage
  // behind `requester`, granted by a HolderGrant on `sock`. Returns the
  // owner's end of the holder socket, for the control thread to watch, and
  // the inlet. Throws Error (the caller rejects).
  std::pair<UniqueFd, std::shared_ptr<ReturnInlet>> grant_holder(int sock, ReturnInlet& requester);
  // A stage waits for room in its return ring (a DrainRequest).
  void drain_returns() noexcept;
  // A holder's socket hung up: everything lent to it comes back.
  void on_holder_hang_up(ReturnInlet& holder) noexcept;
  // The Sender is going: holders stay with the pool, watched by it.
  void orphan_holder(ReturnInlet& holder) noexcept;
  // The receiver behind `outlet` as SO_PEERCRED saw it at accept.
  void set_peer(Outlet& outlet, std::uint32_t pid, std::uint32_t uid) noexcept;
  // The monitoring request's answer: this Sender's state, its in-process
  // receivers and `remotes` (the control thread's connections, detached
  // ones included). Takes the pool's lock once, for a copy bounded by the
  // receivers and classes (allocated before the lock is taken); drains
  // nothing, waits for nothing. Counts the request.
  ipc::MonitorInfo monitor(std::span<const std::shared_ptr<RemoteOutlet>> remotes);
  // How often the control thread should call check_holds() while sends
  // are idle, in milliseconds; 0 while no receiver has a hold timeout.
  int hold_check_ms() const noexcept {
    // relaxed: only sizes the control thread's next epoll timeout; the
    // check itself runs under the pool's lock.
    return hold_check_ms_.load(std::memory_order_relaxed);
  }
  // Cuts off every receiver holding a buffer past its hold timeout; at
  // most once per millisecond, however often it is called.
  void check_holds() noexcept;

 private:
  // The Sender's options, made more lenient by what `asked` (a Hello)
  // asks for; nullptr for an in-process receiver.
  ReceiverTerms terms_for(const ipc::HelloInfo* asked) const noexcept;
  // The lenient send path's look at every receiver: hold timeouts, full
  // rings and budgets. Sets `blocked` to a kBlock receiver with a full
  // ring, `fail_fast` if a kFailFast receiver's ring is full, `skipping`
  // if some receiver's `skip` is set for this send.
  void classify_locked(std::uint32_t n, Clock::time_point now, std::shared_ptr<Outlet>& blocked,
                       bool& fail_fast, bool& skipping) noexcept;
  // True if `n` more buffers take `o` past its budget (after collecting
  // its returns).
  static bool over_budget_locked(Outlet& o, std::uint32_t n) noexcept;
  // The send path of send() and send(Message&): every slice is checked
  // (its buffer of this pool, its range inside it) and published to every
  // receiver in one critical section; with `chained`, as one message.
  std::error_code send_slices(std::span<const OutSlice> slices, bool chained,
                              std::chrono::nanoseconds timeout) noexcept;
  // Writes, publishes and marks sent: to every outlet, or with `skipping`
  // to those not skipped (the others are counted as dropped).
  std::error_code deliver_locked(std::span<const OutSlice> slices, std::span<const std::uint32_t> indices,
                                 bool chained, bool skipping, Clock::time_point now) noexcept;
  // The descriptor of one slice as `outlet` gets it: the one place a slice
  // becomes a descriptor, so that slices of other pools (forwarding) can
  // be named per receiver here.
  static Descriptor describe_locked(const OutSlice& s, std::uint32_t flags, std::uint64_t sequence,
                                    const Outlet& outlet) noexcept;
  void check_holds_locked(Clock::time_point now) noexcept;
  // Announces `up` to every remote receiver that lacks it (ipc/forward.cc).
  // Throws Error.
  void announce(const std::shared_ptr<Upstream>& up, Clock::time_point deadline);
  void add_locked(std::shared_ptr<Outlet> outlet);
  void prune_locked() noexcept;
  void publish_count_locked() noexcept;
  void refresh_terms_locked() noexcept;

  // Reads the records queued on the owner's ends of the readiness pairs
  // and on self_wait_, so that a level-triggered wait on epoll_ does not
  // spin on signals for an earlier arming; drops ends whose receiver has
  // closed its side (they would poll readable for ever).
  void drain_ready_fds() noexcept;
  // Adds `fd` to epoll_. Throws Error.
  void watch_ready_fd(int fd);
  // True if an allocation of `size` (0: none) or a send of one buffer
  // would say kWouldBlock now.
  bool would_block_locked(std::size_t size) noexcept;
  // Takes back the armings arm() set.
  void disarm_locked() noexcept;

  Pool pool_handle_;
  std::shared_ptr<PoolCore> pool_;
  std::string service_;
  SenderOptions options_;

  std::vector<std::shared_ptr<Outlet>> outlets_;  // guarded by the pool's lock
  SenderStats counters_;                          // guarded by the pool's lock
  std::shared_ptr<ReturnCounters> returns_;       // guarded by the pool's lock
  std::uint64_t sequence_ = 0;                    // guarded by the pool's lock
  std::uint32_t next_id_ = 1;                     // guarded by the pool's lock
  bool closed_ = false;                           // guarded by the pool's lock
  bool lenient_ = false;                          // guarded by the pool's lock
  std::vector<std::shared_ptr<Outlet>> watched_;  // guarded by the pool's lock
  Clock::time_point last_hold_check_{};           // guarded by the pool's lock
  std::atomic<int> hold_check_ms_{0};
  std::atomic<std::uint64_t> monitor_requests_{0};

  // Serialises announcements of upstream pools (ipc/forward.cc), so each
  // reaches a receiver once; taken before the pool's lock, never under it.
  std::mutex forward_mu_;

  mutable std::mutex count_mu_;
  mutable std::condition_variable count_cv_;
  std::atomic<std::size_t> receivers_{0};

  // The Sender's readiness fd: an epoll set over the owner's end of every
  // receiver's readiness pair (receivers signal ring room and returns
  // through them) and over self_wait_, which the pool signals for buffers
  // freed in this process (PoolCore::wake_owner_locked()). Epoll is
  // thread-safe: the control thread adds ends as receivers connect.
  UniqueFd epoll_;
  UniqueFd self_signal_;
  UniqueFd self_wait_;

  std::unique_ptr<Listener> listener_;
};

}  // namespace fbuf::detail
