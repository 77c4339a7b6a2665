// Sleeping and waking across processes: the one protocol used by the rings,
// the pool's doorbell and every blocking call.
//
// Invariants:
//  - A side about to sleep increments a `waiters` word, issues a seq_cst
//    fence and re-checks its condition before it sleeps on the futex word
//    `seq`; the waking side publishes its change, issues a seq_cst fence,
//    then reads `waiters` and bumps `seq` + futex-wakes only if it is
//    non-zero. One of the two always sees the other (a store-buffer litmus
//    with fences on both sides), so no wake-up is lost and nobody makes a
//    syscall while both sides keep up.
//  - Both words may live in memory a peer can write. A peer that scribbles
//    there can cause spurious or missed wake-ups of its own channel only;
//    every sleep is bounded by the caller's deadline and, except under the
//    test hook below, by a slice after which the caller re-checks.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "fbuf/base/futex.h"

namespace fbuf::detail {

// The waking half: call after publishing an index (or a return) and a
// seq_cst fence. Wakes whoever sleeps on `seq`, with no syscall when nobody
// does.
inline void wake_sleepers(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& seq) noexcept {
  // acquire: ordered after the caller's publication by its fence; pairs
  // with the release increment in sleep_until(), so the sleeper's read of
  // `seq` happens before the bump below and its futex_wait sees the change.
  if (waiters.load(std::memory_order_acquire) != 0) {
    // relaxed: the futex syscall that follows orders the bump for the
    // sleeper; nothing else is published through `seq`.
    seq.fetch_add(1, std::memory_order_relaxed);
    futex_wake_all(&seq);
  }
}

// Publishes a change made with plain or release stores, then wakes.
inline void fence_and_wake(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& seq) noexcept {
  // seq_cst: the store-buffer fence of the waking side (Invariants above);
  // pairs with the fence in sleep_until().
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_sleepers(waiters, seq);
}

// Bumps `seq` and wakes every sleeper whether or not it registered: for
// changes a sleeper cannot poll cheaply (a peer closing, a cut-off).
inline void wake_all(std::atomic<std::uint32_t>& seq) noexcept {
  // relaxed: the caller published its change with a release store before;
  // the sleeper re-checks with acquire loads after it wakes.
  seq.fetch_add(1, std::memory_order_relaxed);
  futex_wake_all(&seq);
}

// How long a waiting side polls before it sleeps: receive() for a
// descriptor, allocate() for a returned buffer. Short enough to cost little
// when idle, long enough to catch a peer that is a few microseconds behind
// without a futex call on either side (a time, not a count of iterations,
// so it means the same on any CPU).
inline constexpr std::chrono::microseconds kSpinBeforeSleep{20};

// How long one sleep may last before the caller re-checks for a peer that
// died without waking it. `normal` unless the test hook
// FBUF_TEST_UNSLICED_SLEEP=1 is set in the environment, which makes every
// sleep last until its deadline, so that a test of a wake-up fails when the
// wake-up is missing instead of being rescued by the next slice
// (docs/testing.md).
std::chrono::nanoseconds sleep_slice(std::chrono::nanoseconds normal) noexcept;

// Sleeps until `ready()` or `timeout`, by the protocol above. `waiters` and
// `seq` are the sleeping side's pair (consumer_waiters/data_seq,
// producer_waiters/space_seq, or a doorbell's).
template <class Ready>
bool sleep_until(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& seq,
                 std::chrono::nanoseconds timeout, Ready ready) noexcept {
  // relaxed: ordered before the increment below, which the waking side
  // observes with acquire, so the value read here predates any bump made
  // for this sleep; the futex then refuses to sleep on a stale value.
  std::uint32_t seen = seq.load(std::memory_order_relaxed);
  // release: pairs with the waking side's acquire load of `waiters`.
  waiters.fetch_add(1, std::memory_order_release);
  // seq_cst: the sleeping side's store-buffer fence; pairs with the fence
  // in fence_and_wake() / the ring's publish().
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool ok = ready();
  if (!ok) futex_wait(&seq, seen, timeout);
  // relaxed: a late decrement only costs the other side a spare wake.
  waiters.fetch_sub(1, std::memory_order_relaxed);
  return ok || ready();
}

}  // namespace fbuf::detail
