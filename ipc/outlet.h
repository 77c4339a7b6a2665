// One receiver's end as its Sender sees it: the send ring the Sender
// pushes descriptors into and, for a receiver in another process, the
// pool's return inlet for it. Private to the library.
//
// Invariants:
//  - Every member is guarded by the pool's lock: the send path pushes to
//    all outlets and marks buffers sent in one critical section.
//  - A RemoteOutlet keeps a private shadow of every descriptor it wrote,
//    by ring position. When the receiver detaches, what it left unconsumed
//    is taken from the shadow between the (checked) head it published and
//    the owner's own tail, never from the shared slots.
//  - Geometry (capacities) comes from the owner's private ChannelMemory;
//    the shared header is never read for it.
//  - `terms` are fixed before the outlet is shared; `skip` and the dropped
//    count are the send path's, under the pool's lock. The owner publishes
//    its dropped count to the header's `dropped` word and never reads that
//    word back.
//  - `identity` is set once, with the pool's lock held, when the receiver is
//    admitted; the counters for the monitoring request (delivered, dropped)
//    are the send path's, under the pool's lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fbuf/base/deadline.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/ring.h"
#include "fbuf/buffers/returns.h"
#include "fbuf/sender.h"
#include "ipc/channel.h"
#include "ipc/monitor.h"

namespace fbuf::detail {

class PoolCore;
class Upstream;

// How the send path treats one receiver that falls behind: the Sender's
// options, made more lenient by what the receiver asked for in its Hello.
struct ReceiverTerms {
  SlowReceiverPolicy policy = SlowReceiverPolicy::kBlock;
  std::uint32_t budget = 0;                  // kSkip / kCutOff; 0: only a full ring
  std::chrono::nanoseconds hold_timeout{0};  // 0: none

  // False for the default terms, which the send path serves without
  // looking at them.
  bool lenient() const noexcept { return policy != SlowReceiverPolicy::kBlock || hold_timeout.count() != 0; }
};

// Who a receiver is, for the monitoring request.
struct ReceiverIdentity {
  std::uint32_t id = 0;
  std::uint32_t pid = 0;  // SO_PEERCRED at accept; the owner's for a local receiver
  std::uint32_t uid = 0;
  std::int64_t connected_since_ns = 0;  // wall clock, since the Unix epoch
};

class Outlet {
 public:
  Outlet() noexcept;
  virtual ~Outlet() = default;
  // False once the receiver is gone, detached or cut off: nothing more is
  // pushed to it.
  virtual bool usable_locked() const noexcept = 0;
  // Writes `d` into the ring (call out.reserve() first); visible to the
  // receiver at out.publish(). `now` is recorded only under a hold timeout.
  virtual void write_locked(const Descriptor& d, Clock::time_point now) noexcept = 0;
  // Buffers the receiver holds or has queued. For a receiver in another
  // process, every buffer lent and not yet returned (exact once its
  // returns are collected); for one in this process, what is queued in
  // its ring (views it took go back to the pool, not through this outlet).
  virtual std::uint32_t outstanding_locked() const noexcept = 0;
  // Applies the returns this receiver has published, so that
  // outstanding_locked() is exact. May cut off a receiver whose return
  // ring is corrupt.
  virtual void collect_returns_locked() noexcept {}
  // When the oldest buffer counted by outstanding_locked() was sent to it;
  // time_point::max() if none. Tracked only under a hold timeout.
  virtual Clock::time_point oldest_lend_locked() const noexcept = 0;
  // True while the owner may still take back what this receiver holds by
  // cutting it off (a hold timeout still applies).
  virtual bool reclaimable_locked() const noexcept = 0;
  // The receiver broke the protocol (or its budget): stop serving it and
  // take back everything lent to it.
  virtual void cut_off_locked() noexcept = 0;
  // The Sender is going away: the receiver sees end-of-stream after what
  // was published.
  virtual void close_locked() noexcept = 0;
  // The outlet leaves the sender's list. Returns true if the receiver was
  // cut off by the pool (a corrupt return ring found while draining) and
  // is told only now (its header's cut_off): the caller counts it lost.
  virtual bool retire_locked() noexcept { return false; }
  // The receiver's header, for the owner-written words (sender_closed,
  // cut_off, dropped).
  virtual ipc::ChannelHeader* header() const noexcept = 0;

  // `n` buffers were skipped for this receiver: counted here and published
  // to its header, where ReceiverStats::dropped reads it.
  void count_dropped_locked(std::uint64_t n) noexcept;
  // `n` buffers were published to this receiver.
  void count_delivered_locked(std::uint64_t n) noexcept { delivered_ += n; }

  // What the monitoring request shows of this receiver: a bounded copy of
  // owner-private counts and of the ring indices (checked, never trusted),
  // with no drain, no allocation and no syscall.
  virtual void snapshot_locked(ipc::MonitorReceiver& r) const noexcept;

  // Publishes what was written and signals the receiver's readiness fd if
  // it armed it (fbuf/base/ring.h, consumer_armed).
  void publish_locked() noexcept {
    if (out.publish()) signal_ready_locked();
  }
  // Makes the receiver's readiness fd readable: for the end of its stream,
  // which a receiver waiting on the fd must see whether or not it armed.
  void signal_ready_locked() noexcept;
  // The owner's end of the readiness pair: the receiver signals ring room
  // and returns through it (SenderCore's epoll set holds it).
  int ready_fd() const noexcept { return ready_.get(); }

  RingProducer out;
  ReceiverTerms terms;  // fixed before the outlet is shared
  bool skip = false;    // the send under way passes this receiver by
  ReceiverIdentity identity;

 protected:
  // What is in the send ring and not taken yet, from the head the receiver
  // published (checked against the owner's own tail; 0 if impossible).
  std::uint32_t queued_locked() const noexcept;

 protected:
  // The owner's (signalling) end of the receiver's readiness pair
  // (fbuf/base/readiness.h); closed with the outlet.
  UniqueFd ready_;

 private:
  std::uint64_t dropped_ = 0;  // the owner's own count; the header's copy is never read back
  std::uint64_t delivered_ = 0;
};

// A receiver in this process: views read the pool's read-only alias and go
// back to the pool directly.
class LocalOutlet final : public Outlet {
 public:
  // `ready` is the signalling end of the receiver's readiness pair.
  LocalOutlet(std::shared_ptr<LocalChannel> ch, const ReceiverTerms& terms, UniqueFd ready);
  bool usable_locked() const noexcept override { return !ch_->receiver_gone && !cut_; }
  void write_locked(const Descriptor& d, Clock::time_point now) noexcept override {
    if (!sent_at_.empty()) sent_at_[out.pending() & (out.capacity() - 1)] = now;
    out.write(d);
  }
  std::uint32_t outstanding_locked() const noexcept override;
  Clock::time_point oldest_lend_locked() const noexcept override;
  bool reclaimable_locked() const noexcept override { return usable_locked(); }
  // Stops sending; what is queued stays receivable and the views the
  // receiving thread holds come back as it drops them (memory of this
  // process cannot be taken back from it).
  void cut_off_locked() noexcept override;
  void close_locked() noexcept override;
  ipc::ChannelHeader* header() const noexcept override { return ch_->memory.header(); }
  void snapshot_locked(ipc::MonitorReceiver& r) const noexcept override;

  // The path: parks `views` (Views of another process's pool, each
  // sharing the forwarding stage's reference) for the receiver, in order;
  // each is taken, as it is, for the next descriptor written with `pool`
  // LocalChannel::kForwardedLocal. All or nothing: false (none parked, the
  // views left to the caller) out of memory.
  bool park_locked(std::span<View> views) noexcept;
  // Takes back the last `n` views parked (their descriptors were never
  // written).
  void unpark_locked(std::size_t n) noexcept;

 private:
  std::shared_ptr<LocalChannel> ch_;
  bool cut_ = false;
  // Under a hold timeout: when each ring position was written.
  std::vector<Clock::time_point> sent_at_;
};

// A receiver in another process.
class RemoteOutlet final : public Outlet {
 public:
  // `sock` is the receiver's control socket; `memory` its channel; `ready`
  // the signalling end of its readiness pair.
  RemoteOutlet(PoolCore& pool, UniqueFd sock, ChannelMemory memory,
               std::shared_ptr<ReturnCounters> counters, const ReceiverTerms& terms, UniqueFd ready);

  int fd() const noexcept { return sock_.get(); }
  bool usable_locked() const noexcept override { return inlet_->active_locked(); }
  void write_locked(const Descriptor& d, Clock::time_point now) noexcept override;
  std::uint32_t outstanding_locked() const noexcept override { return inlet_->outstanding_locked(); }
  void collect_returns_locked() noexcept override { inlet_->drain_locked(false); }
  Clock::time_point oldest_lend_locked() const noexcept override { return inlet_->oldest_lend_locked(); }
  bool reclaimable_locked() const noexcept override { return !inlet_->finished_locked(); }
  // Shuts the receiver's socket and takes back everything lent to it at
  // once, including what is still in its ring: views it still holds, or
  // takes from its ring after this, may be overwritten by the owner.
  void cut_off_locked() noexcept override;
  bool retire_locked() noexcept override;
  void close_locked() noexcept override;
  ipc::ChannelHeader* header() const noexcept override { return mem_.header(); }

  // The receiver shut its socket for writing: it takes nothing more.
  // What it left in its ring comes back now.
  void detach_locked() noexcept;
  // The receiver's socket hung up (it closed or died): everything lent to
  // it comes back.
  void hang_up_locked() noexcept;
  bool finished_locked() const noexcept { return inlet_->finished_locked(); }
  std::uint32_t returns_waiting_locked() const noexcept { return inlet_->returns_waiting_locked(); }
  void snapshot_locked(ipc::MonitorReceiver& r) const noexcept override;

  // --- The path (docs/design.md, "The path"). ---
  // The pool's inlet for this receiver: a holder it asks for is granted to it.
  const std::shared_ptr<ReturnInlet>& inlet() const noexcept { return inlet_; }
  // An upstream pool announced to this receiver: slot k is at [k - 1],
  // with the token of the holder inlet its owner granted for it.
  struct ForwardSlot {
    std::shared_ptr<Upstream> upstream;
    std::uint32_t token;
  };
  std::vector<ForwardSlot> forward_slots;  // guarded by the pool's lock; appended under the Sender's forward lock
  // The slot of `up` on this connection, 0 if not announced yet.
  std::uint32_t forward_slot_locked(const Upstream* up) const noexcept {
    for (std::size_t i = 0; i < forward_slots.size(); ++i)
      if (forward_slots[i].upstream.get() == up) return static_cast<std::uint32_t>(i + 1);
    return 0;
  }
  // Writes a forwarded descriptor (its pool is a slot): the receiver holds
  // it from the upstream owner's holder inlet, not from this Sender's pool,
  // so this pool lends nothing. Call out.reserve() first.
  void write_forward_locked(const Descriptor& d) noexcept {
    shadow_[out.pending() & (mem_.send_capacity() - 1)] = d;
    out.write(d);
  }

 private:
  PoolCore& pool_;
  UniqueFd sock_;
  ChannelMemory mem_;
  std::shared_ptr<ReturnInlet> inlet_;
  std::vector<Descriptor> shadow_;  // by ring position: what was written there
  bool told_ = false;  // retire_locked() marked a pool cut-off in its header
  bool cut_ = false;   // cut off, by the send path or by the pool
};

// Tells the receiver that no more will come after what is in its ring.
void mark_sender_closed(ipc::ChannelHeader* h) noexcept;

}  // namespace fbuf::detail
