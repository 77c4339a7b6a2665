// The seam through which buffers come back to their pool from receivers in
// other processes. One ReturnInlet per remote receiver: the owner's end of
// that receiver's return ring, plus the owner-private record of what was
// lent to it (LentSet). The movement layer (ipc/) creates an inlet when a
// receiver connects, registers it with the pool, records each lend, and
// says when the receiver detaches, dies or must be cut off; the pool drains
// its inlets itself when it needs buffers. Calls go one way only: ipc/ ->
// buffers. Private to the library.
//
// Invariants:
//  - Every member is guarded by the pool's lock (PoolCore::mutex()).
//  - What the receiver writes (the return ring's tail and slots) is read
//    through the RingConsumer, which copies each slot out and checks the
//    tail; a copy is then checked against the LentSet before the pool
//    releases anything. Nothing is ever released twice for one lend.
//  - The path (docs/design.md, "The path"): a return ring may also carry
//    lend records (flags & kLendRecord) from a stage that forwards a view
//    it holds to a holder downstream. A holder inlet has no send ring: it
//    is granted to one inlet (its grantor) and takes loans only through
//    that inlet's lend records. A record or a return that does not match
//    may still be waiting behind a lend record in another inlet's ring: it
//    is deferred, and rejected only if it still does not match after a
//    whole drain pass that began after it was read (so every ring was read
//    again after it: docs/design.md, "The path", Causality).
//  - state: kActive (lent to) -> kDetached (no more lends; returns still
//    accepted) -> kFinished (everything lent has come back or has been
//    reclaimed; the inlet is dropped). kActive -> kFinished directly on
//    death or cut-off.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fbuf/base/fd.h"
#include "fbuf/base/ring.h"
#include "fbuf/buffers/lent_set.h"

namespace fbuf::detail {

class PoolCore;

// A test's view into the pool's drain pass (tests/fault/path_forged_test.cc):
// called with the pool's lock held after the first reading of each inlet's
// ring in PoolCore::drain_inlets_locked(), with that inlet's place in the
// pass, so a test can publish records at exactly that point (as a stage
// and its downstream running meanwhile would). Never set in production;
// unset, it costs one load and one predictable branch per inlet per pass.
struct DrainHooks {
  using Hook = void (*)(std::size_t inlet) noexcept;
  // relaxed: a function pointer with no data behind it; tests set it before
  // the drains it is meant for, with their own synchronisation.
  static void set(Hook h) noexcept { hook.store(h, std::memory_order_relaxed); }
  static std::atomic<Hook> hook;
};

// A return-ring descriptor that is a lend record, not a return: "I lend
// (index, generation), which I hold, to the holder inlet whose token is in
// `sequence`". Bits 0..7 of Descriptor::flags belong to aggregates; the
// path uses bits 8..15.
inline constexpr std::uint32_t kLendRecord = 1u << 8;

// Counted for one Sender across all its receivers; guarded by the pool's lock.
struct ReturnCounters {
  std::uint64_t returned = 0;  // valid returns
  std::uint64_t rejected = 0;  // forged, duplicate or foreign returns, corrupt rings
};

class ReturnInlet {
 public:
  // `memory` keeps the ring's mapping alive as long as the inlet; `peer`
  // is a duplicate of the receiver's control socket (to notice its
  // hang-up once the Sender is gone, and to cut it off).
  ReturnInlet(PoolCore& pool, std::shared_ptr<const void> memory, RingIndices* indices, const Descriptor* slots,
              std::uint32_t capacity, UniqueFd peer, std::shared_ptr<ReturnCounters> counters);

  // --- All with the pool's lock held. ---
  bool active_locked() const noexcept { return state_ == State::kActive; }
  bool finished_locked() const noexcept { return state_ == State::kFinished; }
  // True if the inlet was cut off because the receiver corrupted its ring.
  bool corrupt_locked() const noexcept { return corrupt_; }
  // A descriptor was pushed to this receiver at `now` (used only when
  // lend times are tracked).
  void lend_locked(std::uint32_t index, std::uint32_t generation, Clock::time_point now = {}) noexcept {
    lent_.lend(index, generation, now);
  }
  // Buffers this receiver holds or has queued.
  std::uint32_t outstanding_locked() const noexcept { return lent_.outstanding(); }
  // Records when each buffer is lent, for a hold timeout. Call before the
  // first lend (it allocates).
  void track_lend_times_locked() { lent_.track_times(); }
  // When the oldest buffer this receiver still holds was lent;
  // time_point::max() if none (or times are not tracked).
  Clock::time_point oldest_lend_locked() const noexcept { return lent_.oldest_lend(); }

  // --- The path: holders downstream of a forwarding stage. ---
  // The pool's name for this inlet, set when it is added (never 0); a lend
  // record names its holder by it.
  std::uint32_t token() const noexcept { return token_; }
  void set_token(std::uint32_t token) noexcept { token_ = token; }
  // Makes this a holder inlet, granted at the request of the inlet whose
  // token is `grantor`. Call before it is shared; allocates.
  void make_holder(std::uint32_t grantor) {
    holder_ = true;
    grantor_ = grantor;
    lent_.count_repeats();
  }
  bool holder_locked() const noexcept { return holder_; }
  std::uint32_t grantor_locked() const noexcept { return grantor_; }
  // Holder inlets granted at this inlet's request and not gone yet
  // (bounded, and counted down, by the control thread).
  std::uint32_t& grants_locked() noexcept { return grants_; }
  // True if this receiver holds (index, generation) from the owner.
  bool holds_locked(std::uint32_t index, std::uint32_t generation) const noexcept {
    return state_ != State::kFinished && lent_.holds(index, generation);
  }
  // True if records wait in this inlet's deferred list.
  bool deferring_locked() const noexcept { return !deferred_.empty(); }
  // Applies the records deferred by drain_locked() once more, after every
  // inlet was drained. What still does not match is rejected if it was
  // already deferred at the end of the previous pass (a whole pass has read
  // every ring since), and kept for the next pass otherwise.
  void retry_deferred_locked() noexcept;

  // Applies every pending return. With `check_peer`, an orphaned inlet
  // (its Sender is gone) also asks the kernel whether the receiver hung up.
  // A corrupt return ring cuts the receiver off. Returns false once
  // finished.
  bool drain_locked(bool check_peer) noexcept;
  // The receiver stopped taking: `unconsumed` (in one or two pieces, as a
  // ring wraps) are the owner's private copies of what was still queued
  // for it; they come back now.
  void detach_locked(std::span<const Descriptor> unconsumed, std::span<const Descriptor> more = {}) noexcept;
  // The receiver is gone: everything lent to it comes back.
  void reclaim_all_locked() noexcept;
  // The receiver broke the protocol or its budget: disconnect it (it sees
  // its socket shut) and take back everything lent to it.
  void cut_off_locked() noexcept;
  // The Sender is gone; the pool keeps draining and watching this inlet
  // until everything lent has come back.
  void orphan_locked() noexcept;
  bool orphaned_locked() const noexcept { return orphan_; }
  // This receiver's own counts (ReturnCounters are the Sender's totals),
  // and the returns it has published that the pool has not collected yet:
  // for the monitoring request, which reads and never drains.
  std::uint64_t returned_locked() const noexcept { return returned_; }
  std::uint64_t rejected_locked() const noexcept { return rejected_; }
  std::uint32_t returns_waiting_locked() const noexcept {
    return state_ == State::kFinished ? 0 : returns_.waiting();
  }

 private:
  enum class State { kActive, kDetached, kFinished };

  void take_back_locked(const Descriptor& copy, bool count_rejects) noexcept;
  // A return or a lend record, applied if it matches (counted); false
  // otherwise, with nothing changed.
  bool apply_locked(const Descriptor& copy) noexcept;
  bool accept_lend_locked(const Descriptor& copy) noexcept;
  void reject_locked() noexcept {
    ++counters_->rejected;
    ++rejected_;
  }
  bool peer_hung_up() const noexcept;

  PoolCore& pool_;  // owns this inlet in its inlet list, so outlives it
  std::shared_ptr<const void> memory_;
  RingConsumer returns_;
  UniqueFd peer_;
  std::shared_ptr<ReturnCounters> counters_;
  LentSet lent_;
  State state_ = State::kActive;
  bool orphan_ = false;
  bool corrupt_ = false;
  std::uint64_t returned_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint32_t token_ = 0;
  bool holder_ = false;
  std::uint32_t grantor_ = 0;
  std::uint32_t grants_ = 0;
  // Records that did not match when drained, retried at the end of the
  // pool's drain pass; room for one ring's worth, reserved up front. The
  // first `carried_` were kept from the previous pass: rejected at the end
  // of this one if they still do not match.
  std::vector<Descriptor> deferred_;
  std::size_t carried_ = 0;
};

}  // namespace fbuf::detail
