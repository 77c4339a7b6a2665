// Structures that live in memory shared between a sender and a receiver.
// Each is standard layout, placement-constructed by the owner after a magic
// and version, and addressed by offsets, never pointers. The receiver checks
// magic, version and sizes against the handshake before using any of it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ipc/ring.h"

namespace fbuf::ipc {

inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::uint64_t kChannelMagic = 0x6662756663686e31ULL;   // "fbufchn1"
inline constexpr std::uint64_t kDoorbellMagic = 0x6662756664626c31ULL;  // "fbufdbl1"

// The head of a connection's memfd: the send ring (owner -> receiver) and
// the return ring (receiver -> owner), each followed by its slots.
struct ChannelHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t send_capacity;
  std::uint32_t return_capacity;
  std::uint32_t reserved;
  // Set by the owner when it closes the channel; the receiver reports
  // end-of-stream once the send ring is drained. Never trusted by the owner.
  alignas(kCacheLine) std::atomic<std::uint32_t> sender_closed{0};
  RingIndices send;
  RingIndices ret;

  static std::size_t send_slots_offset() noexcept { return sizeof(ChannelHeader); }
  static std::size_t return_slots_offset(std::uint32_t send_capacity) noexcept {
    return sizeof(ChannelHeader) + std::size_t{send_capacity} * sizeof(Descriptor);
  }
  static std::size_t bytes(std::uint32_t send_capacity, std::uint32_t return_capacity) noexcept {
    return return_slots_offset(send_capacity) + std::size_t{return_capacity} * sizeof(Descriptor);
  }
};
static_assert(std::is_standard_layout_v<ChannelHeader>);
static_assert(sizeof(ChannelHeader) % kCacheLine == 0);

// One per pool, shared read-write with every receiver of the pool: the
// word an owner sleeps on in Pool::allocate(timeout) while waiting for a
// return. A receiver that pushes a return bumps `seq` if `waiters` is
// non-zero (the protocol of ring.h). A peer that scribbles here can only
// cause spurious or missed wake-ups, and the owner's waits are bounded.
struct DoorbellHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t reserved;
  alignas(kCacheLine) std::atomic<std::uint32_t> seq{0};
  std::atomic<std::uint32_t> waiters{0};
};
static_assert(std::is_standard_layout_v<DoorbellHeader>);

// Rings the doorbell if anyone sleeps on it. Call after publishing. With
// `fenced`, the caller has issued the seq_cst fence after its publication
// already (RingProducer::publish() does), and it is not repeated.
inline void ring_doorbell(DoorbellHeader* d, bool fenced = false) noexcept {
  if (!fenced) std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_sleepers(d->waiters, d->seq);
}

}  // namespace fbuf::ipc
