// Validation of what a peer puts in the shared rings. Both checks are pure
// functions of owner-private or handshake-checked state and the copied-out
// descriptor, so a peer rewriting shared memory concurrently cannot race
// them. They are the fuzzing targets for descriptors (tests/fuzz).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "fbuf/pool.h"
#include "ipc/ring.h"

namespace fbuf::ipc {

// A pool's layout as a receiver knows it: classes in buffer-index order,
// each buffer page-aligned, the whole checked against the memfd's size.
class PoolGeometry {
 public:
  PoolGeometry() = default;
  explicit PoolGeometry(std::span<const SizeClass> classes) {
    std::uint64_t first = 0, offset = 0;
    for (const auto& c : classes) {
      first_.push_back(first);
      offset_.push_back(offset);
      size_.push_back(c.buffer_size);
      first += c.count;
      offset += std::uint64_t{c.buffer_size} * c.count;
    }
    count_ = first;
    bytes_ = offset;
  }

  std::uint64_t buffer_count() const noexcept { return count_; }
  std::uint64_t bytes() const noexcept { return bytes_; }

  // Where a descriptor's bytes start in the pool, or nothing if the
  // descriptor names no buffer or reaches outside its buffer.
  std::optional<std::uint64_t> locate(const Descriptor& d) const noexcept {
    if (d.pool != 0 || d.index >= count_) return std::nullopt;
    auto k = static_cast<std::size_t>(std::upper_bound(first_.begin(), first_.end(), std::uint64_t{d.index}) -
                                      first_.begin() - 1);
    const std::uint64_t capacity = size_[k];
    if (d.offset > capacity || d.length > capacity - d.offset) return std::nullopt;
    return offset_[k] + (d.index - first_[k]) * capacity + d.offset;
  }

 private:
  std::vector<std::uint64_t> first_, offset_, size_;
  std::uint64_t count_ = 0;
  std::uint64_t bytes_ = 0;
};

// What an owner has lent to one receiver: the generation of each buffer
// that receiver holds. A return counts only if it names a buffer lent to
// this receiver at that generation, once.
class LentSet {
 public:
  explicit LentSet(std::uint32_t buffers) : held_(buffers, 0) {}

  void lend(std::uint32_t index, std::uint32_t generation) noexcept { held_[index] = generation; }

  // True (and forgets the loan) for a valid return.
  bool take_back(const Descriptor& d) noexcept {
    if (d.pool != 0 || d.index >= held_.size() || held_[d.index] == 0 || held_[d.index] != d.generation)
      return false;
    held_[d.index] = 0;
    return true;
  }

  // Calls f(index, generation) for every loan and forgets them all.
  template <class F>
  void take_all(F f) {
    for (std::uint32_t i = 0; i < held_.size(); ++i) {
      if (held_[i] != 0) {
        f(i, held_[i]);
        held_[i] = 0;
      }
    }
  }

  std::size_t outstanding() const noexcept {
    return static_cast<std::size_t>(std::count_if(held_.begin(), held_.end(), [](std::uint32_t g) { return g != 0; }));
  }

 private:
  std::vector<std::uint32_t> held_;  // 0: not lent (generation 0 is never used)
};

}  // namespace fbuf::ipc
