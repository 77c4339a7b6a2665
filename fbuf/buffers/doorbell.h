// A pool's doorbell: one small memfd shared read-write with every receiver
// of the pool, holding the futex word an owner sleeps on in
// Pool::allocate(timeout) until some receiver returns a buffer. A receiver
// that pushes a return rings it (fbuf/base/wake.h protocol). A peer that
// scribbles here can only cause spurious or missed wake-ups, and the
// owner's waits are bounded. Private to the library.
//
// Invariants:
//  - The owner writes magic and version once, before any receiver gets the
//    fd; nobody reads them back (a receiver checks the fd, not the page).
//  - seq and waiters follow fbuf/base/wake.h: the owner sleeping in
//    allocate(timeout) is the sleeping side; a receiver pushing a return,
//    and the owner freeing buffers by a reclaim, detach or cut-off, are
//    the waking side.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "fbuf/base/limits.h"
#include "fbuf/base/wake.h"

namespace fbuf::detail {

inline constexpr std::uint64_t kDoorbellMagic = 0x6662756664626c31ULL;  // "fbufdbl1"
inline constexpr std::uint32_t kDoorbellVersion = 1;

struct DoorbellHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t reserved;
  alignas(kCacheLine) std::atomic<std::uint32_t> seq{0};
  std::atomic<std::uint32_t> waiters{0};
};
static_assert(std::is_standard_layout_v<DoorbellHeader>);

// Rings the doorbell if anyone sleeps on it. Call after publishing a
// return (or freeing a buffer) with a release store or under a lock.
inline void ring_doorbell(DoorbellHeader* d) noexcept { fence_and_wake(d->waiters, d->seq); }
// The same when the caller has just issued the seq_cst fence itself
// (RingProducer::publish() does), so it is not repeated.
inline void ring_doorbell_fenced(DoorbellHeader* d) noexcept { wake_sleepers(d->waiters, d->seq); }

}  // namespace fbuf::detail
