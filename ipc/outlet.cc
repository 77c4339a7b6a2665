#include "ipc/outlet.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <new>
#include <unistd.h>

#include "fbuf/base/readiness.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/pool_core.h"

namespace fbuf::detail {

void mark_sender_closed(ipc::ChannelHeader* h) noexcept {
  // release: the receiver that observes the flag (acquire, in
  // ReceiverCore::end_of_stream()) also observes every descriptor
  // published before it.
  h->sender_closed.store(1, std::memory_order_release);
  wake_all(h->send.data_seq);
}

namespace {

void mark_cut_off(ipc::ChannelHeader* h) noexcept {
  // release: pairs with the receiver's acquire load of cut_off; what was
  // published before stays receivable.
  h->cut_off.store(1, std::memory_order_release);
  mark_sender_closed(h);
}

}  // namespace

Outlet::Outlet() noexcept {
  identity.connected_since_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
}

std::uint32_t Outlet::queued_locked() const noexcept {
  // relaxed: a count for display, read once and checked; nothing is read
  // through it.
  const std::uint64_t head = out.indices()->head.load(std::memory_order_relaxed);
  const std::uint64_t tail = out.tail();
  if (head > tail || tail - head > out.capacity()) return 0;
  return static_cast<std::uint32_t>(tail - head);
}

void Outlet::snapshot_locked(ipc::MonitorReceiver& r) const noexcept {
  r.id = identity.id;
  r.pid = identity.pid;
  r.uid = identity.uid;
  r.connected_since_ns = identity.connected_since_ns;
  r.ring_capacity = out.capacity();
  r.delivered = delivered_;
  r.dropped = dropped_;
  r.slow_policy = terms.policy;
  r.receiver_budget = terms.budget;
  r.hold_timeout_ns = static_cast<std::uint64_t>(terms.hold_timeout.count());
}

void LocalOutlet::snapshot_locked(ipc::MonitorReceiver& r) const noexcept {
  Outlet::snapshot_locked(r);
  r.local = true;
  r.queued = queued_locked();
  // Views the receiving thread holds are counted only under a budget.
  r.held = ch_->held.load(std::memory_order_relaxed);  // relaxed: see LocalChannel::held
  r.cut_off = cut_;
  r.detached = ch_->receiver_gone;
}

void RemoteOutlet::snapshot_locked(ipc::MonitorReceiver& r) const noexcept {
  Outlet::snapshot_locked(r);
  const bool active = inlet_->active_locked();
  // After a detach or a cut-off the ring's contents came back already.
  r.queued = active ? queued_locked() : 0;
  // Everything lent and not returned, less what is queued and what it has
  // returned that the pool has not collected yet.
  const std::uint64_t gone = std::uint64_t{r.queued} + inlet_->returns_waiting_locked();
  const std::uint32_t lent = inlet_->outstanding_locked();
  r.held = lent > gone ? static_cast<std::uint32_t>(lent - gone) : 0;
  r.returned = inlet_->returned_locked();
  r.rejected_returns = inlet_->rejected_locked();
  r.cut_off = cut_ || told_ || inlet_->corrupt_locked();
  r.detached = !active && !r.cut_off;
}

void Outlet::count_dropped_locked(std::uint64_t n) noexcept {
  dropped_ += n;
  // relaxed: a statistic for the receiver, written only here; the next
  // publish() of this ring (release) makes it visible together with the
  // descriptors that follow the gap.
  header()->dropped.store(dropped_, std::memory_order_relaxed);
}

void Outlet::signal_ready_locked() noexcept {
  if (ready_) signal_ready(ready_.get());
}

LocalOutlet::LocalOutlet(std::shared_ptr<LocalChannel> ch, const ReceiverTerms& t, UniqueFd ready)
    : ch_(std::move(ch)) {
  ready_ = std::move(ready);
  terms = t;
  out = RingProducer(&ch_->memory.header()->send, ch_->memory.send_slots(), ch_->memory.send_capacity());
  if (terms.hold_timeout.count() != 0) sent_at_.assign(ch_->memory.send_capacity(), Clock::time_point{});
}

Clock::time_point LocalOutlet::oldest_lend_locked() const noexcept {
  if (sent_at_.empty()) return Clock::time_point::max();
  // acquire: pairs with the consumer's release of head; the oldest
  // position still queued is the head.
  const std::uint64_t head = out.indices()->head.load(std::memory_order_acquire);
  const std::uint64_t tail = out.tail();
  if (head >= tail || tail - head > out.capacity()) return Clock::time_point::max();
  return sent_at_[head & (out.capacity() - 1)];
}

std::uint32_t LocalOutlet::outstanding_locked() const noexcept {
  // Queued in the ring, plus the views the receiving thread holds.
  // acquire: pairs with the consumer's release of head.
  const std::uint64_t head = out.indices()->head.load(std::memory_order_acquire);
  const std::uint64_t tail = out.tail();
  const auto queued = head <= tail ? static_cast<std::uint32_t>(tail - head) : 0u;
  return queued + ch_->held.load(std::memory_order_relaxed);  // relaxed: see LocalChannel::held
}

bool LocalOutlet::park_locked(std::span<View> views) noexcept {
  std::lock_guard lock(ch_->forward_mu);
  std::size_t parked = 0;
  try {
    for (View& v : views) {
      ch_->forwarded.push_back(std::move(v));
      ++parked;
    }
  } catch (const std::bad_alloc&) {
    // The receiver takes only views whose descriptors were published:
    // the last `parked` are these.
    for (std::size_t i = parked; i-- > 0;) {
      views[i] = std::move(ch_->forwarded.back());
      ch_->forwarded.pop_back();
    }
    return false;
  }
  return true;
}

void LocalOutlet::unpark_locked(std::size_t n) noexcept {
  // Each share dropped here takes only its owner's count lock.
  std::lock_guard lock(ch_->forward_mu);
  for (; n != 0 && !ch_->forwarded.empty(); --n) ch_->forwarded.pop_back();
}

void LocalOutlet::cut_off_locked() noexcept {
  if (cut_) return;
  cut_ = true;
  mark_cut_off(header());
  signal_ready_locked();
}

void LocalOutlet::close_locked() noexcept {
  mark_sender_closed(header());
  signal_ready_locked();
}

RemoteOutlet::RemoteOutlet(PoolCore& pool, UniqueFd sock, ChannelMemory memory,
                           std::shared_ptr<ReturnCounters> counters, const ReceiverTerms& t, UniqueFd ready)
    : pool_(pool), sock_(std::move(sock)), mem_(std::move(memory)), shadow_(mem_.send_capacity()) {
  ready_ = std::move(ready);
  terms = t;
  auto* h = mem_.header();
  out = RingProducer(&h->send, mem_.send_slots(), mem_.send_capacity());
  // The inlet holds a duplicate of the socket: after the Sender is gone it
  // keeps the connection open (the receiver must not see a hang-up while
  // it still returns buffers) and watches it.
  UniqueFd peer(::fcntl(sock_.get(), F_DUPFD_CLOEXEC, 0));
  inlet_ = std::make_shared<ReturnInlet>(pool_, mem_.keepalive(), &h->ret, mem_.return_slots(),
                                         mem_.return_capacity(), std::move(peer), std::move(counters));
  if (terms.hold_timeout.count() != 0) inlet_->track_lend_times_locked();
  pool_.add_inlet_locked(inlet_);
}

void RemoteOutlet::write_locked(const Descriptor& d, Clock::time_point now) noexcept {
  shadow_[out.pending() & (mem_.send_capacity() - 1)] = d;
  inlet_->lend_locked(d.index, d.generation, now);
  out.write(d);
}

void RemoteOutlet::detach_locked() noexcept {
  if (!inlet_->active_locked()) return;
  // acquire: pairs with the receiver's release of head; read once into a
  // local and checked before it selects anything.
  const std::uint64_t head = out.indices()->head.load(std::memory_order_acquire);
  const std::uint64_t tail = out.tail();
  if (head > tail || tail - head > mem_.send_capacity()) {
    // An impossible head: this receiver is corrupt, not detaching.
    cut_off_locked();
    return;
  }
  const std::uint32_t mask = mem_.send_capacity() - 1;
  const std::uint64_t first = head & mask, count = tail - head;
  const std::uint64_t part = std::min<std::uint64_t>(count, mem_.send_capacity() - first);
  inlet_->detach_locked(std::span<const Descriptor>(shadow_.data() + first, part),
                        std::span<const Descriptor>(shadow_.data(), count - part));
  // A send blocked on this receiver's ring re-checks and drops it.
  wake_all(out.indices()->space_seq);
}

void RemoteOutlet::hang_up_locked() noexcept {
  inlet_->drain_locked(false);
  inlet_->reclaim_all_locked();
  wake_all(out.indices()->space_seq);
}

void RemoteOutlet::cut_off_locked() noexcept {
  cut_ = true;
  mark_cut_off(header());
  signal_ready_locked();
  inlet_->cut_off_locked();
  wake_all(out.indices()->space_seq);
}

bool RemoteOutlet::retire_locked() noexcept {
  if (!inlet_->corrupt_locked() || told_) return false;
  told_ = true;
  mark_cut_off(header());
  signal_ready_locked();
  return true;
}

void RemoteOutlet::close_locked() noexcept {
  mark_sender_closed(header());
  signal_ready_locked();
  inlet_->orphan_locked();
}

}  // namespace fbuf::detail
