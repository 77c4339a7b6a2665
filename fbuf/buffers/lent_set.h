// What an owner has lent to one receiver: the generation of each buffer
// that receiver holds (or has queued). A return counts only if it names a
// buffer lent to this receiver at that generation, once. Owner-private: the
// only trusted record of a receiver's holdings, used to validate its
// returns and to reclaim everything when it leaves, dies or is cut off.
// Pure, so the descriptor fuzzer drives it. Private to the library.
//
// With track_times(), it also keeps the loans in lend order (an intrusive
// list over buffer indices, with the time of each loan), so the oldest loan
// still out is known in O(1) for the hold timeout: lend appends, a return
// unlinks, and nothing allocates after track_times().
#pragma once

#include <cstdint>
#include <vector>

#include "fbuf/base/deadline.h"
#include "fbuf/base/ring.h"

namespace fbuf::detail {

class LentSet {
 public:
  explicit LentSet(std::uint32_t buffers) : held_(buffers, 0) {}

  // Starts recording when each loan was made. Call before the first lend;
  // allocates three words per buffer of the pool.
  void track_times() {
    const std::size_t n = held_.size();
    prev_.assign(n, kNone);
    next_.assign(n, kNone);
    lent_at_.assign(n, Clock::time_point{});
  }

  // Counts repeated loans of one buffer at one generation, each taken back
  // by its own return: for a holder downstream of a forwarding stage, which
  // may be forwarded the same view more than once (docs/design.md, "The
  // path"). Call before the first lend; allocates one word per buffer.
  // Not combined with track_times().
  void count_repeats() { repeats_.assign(held_.size(), 0); }

  // The owner lends (index, generation) at `now`; the index is the owner's
  // own and in range. `now` is used only when times are tracked.
  void lend(std::uint32_t index, std::uint32_t generation, Clock::time_point now = {}) noexcept {
    if (!repeats_.empty() && held_[index] == generation) {
      ++repeats_[index];  // one more loan of what it holds already
      return;
    }
    if (held_[index] == 0) {
      ++outstanding_;
    } else if (!lent_at_.empty()) {
      unlink(index);  // lent again without a return: the newer loan counts
    }
    held_[index] = generation;
    if (!repeats_.empty()) repeats_[index] = 0;
    if (!lent_at_.empty()) append(index, now);
  }

  // True if (index, generation) is lent and not yet returned.
  bool holds(std::uint32_t index, std::uint32_t generation) const noexcept {
    return index < held_.size() && generation != 0 && held_[index] == generation;
  }

  // True (and forgets the loan) for a valid return. `d` is a private copy.
  bool take_back(const Descriptor& d) noexcept {
    if (d.pool != 0 || d.index >= held_.size() || held_[d.index] == 0 || held_[d.index] != d.generation)
      return false;
    if (!repeats_.empty() && repeats_[d.index] != 0) {
      --repeats_[d.index];
      return true;
    }
    held_[d.index] = 0;
    --outstanding_;
    if (!lent_at_.empty()) unlink(d.index);
    return true;
  }

  // Calls f(index, generation) for every loan and forgets them all.
  template <class F>
  void take_all(F f) {
    for (std::uint32_t i = 0; i < held_.size() && outstanding_ != 0; ++i) {
      if (held_[i] != 0) {
        if (!repeats_.empty()) {
          for (; repeats_[i] != 0; --repeats_[i]) f(i, held_[i]);
        }
        f(i, held_[i]);
        held_[i] = 0;
        --outstanding_;
      }
    }
    first_ = last_ = kNone;
  }

  // Buffers lent and not yet returned.
  std::uint32_t outstanding() const noexcept { return outstanding_; }

  // When the oldest loan still out was made; time_point::max() when none
  // is out or times are not tracked.
  Clock::time_point oldest_lend() const noexcept {
    return first_ == kNone ? Clock::time_point::max() : lent_at_[first_];
  }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;

  void append(std::uint32_t index, Clock::time_point now) noexcept {
    lent_at_[index] = now;
    prev_[index] = last_;
    next_[index] = kNone;
    if (last_ == kNone) {
      first_ = index;
    } else {
      next_[last_] = index;
    }
    last_ = index;
  }

  void unlink(std::uint32_t index) noexcept {
    const std::uint32_t p = prev_[index], n = next_[index];
    if (p == kNone) {
      first_ = n;
    } else {
      next_[p] = n;
    }
    if (n == kNone) {
      last_ = p;
    } else {
      prev_[n] = p;
    }
    prev_[index] = next_[index] = kNone;
  }

  std::vector<std::uint32_t> held_;  // 0: not lent (generation 0 is never used)
  std::uint32_t outstanding_ = 0;
  // Only with track_times(): the loans in lend order, oldest first.
  std::vector<std::uint32_t> prev_, next_;
  std::vector<Clock::time_point> lent_at_;
  std::uint32_t first_ = kNone, last_ = kNone;
  // Only with count_repeats(): loans of held_[i] beyond the first.
  std::vector<std::uint32_t> repeats_;
};

}  // namespace fbuf::detail
