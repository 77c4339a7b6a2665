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
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "fbuf/base/fd.h"
#include "fbuf/buffers/returns.h"
#include "fbuf/sender.h"

namespace fbuf::detail {

class Listener;
class Outlet;
class PoolCore;
class RemoteOutlet;

class SenderCore {
 public:
  SenderCore(Pool pool, std::string service, SenderOptions options);
  ~SenderCore();
  SenderCore(const SenderCore&) = delete;
  SenderCore& operator=(const SenderCore&) = delete;

  Receiver connect_local();
  std::error_code send(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                       std::chrono::nanoseconds timeout) noexcept;
  bool wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const;
  std::size_t receiver_count() const noexcept { return receivers_.load(std::memory_order_relaxed); }
  SenderStats stats() const;
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
  std::shared_ptr<RemoteOutlet> add_remote(UniqueFd& sock);
  // The receiver shut its socket for writing. Returns true if it holds
  // nothing more, so its connection can be closed now.
  bool on_detach(RemoteOutlet& outlet) noexcept;
  // The receiver's socket hung up: it closed or died.
  void on_hang_up(RemoteOutlet& outlet) noexcept;
  void count_rejected_handshake() noexcept;

 private:
  void prune_locked() noexcept;
  void publish_count_locked() noexcept;

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

  mutable std::mutex count_mu_;
  mutable std::condition_variable count_cv_;
  std::atomic<std::size_t> receivers_{0};

  std::unique_ptr<Listener> listener_;
};

}  // namespace fbuf::detail
