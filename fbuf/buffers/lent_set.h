// What an owner has lent to one receiver: the generation of each buffer
// that receiver holds (or has queued). A return counts only if it names a
// buffer lent to this receiver at that generation, once. Owner-private: the
// only trusted record of a receiver's holdings, used to validate its
// returns and to reclaim everything when it leaves, dies or is cut off.
// Pure, so the descriptor fuzzer drives it. Private to the library.
#pragma once

#include <cstdint>
#include <vector>

#include "fbuf/base/ring.h"

namespace fbuf::detail {

class LentSet {
 public:
  explicit LentSet(std::uint32_t buffers) : held_(buffers, 0) {}

  // The owner lends (index, generation); the index is the owner's own and
  // in range, and the buffer is not already lent to this receiver.
  void lend(std::uint32_t index, std::uint32_t generation) noexcept {
    if (held_[index] == 0) ++outstanding_;
    held_[index] = generation;
  }

  // True (and forgets the loan) for a valid return. `d` is a private copy.
  bool take_back(const Descriptor& d) noexcept {
    if (d.pool != 0 || d.index >= held_.size() || held_[d.index] == 0 || held_[d.index] != d.generation)
      return false;
    held_[d.index] = 0;
    --outstanding_;
    return true;
  }

  // Calls f(index, generation) for every loan and forgets them all.
  template <class F>
  void take_all(F f) {
    for (std::uint32_t i = 0; i < held_.size() && outstanding_ != 0; ++i) {
      if (held_[i] != 0) {
        f(i, held_[i]);
        held_[i] = 0;
        --outstanding_;
      }
    }
  }

  // Buffers lent and not yet returned.
  std::uint32_t outstanding() const noexcept { return outstanding_; }

 private:
  std::vector<std::uint32_t> held_;  // 0: not lent (generation 0 is never used)
  std::uint32_t outstanding_ = 0;
};

}  // namespace fbuf::detail
