// The send path: one send (or batch) to every receiver, under the slow-
// receiver terms each receiver has; hold-timeout checks.
#include "fbuf/sender.h"

#include <capnp/message.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <optional>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/buffers/slice_holder.h"
#include "fbuf/receiver.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/listener.h"
#include "ipc/outlet.h"
#include "ipc/receiver_core.h"
#include "ipc/sender_core.h"

namespace fbuf {
namespace detail {
namespace {

// A sender blocked on a full ring re-checks at least this often, so a
// receiver that dies without waking it costs latency, never a hang.
constexpr std::chrono::milliseconds kMaxSleep{20};
// Hold timeouts are checked at most this often by the send path.
constexpr std::chrono::milliseconds kHoldCheckEvery{1};

bool held_too_long(const Outlet& o, Clock::time_point now) noexcept {
  const Clock::time_point oldest = o.oldest_lend_locked();
  return oldest != Clock::time_point::max() && now > oldest && now - oldest > o.terms.hold_timeout;
}

}  // namespace

std::error_code SenderCore::send(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                                 std::chrono::nanoseconds timeout) noexcept {
  const std::size_t n = buffers.size();
  if (n == 0 || lengths.size() != n || n > options_.ring_capacity) return Errc::kInvalidArgument;
  // Small batches need no allocation; larger ones are rare and may.
  OutSlice local[kStackBatch];
  std::vector<OutSlice> heap;
  std::span<OutSlice> slices;
  if (n <= kStackBatch) {
    slices = std::span<OutSlice>(local, n);
  } else {
    try {
      heap.resize(n);
    } catch (...) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    slices = heap;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (lengths[i] > UINT32_MAX) return Errc::kInvalidArgument;
    slices[i] = OutSlice{&buffers[i], 0, static_cast<std::uint32_t>(lengths[i])};
  }
  return send_slices(slices, false, timeout);
}

std::error_code SenderCore::send(Message& message, std::chrono::nanoseconds timeout) noexcept {
  std::span<const MessageAccess::Slice> in = MessageAccess::slices(message);
  const std::size_t n = in.size();
  static_assert(Message::kMaxSlices <= kStackBatch);
  if (n == 0 || n > options_.ring_capacity) return Errc::kInvalidArgument;
  OutSlice slices[Message::kMaxSlices];
  for (std::size_t i = 0; i < n; ++i) {
    SliceHolder& h = *in[i].holder;
    // A received View sent on names another pool's buffer: forwarded
    // (ipc/forward.cc), with the Buffer slices beside it.
    if (!h.buffer) return send_forwarded(message, timeout);
    // The Buffer is handed over whole: no other slice, of this message or
    // another, may still name it.
    if (in[i].holder.use_count() != 1) return Errc::kInvalidArgument;
    // Message keeps every range inside its handle and under kMaxBytes.
    slices[i] = OutSlice{&h.buffer, static_cast<std::uint32_t>(in[i].offset), static_cast<std::uint32_t>(in[i].length)};
  }
  std::error_code ec = send_slices(std::span<const OutSlice>(slices, n), true, timeout);
  if (!ec) MessageAccess::forget(message);
  return ec;
}

std::error_code SenderCore::send_slices(std::span<const OutSlice> slices, bool chained,
                                        std::chrono::nanoseconds timeout) noexcept {
  const std::size_t n = slices.size();
  std::uint32_t local[kStackBatch];
  std::vector<std::uint32_t> heap;
  std::span<std::uint32_t> indices;
  if (n <= kStackBatch) {
    indices = std::span<std::uint32_t>(local, n);
  } else {
    try {
      heap.resize(n);
    } catch (...) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    indices = heap;
  }
  for (std::size_t i = 0; i < n; ++i) {
    PoolCore::BufferRef ref = PoolCore::inspect(*slices[i].buffer);
    if (ref.pool != pool_.get() || slices[i].offset > ref.capacity ||
        slices[i].length > ref.capacity - slices[i].offset)
      return Errc::kInvalidArgument;
    indices[i] = ref.index;
  }
  const auto count = static_cast<std::uint32_t>(n);
  // Read once a receiver's ring is full: a send that goes through at once
  // costs no clock_gettime.
  std::optional<Clock::time_point> deadline;
  for (;;) {
    std::shared_ptr<Outlet> blocked;
    {
      std::lock_guard lock(pool_->mutex());
      if (closed_) return Errc::kClosed;
      bool fail_fast = false, skipping = false;
      Clock::time_point now{};
      if (!lenient_) {
        // Every receiver has the default terms: block on a full ring.
        for (auto& o : outlets_) {
          // Cut off since the last send (a drain found its return ring
          // corrupt, say): not served, so its ring must not block others.
          if (!o->usable_locked()) continue;
          RingStatus st = o->out.reserve(count);
          if (st == RingStatus::kCorrupt) {
            // The receiver published an impossible head: its channel is
            // corrupt. It alone is cut off; the others are served on.
            o->cut_off_locked();
            ++counters_.receivers_lost;
          } else if (st == RingStatus::kFull && !blocked) {
            blocked = o;
          }
        }
      } else {
        // Lend times are recorded only for receivers with a hold timeout,
        // all of which are watched.
        if (!watched_.empty()) now = Clock::now();
        classify_locked(count, now, blocked, fail_fast, skipping);
      }
      prune_locked();
      if (outlets_.empty()) return Errc::kNoReceivers;
      if (fail_fast) return Errc::kWouldBlock;
      if (!blocked) return deliver_locked(slices, indices, chained, skipping, now);
    }
    if (timeout.count() <= 0) return Errc::kWouldBlock;
    if (!deadline) deadline = deadline_after(timeout);
    const auto left = time_left(*deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    RingIndices* idx = blocked->out.indices();
    sleep_until(idx->producer_waiters, idx->space_seq, left, [&] {
      std::lock_guard lock(pool_->mutex());
      return !blocked->usable_locked() ||
             blocked->out.reserve(static_cast<std::uint32_t>(n)) != RingStatus::kFull;
    });
  }
}

void SenderCore::classify_locked(std::uint32_t n, Clock::time_point now, std::shared_ptr<Outlet>& blocked,
                                 bool& fail_fast, bool& skipping) noexcept {
  if (!watched_.empty() && now - last_hold_check_ >= kHoldCheckEvery) check_holds_locked(now);
  for (auto& o : outlets_) {
    o->skip = false;
    if (!o->usable_locked()) continue;  // cut off just now; pruned next
    RingStatus st = o->out.reserve(n);
    if (st == RingStatus::kCorrupt) {
      o->cut_off_locked();
      ++counters_.receivers_lost;
      continue;
    }
    switch (o->terms.policy) {
      case SlowReceiverPolicy::kBlock:
        if (st == RingStatus::kFull && !blocked) blocked = o;
        break;
      case SlowReceiverPolicy::kFailFast:
        if (st == RingStatus::kFull) fail_fast = true;
        break;
      case SlowReceiverPolicy::kSkip:
      case SlowReceiverPolicy::kCutOff: {
        // A full ring is over budget too: never wait for this receiver.
        const bool over = st == RingStatus::kFull || over_budget_locked(*o, n);
        if (!over || !o->usable_locked()) break;
        if (o->terms.policy == SlowReceiverPolicy::kSkip) {
          o->skip = true;
          skipping = true;
        } else {
          o->cut_off_locked();
          ++counters_.receivers_cut_off;
        }
        break;
      }
    }
  }
}

bool SenderCore::over_budget_locked(Outlet& o, std::uint32_t n) noexcept {
  const std::uint64_t budget = o.terms.budget;
  if (budget == 0 || std::uint64_t{o.outstanding_locked()} + n <= budget) return false;
  // Returns it made and the pool has not collected yet count for it.
  o.collect_returns_locked();
  return std::uint64_t{o.outstanding_locked()} + n > budget;
}

Descriptor SenderCore::describe_locked(const OutSlice& s, std::uint32_t flags, std::uint64_t sequence,
                                       const Outlet& /*outlet*/) noexcept {
  PoolCore::BufferRef ref = PoolCore::inspect(*s.buffer);
  return Descriptor{0, ref.index, ref.generation, s.offset, s.length, flags, sequence};
}

std::error_code SenderCore::deliver_locked(std::span<const OutSlice> slices, std::span<const std::uint32_t> indices,
                                           bool chained, bool skipping, Clock::time_point now) noexcept {
  const std::size_t n = slices.size();
  auto receivers = static_cast<std::uint32_t>(outlets_.size());
  if (skipping) {
    receivers = static_cast<std::uint32_t>(
        std::count_if(outlets_.begin(), outlets_.end(), [](const std::shared_ptr<Outlet>& o) { return !o->skip; }));
    // Every receiver would skip it: nothing is sent and nothing is
    // dropped; the buffer stays the caller's.
    if (receivers == 0) return Errc::kWouldBlock;
  }
  // The sender's write access ends before any receiver can see the
  // buffers: small ones of a protected pool are copied into sealed slots
  // (fbuf/buffers/sealed.cc), the others protected. Messages protect
  // theirs.
  std::uint32_t unsealed[kStackBatch];
  std::span<const std::uint32_t> guard = indices;
  bool sealed = false;
  if (!chained && n <= kStackBatch && pool_->sealed_copy_size() != 0) {
    std::size_t m = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (pool_->seal_locked(*slices[i].buffer, slices[i].offset, slices[i].length))
        sealed = true;
      else
        unsealed[m++] = indices[i];
    }
    guard = std::span<const std::uint32_t>(unsealed, m);
  }
  if (std::error_code ec = pool_->guard_locked(guard); ec) {
    if (sealed)
      for (std::size_t i = 0; i < n; ++i) pool_->unseal_locked(*slices[i].buffer);
    return ec;
  }
  for (std::size_t i = 0; i < n; ++i) {
    // A chain: every slice but the last says another follows.
    const std::uint32_t flags = chained && i + 1 < n ? kMoreFollows : 0;
    const std::uint64_t sequence = sequence_++;
    for (auto& o : outlets_) {
      if (!skipping || !o->skip) o->write_locked(describe_locked(slices[i], flags, sequence, *o), now);
    }
  }
  for (auto& o : outlets_) {
    if (skipping && o->skip) {
      o->count_dropped_locked(n);
      o->skip = false;
    } else {
      o->publish_locked();
      o->count_delivered_locked(n);
    }
  }
  for (std::size_t i = 0; i < n; ++i) pool_->mark_sent_locked(*slices[i].buffer, receivers);
  counters_.sent += n;
  counters_.delivered += n * receivers;
  counters_.dropped += n * (outlets_.size() - receivers);
  return {};
}

void SenderCore::check_holds() noexcept {
  std::lock_guard lock(pool_->mutex());
  if (closed_ || watched_.empty()) return;
  const auto now = Clock::now();
  if (now - last_hold_check_ >= kHoldCheckEvery) check_holds_locked(now);
}

void SenderCore::check_holds_locked(Clock::time_point now) noexcept {
  last_hold_check_ = now;
  for (auto& o : watched_) {
    if (!o->reclaimable_locked() || !held_too_long(*o, now)) continue;
    // It may have returned the buffer already: collect before judging.
    o->collect_returns_locked();
    if (!o->reclaimable_locked() || !held_too_long(*o, now)) continue;
    o->cut_off_locked();
    ++counters_.receivers_cut_off;
  }
  const std::size_t before = watched_.size();
  std::erase_if(watched_, [](const std::shared_ptr<Outlet>& o) { return !o->reclaimable_locked(); });
  if (watched_.size() != before) refresh_terms_locked();
}

ReceiverTerms SenderCore::terms_for(const ipc::HelloInfo* asked) const noexcept {
  ReceiverTerms t{options_.slow_receiver, options_.receiver_budget, options_.hold_timeout};
  if (asked != nullptr) {
    // Only ever more lenient to the other receivers: a later policy, a
    // smaller budget, a shorter hold timeout (decode_hello checked the
    // ranges).
    t.policy = std::max(t.policy, asked->slow_policy);
    if (asked->receiver_budget != 0 && (t.budget == 0 || asked->receiver_budget < t.budget))
      t.budget = asked->receiver_budget;
    const std::chrono::nanoseconds hold(static_cast<std::int64_t>(asked->hold_timeout_ns));
    if (hold.count() != 0 && (t.hold_timeout.count() == 0 || hold < t.hold_timeout)) t.hold_timeout = hold;
  }
  if (t.policy != SlowReceiverPolicy::kSkip && t.policy != SlowReceiverPolicy::kCutOff) t.budget = 0;
  return t;
}

}  // namespace detail
}  // namespace fbuf
