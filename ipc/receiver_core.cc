#include "ipc/receiver_core.h"

#include <algorithm>
#include <deque>
#include <mutex>

#include "fbuf/base/deadline.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/readiness.h"
#include "fbuf/base/spin.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/buffers/slice_holder.h"
#include "fbuf/buffers/view_owner.h"
#include "ipc/validate.h"

namespace fbuf::detail {
namespace {

// The longest a receiver sleeps before it checks whether the sender died
// (a killed sender cannot wake it).
constexpr std::chrono::milliseconds kMaxSleep{20};

std::atomic<ArmHook> g_arm_hook{nullptr};
void* g_arm_hook_context = nullptr;

}  // namespace

void set_arm_hook_for_tests(ArmHook hook, void* context) noexcept {
  g_arm_hook_context = context;
  // release: publishes the context to the arm() that loads the hook.
  g_arm_hook.store(hook, std::memory_order_release);
}

bool ReceiverCore::sender_said_closed() const noexcept {
  // acquire: pairs with the owner's release store in mark_sender_closed()
  // (ipc/outlet.cc): every descriptor published before is visible.
  return header_->sender_closed.load(std::memory_order_acquire) != 0;
}

std::error_code ReceiverCore::next(Descriptor& d) noexcept {
  if (ended_) return Errc::kPeerGone;
  for (;;) {
    switch (in_.take(d)) {
      case RingStatus::kOk:
        return {};
      case RingStatus::kCorrupt:
        rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
        ended_ = true;
        return Errc::kCorrupt;
      case RingStatus::kEmpty:
      case RingStatus::kFull:
        break;
    }
    if (!peer_closed()) return Errc::kWouldBlock;
    // Everything the sender published before it went is still in the
    // ring: take it first (the loop), then end the stream.
    if (in_.readable()) continue;
    // acquire: pairs with the owner's release store of cut_off.
    const bool cut = header_->cut_off.load(std::memory_order_acquire) != 0;
    ended_ = true;
    return cut ? Errc::kCutOff : Errc::kPeerGone;
  }
}

Result<View> ReceiverCore::try_receive() noexcept {
  // A message met earlier waits for receive_message(): nothing after it
  // may overtake it.
  if (stashed_) return Errc::kMessage;
  Descriptor d;
  if (std::error_code ec = next(d); ec) return ec;
  if ((d.flags & ipc::kMoreFollows) != 0) {
    Result<Message> m = collect(d);
    if (!m) return m.error();
    stash_ = std::move(*m);
    stashed_ = true;
    return Errc::kMessage;
  }
  // Counted, and the view made (an in-process receiver's held count
  // bumped), before the slot goes back: a sender that sees the ring's
  // space finds the buffer received and held, never neither (the budget
  // check reads queued + held), and a thread that learns of the space
  // from the sender finds it counted.
  bump_single_writer(received_, 1);
  Result<View> v = make_view(d);
  // A sender waiting in epoll for ring space armed its fd: tell it.
  if (in_.release()) signal_ready(ready_fd_.get());
  if (v && (d.flags & ipc::kAggregateReserved) != 0) {
    // Reserved bits set: rejected, and the buffer goes back (the View's
    // destructor) since the descriptor names it validly.
    rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
    return Errc::kBadDescriptor;
  }
  return v;
}

Result<Message> ReceiverCore::collect(const Descriptor& first) noexcept {
  View views[kMaxMessageSlices];
  std::size_t n = 0;
  ipc::ChainCheck check;
  Descriptor d = first;
  for (;;) {
    // make_view() validates the private copy `d` and counts a bad one.
    Result<View> v = make_view(d);
    if (check.add(d, v.ok())) {
      views[n++] = std::move(*v);
    } else {
      // At fault: every View made goes back to the sender at once (this
      // one by its destructor).
      for (std::size_t i = 0; i < n; ++i) views[i].reset();
      n = 0;
    }
    if (!check.open()) break;
    // A hostile sender that keeps publishing "more follows" cannot keep
    // this call: no honest message is longer than the ring.
    if (check.taken() >= in_.capacity()) {
      check.cut();
      break;
    }
    const RingStatus st = in_.take(d);
    if (st == RingStatus::kOk) continue;
    if (st == RingStatus::kCorrupt) {
      rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
      bump_single_writer(received_, check.taken());
      ended_ = true;
      return Errc::kCorrupt;
    }
    // The published tail ends inside the message: an honest sender
    // publishes a message with one tail store.
    check.cut();
    break;
  }
  // Counted before the slots go back, as in try_receive().
  bump_single_writer(received_, check.taken());
  if (in_.release()) signal_ready(ready_fd_.get());
  if (check.fault() != ipc::ChainCheck::Fault::kNone) {
    for (std::size_t i = 0; i < n; ++i) views[i].reset();
    rejected_messages_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
    return Errc::kBadDescriptor;
  }
  Message m;
  if (std::error_code ec = MessageAccess::adopt(m, std::span<View>(views, n)); ec) return ec;
  return m;
}

Result<Message> ReceiverCore::try_receive_message() noexcept {
  if (stashed_) {
    stashed_ = false;
    return std::move(stash_);
  }
  Descriptor d;
  if (std::error_code ec = next(d); ec) return ec;
  return collect(d);
}

template <class T, class F>
Result<T> ReceiverCore::wait_for(F try_once, std::chrono::nanoseconds timeout) noexcept {
  const auto wouldblock = make_error_code(Errc::kWouldBlock);
  // The clock is read only when nothing is waiting: a receive that finds
  // a descriptor at once (the common case under load) costs no
  // clock_gettime.
  if (Result<T> r = try_once(); r || r.error() != wouldblock) return r;
  const auto start = Clock::now();
  const auto deadline = deadline_from(start, timeout);
  for (unsigned i = 1;; ++i) {
    if (stashed_ || in_.readable() || (i % 256) == 0) {
      Result<T> r = try_once();
      if (r || r.error() != wouldblock) return r;
      if (Clock::now() - start > kSpinBeforeSleep) break;
    }
    cpu_relax();
  }
  for (;;) {
    Result<T> r = try_once();
    if (r || r.error() != wouldblock) return r;
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    sleep_until(header_->send.consumer_waiters, header_->send.data_seq, left,
                [&] { return in_.readable() || sender_said_closed(); });
  }
}

Result<View> ReceiverCore::receive(std::chrono::nanoseconds timeout) noexcept {
  return wait_for<View>([this] { return try_receive(); }, timeout);
}

Result<Message> ReceiverCore::receive_message(std::chrono::nanoseconds timeout) noexcept {
  return wait_for<Message>([this] { return try_receive_message(); }, timeout);
}

bool ReceiverCore::arm() noexcept {
  // A stashed message is something waiting, like a buffer in the ring.
  if (ended_ || stashed_) return false;
  // The previous arming ends before this one begins: take the word back
  // (disarm() notes whether the owner took it first, which means its
  // record is on the socket or on its way) and drain what has arrived.
  // Only then is the word set again, so every record drained here belongs
  // to an earlier arming. Draining after setting it would be a lost
  // wake-up: a publish() whose descriptor this side had already taken
  // could take the new arming and send its record, the drain would eat
  // that record, the re-check below would find the ring empty, and the
  // next publish() would find the word taken and signal nobody. A record
  // of an earlier arming that arrives after the drain costs one spurious
  // wake-up; the next arm() drains it.
  disarm();
  if (owed_) {
    owed_ = false;
    if (!drain_ready(ready_fd_.get())) ready_eof_ = true;
  }
  // relaxed: only this thread sets the word to 1 and it is 0 here (taken
  // back above, and the owner only clears it); the seq_cst fence below
  // orders the store for the owner.
  header_->send.consumer_armed.store(1, std::memory_order_relaxed);
  armed_ = true;
  // acquire: pairs with the release store in set_arm_hook_for_tests().
  if (ArmHook hook = g_arm_hook.load(std::memory_order_acquire)) hook(g_arm_hook_context);
  // seq_cst: the sleeping side's store-buffer fence (fbuf/base/wake.h);
  // pairs with the fence in RingProducer::publish(). Either the owner's
  // publish() sees the word set and signals, or the check below sees its
  // tail.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (in_.readable() || peer_closed()) {
    disarm();
    return false;
  }
  return true;
}

void ReceiverCore::disarm() noexcept {
  if (!armed_) return;
  armed_ = false;
  // relaxed: as in arm(); 0 means the owner took the arming and signals.
  if (header_->send.consumer_armed.exchange(0, std::memory_order_relaxed) == 0) owed_ = true;
}

ReceiverStats ReceiverCore::stats() const noexcept {
  ReceiverStats s;
  s.received = received_.load(std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
  s.returned = returned_.load(std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
  s.rejected_descriptors = rejected_.load(std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
  s.rejected_messages = rejected_messages_.load(std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
  // relaxed: a counter the owner bumps; no data is published through it.
  s.dropped = header_->dropped.load(std::memory_order_relaxed);
  return s;
}

namespace {

// A receiver in the sender's own process: views read the pool directly and
// go back to it directly.
class LocalReceiver final : public ReceiverCore {
 public:
  LocalReceiver(std::shared_ptr<PoolCore> pool, std::shared_ptr<LocalChannel> channel, UniqueFd ready)
      : pool_(std::move(pool)), channel_(std::move(channel)) {
    ready_fd_ = std::move(ready);
    header_ = channel_->memory.header();
    in_ = RingConsumer(&header_->send, channel_->memory.send_slots(), channel_->memory.send_capacity());
  }
  ~LocalReceiver() override { close(); }

  void close() noexcept override {
    std::deque<View> forwarded;
    {
      std::lock_guard lock(pool_->mutex());
      if (channel_->receiver_gone) return;
      channel_->receiver_gone = true;
      // The sender pushes only with the mutex held and checks
      // receiver_gone first, so what is in the ring now is all there is.
      Descriptor d;
      while (in_.pop(d) == RingStatus::kOk)
        if (d.pool == 0) pool_->release_ref_locked(d.index, d.generation);
      // Forwarded views not taken go back to their owners below, out of
      // the pool's lock.
      std::lock_guard forward(channel_->forward_mu);
      forwarded.swap(channel_->forwarded);
    }
    forwarded.clear();
    pool_->ring_doorbell_unlocked();
  }

 protected:
  bool peer_closed() noexcept override { return sender_said_closed(); }

  Result<View> make_view(const Descriptor& d) noexcept override {
    if (d.pool == LocalChannel::kForwardedLocal) {
      // A view forwarded by the Sender (LocalOutlet::write_forward_locked):
      // the next one it parked, sharing the stage's reference.
      std::lock_guard lock(channel_->forward_mu);
      if (channel_->forwarded.empty()) {
        rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
        return Errc::kBadDescriptor;
      }
      View v = std::move(channel_->forwarded.front());
      channel_->forwarded.pop_front();
      return v;
    }
    // The sender is this process's own code, but the checks are cheap.
    if (d.index >= pool_->buffer_count() || d.offset > pool_->buffer_capacity(d.index) ||
        d.length > pool_->buffer_capacity(d.index) - d.offset) {
      rejected_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (receiver_core.h)
      return Errc::kBadDescriptor;
    }
    if (channel_->count_held) channel_->held.fetch_add(1, std::memory_order_relaxed);  // relaxed: see LocalChannel::held
    return ViewAccess::make(std::shared_ptr<ViewOwner>(owner_, owner_.get()),
                            pool_->reader_base() + pool_->buffer_offset(d.index) + d.offset, d.length, d.pool,
                            d.index, d.generation);
  }

 private:
  // Views go back to the pool through this owner, which also keeps the
  // channel's count of held views (LocalChannel::held).
  class Owner final : public ViewOwner {
   public:
    Owner(std::shared_ptr<PoolCore> pool, std::shared_ptr<LocalChannel> channel)
        : pool_(std::move(pool)), channel_(std::move(channel)) {}
    void release(std::uint32_t /*pool*/, std::uint32_t index, std::uint32_t generation) noexcept override {
      if (channel_->count_held) channel_->held.fetch_sub(1, std::memory_order_relaxed);  // relaxed: see LocalChannel::held
      pool_->release_ref(index, generation);
    }
    PoolCore* local_pool() noexcept override { return pool_.get(); }

   private:
    std::shared_ptr<PoolCore> pool_;
    std::shared_ptr<LocalChannel> channel_;
  };

  std::shared_ptr<PoolCore> pool_;
  std::shared_ptr<LocalChannel> channel_;
  std::shared_ptr<Owner> owner_ = std::make_shared<Owner>(pool_, channel_);
};

}  // namespace

std::shared_ptr<ReceiverCore> make_local_receiver(std::shared_ptr<PoolCore> pool,
                                                  std::shared_ptr<LocalChannel> channel, UniqueFd ready) {
  return std::make_shared<LocalReceiver>(std::move(pool), std::move(channel), std::move(ready));
}

}  // namespace fbuf::detail
