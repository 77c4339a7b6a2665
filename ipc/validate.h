// Validation of the descriptors a sender puts in a receiver's ring: a pure
// function of handshake-checked geometry and the copied-out descriptor, so
// a peer rewriting shared memory concurrently cannot race it. The owner's
// side of the check (returns) is fbuf/buffers/lent_set.h. Both are the
// fuzzing targets for descriptors (tests/fuzz).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "fbuf/pool.h"
#include "fbuf/base/limits.h"
#include "fbuf/base/ring.h"
#include "ipc/layout.h"

namespace fbuf::ipc {

using detail::Descriptor;

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

  // Where buffer `index` starts in the pool, and its capacity; nothing if
  // there is no such buffer.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> buffer(std::uint32_t index) const noexcept {
    if (index >= count_) return std::nullopt;
    auto k = static_cast<std::size_t>(std::upper_bound(first_.begin(), first_.end(), std::uint64_t{index}) -
                                      first_.begin() - 1);
    return std::pair{offset_[k] + (index - first_[k]) * size_[k], size_[k]};
  }

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

// One aggregate as a receiver takes it from its ring (docs/design.md,
// "Aggregates"): the descriptors of a chain are fed in ring order, each a
// private copy with whether the receiver could map its bytes. The chain is
// at fault, and rejected whole, if it has more than kMaxMessageSlices
// slices or more than kMaxMessageBytes bytes, an invalid slice (bytes
// outside its buffer, reserved flag bits), a buffer named twice, or if the
// published tail ends it (cut()). Pure, so the descriptor fuzzer drives it.
class ChainCheck {
 public:
  enum class Fault : std::uint8_t { kNone, kTooLong, kTooLarge, kBadSlice, kDuplicate, kCut };

  // Feeds the next descriptor. True if its slice belongs in the message;
  // false once the chain is at fault (the caller gives back every slice it
  // kept and, if `valid`, this one too).
  bool add(const Descriptor& d, bool valid) noexcept {
    ++taken_;
    open_ = (d.flags & kMoreFollows) != 0;
    if (fault_ != Fault::kNone) return false;
    if (!valid || (d.flags & kAggregateReserved) != 0) return fail(Fault::kBadSlice);
    if (kept_ == detail::kMaxMessageSlices) return fail(Fault::kTooLong);
    total_ += d.length;
    if (total_ > detail::kMaxMessageBytes) return fail(Fault::kTooLarge);
    const std::uint64_t name = std::uint64_t{d.pool} << 32 | d.index;
    if (std::find(names_, names_ + kept_, name) != names_ + kept_) return fail(Fault::kDuplicate);
    names_[kept_++] = name;
    return true;
  }
  // The published tail (or the receiver's patience) ended the chain while
  // it was still open.
  void cut() noexcept {
    if (open_ && fault_ == Fault::kNone) fault_ = Fault::kCut;
    open_ = false;
  }

  // True while the last descriptor fed says another follows.
  bool open() const noexcept { return open_; }
  Fault fault() const noexcept { return fault_; }
  // Descriptors fed, and slices kept (0 once at fault).
  std::size_t taken() const noexcept { return taken_; }
  std::size_t kept() const noexcept { return fault_ == Fault::kNone ? kept_ : 0; }

 private:
  bool fail(Fault f) noexcept {
    fault_ = f;
    return false;
  }

  std::uint64_t names_[detail::kMaxMessageSlices];  // (pool << 32 | index) of each slice kept
  std::size_t kept_ = 0;
  std::size_t taken_ = 0;
  std::uint64_t total_ = 0;
  bool open_ = true;
  Fault fault_ = Fault::kNone;
};

// The path: where a view of buffer `index` that starts at `data` and holds
// `size` bytes begins within its buffer, in a pool mapped at `base`;
// nothing if the view is not inside that buffer.
inline std::optional<std::uint32_t> offset_in_buffer(const PoolGeometry& g, const std::byte* base,
                                                     std::uint32_t index, const std::byte* data,
                                                     std::size_t size) noexcept {
  auto b = g.buffer(index);
  if (!b || data < base) return std::nullopt;
  const auto at = static_cast<std::uint64_t>(data - base);
  if (at < b->first || at - b->first > b->second || size > b->second - (at - b->first)) return std::nullopt;
  return static_cast<std::uint32_t>(at - b->first);
}

}  // namespace fbuf::ipc
