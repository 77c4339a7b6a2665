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
//  - armed is the readiness-fd half of the same protocol for a Sender
//    waiting in poll/epoll for a buffer (SenderCore::arm()): set by the
//    owner, taken back with an exchange by whoever frees a buffer after
//    ringing, who then signals the owner's fd (docs/design.md,
//    "Readiness fds").
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "fbuf/base/limits.h"
#include "fbuf/base/wake.h"

namespace fbuf::detail {

inline constexpr std::uint64_t kDoorbellMagic = 0x6662756664626c31ULL;  // "fbufdbl1"
inline constexpr std::uint32_t kDoorbellVersion = 2;

struct DoorbellHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t reserved;
  alignas(kCacheLine) std::atomic<std::uint32_t> seq{0};
  std::atomic<std::uint32_t> waiters{0};
  std::atomic<std::uint32_t> armed{0};  // 1: the owner waits on its Sender's readiness fd
};
static_assert(std::is_standard_layout_v<DoorbellHeader>);

// Rings the doorbell if anyone sleeps on it. Call after publishing a
// return (or freeing a buffer) with a release store or under a lock.
inline void ring_doorbell(DoorbellHeader* d) noexcept { fence_and_wake(d->waiters, d->seq); }
// The same when the caller has just issued the seq_cst fence itself
// (RingProducer::publish() does), so it is not repeated.
inline void ring_doorbell_fenced(DoorbellHeader* d) noexcept { wake_sleepers(d->waiters, d->seq); }

// After ringing (the fence is the ring's): true if the owner had armed its
// Sender's readiness fd and this caller took the arming, so it must signal
// that fd once.
inline bool take_doorbell_arming(DoorbellHeader* d) noexcept {
  // relaxed, both: ordered after the freed buffer's publication by the
  // seq_cst fence of the ring that preceded; pairs with the fence in
  // SenderCore::arm(). The plain load keeps the common case free of a
  // locked instruction.
  return d->armed.load(std::memory_order_relaxed) != 0 && d->armed.exchange(0, std::memory_order_relaxed) != 0;
}

}  // namespace fbuf::detail
