#include "fbuf/buffers/returns.h"

#include <poll.h>
#include <sys/socket.h>

#include "fbuf/buffers/pool_core.h"

namespace fbuf::detail {

std::atomic<DrainHooks::Hook> DrainHooks::hook{nullptr};

ReturnInlet::ReturnInlet(PoolCore& pool, std::shared_ptr<const void> memory, RingIndices* indices,
                         const Descriptor* slots, std::uint32_t capacity, UniqueFd peer,
                         std::shared_ptr<ReturnCounters> counters)
    : pool_(pool),
      memory_(std::move(memory)),
      returns_(indices, slots, capacity),
      peer_(std::move(peer)),
      counters_(std::move(counters)),
      lent_(pool.buffer_count()) {
  deferred_.reserve(capacity);
}

bool ReturnInlet::drain_locked(bool check_peer) noexcept {
  if (state_ == State::kFinished) return false;
  // The receiver never waits for space in its return ring (it holds as
  // many slots as the pool has buffers), so the slots are handed back once
  // per batch.
  Descriptor d;
  for (;;) {
    RingStatus st = returns_.take(d);
    if (st == RingStatus::kEmpty) break;
    if (st == RingStatus::kCorrupt) {
      // The receiver broke its own return ring: cut it off.
      ++counters_->rejected;
      ++rejected_;
      corrupt_ = true;
      cut_off_locked();
      return false;
    }
    if (apply_locked(d)) continue;
    // Perhaps the lend record that makes it valid sits in another inlet's
    // ring, not drained yet in this pass: PoolCore::drain_inlets_locked()
    // retries it at the end of the pass.
    if (deferred_.size() < deferred_.capacity()) {
      deferred_.push_back(d);
    } else {
      reject_locked();
    }
  }
  returns_.release();
  if (check_peer && orphan_ && peer_hung_up()) reclaim_all_locked();
  if (state_ == State::kDetached && orphan_ && lent_.outstanding() == 0) state_ = State::kFinished;
  return state_ != State::kFinished;
}

bool ReturnInlet::apply_locked(const Descriptor& copy) noexcept {
  if ((copy.flags & kLendRecord) != 0) return accept_lend_locked(copy);
  if (!lent_.take_back(copy)) return false;
  pool_.release_ref_locked(copy.index, copy.generation);
  ++counters_->returned;
  ++returned_;
  return true;
}

bool ReturnInlet::accept_lend_locked(const Descriptor& copy) noexcept {
  // `copy` is private. Accepted only if this receiver holds the buffer at
  // that generation and the holder was granted at its own request; then
  // the holder is one more reference at the owner, so the buffer stays in
  // flight while anyone on the path holds it, whatever happens to this
  // receiver.
  if (copy.flags != kLendRecord || copy.pool != 0 || copy.sequence == 0 || copy.sequence > UINT32_MAX) return false;
  if (!holds_locked(copy.index, copy.generation)) return false;
  ReturnInlet* to = pool_.find_inlet_locked(static_cast<std::uint32_t>(copy.sequence));
  if (to == nullptr || !to->holder_ || to->grantor_ != token_ || to->state_ != State::kActive) return false;
  if (!pool_.add_ref_locked(copy.index, copy.generation)) return false;
  to->lent_.lend(copy.index, copy.generation);
  return true;
}

void ReturnInlet::retry_deferred_locked() noexcept {
  if (deferred_.empty()) return;
  const bool finished = state_ == State::kFinished;
  std::size_t kept = 0;
  for (std::size_t i = 0; i < deferred_.size(); ++i) {
    const Descriptor d = deferred_[i];
    if (finished) {
      reject_locked();
    } else if (apply_locked(d)) {
      continue;
    } else if (i < carried_) {
      // Deferred a whole pass ago: every ring has been read since, so a
      // lend record it waited for would have been found.
      reject_locked();
    } else {
      // Read in this pass: the lend record it waits for may have been
      // published after its ring was read in this pass (the stage and its
      // downstream run meanwhile). Kept for the next pass.
      deferred_[kept++] = d;
    }
  }
  deferred_.resize(kept);
  carried_ = kept;
}

void ReturnInlet::detach_locked(std::span<const Descriptor> unconsumed, std::span<const Descriptor> more) noexcept {
  if (state_ != State::kActive) return;
  state_ = State::kDetached;
  drain_locked(false);
  // Copies the owner made when it pushed them: nothing here is read from
  // the shared ring.
  for (const Descriptor& d : unconsumed) take_back_locked(d, false);
  for (const Descriptor& d : more) take_back_locked(d, false);
  pool_.ring_doorbell_locked();
}

void ReturnInlet::reclaim_all_locked() noexcept {
  if (state_ == State::kFinished) return;
  lent_.take_all([&](std::uint32_t index, std::uint32_t generation) { pool_.release_ref_locked(index, generation); });
  state_ = State::kFinished;
  deferred_.clear();
  carried_ = 0;
  // Buffers came back without any receiver ringing the doorbell: wake
  // allocate(timeout) waiters now rather than at their next slice.
  pool_.ring_doorbell_locked();
}

void ReturnInlet::cut_off_locked() noexcept {
  if (state_ == State::kFinished) return;
  if (peer_) ::shutdown(peer_.get(), SHUT_RDWR);
  // The path: lend records in the ring count holders downstream of this
  // receiver; taken back unread, the buffers they name could be reused
  // under those holders. Read them first, unless the ring is what broke
  // (then drain_locked() read it up to the break, and cuts off itself).
  if (!corrupt_) drain_locked(false);
  reclaim_all_locked();
}

void ReturnInlet::orphan_locked() noexcept {
  if (!orphan_) pool_.note_orphan_locked(+1);
  orphan_ = true;
  // A holder stays active: its grantor may still forward to it (that
  // stage holds views of the pool), and it ends only with its socket.
  if (state_ == State::kActive && !holder_) state_ = State::kDetached;
}

void ReturnInlet::take_back_locked(const Descriptor& copy, bool count_rejects) noexcept {
  // `copy` is private: check it against what was actually lent to this
  // receiver, at this generation, and release at most once.
  if (lent_.take_back(copy)) {
    pool_.release_ref_locked(copy.index, copy.generation);
    ++counters_->returned;
    ++returned_;
  } else if (count_rejects) {
    ++counters_->rejected;
    ++rejected_;
  }
}

bool ReturnInlet::peer_hung_up() const noexcept {
  if (!peer_) return false;
  pollfd p{peer_.get(), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

}  // namespace fbuf::detail
