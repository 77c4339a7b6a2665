// The memory of one connection, shared between a sender and a receiver: a
// ChannelHeader, then the send ring's slots (owner -> receiver), then the
// return ring's slots (receiver -> owner). Standard layout, placement-
// constructed by the owner after a magic and version, addressed by offsets,
// never pointers. Private to the library.
//
// Invariants:
//  - The owner writes magic, version and capacities once, before the
//    receiver gets the fd; afterwards both sides use the capacities agreed
//    in the handshake, kept in private memory, and never read these fields
//    again (the receiver checks them once against the Welcome).
//  - sender_closed, cut_off and dropped are written only by the owner; the
//    receiver reads them as information about its own stream and the
//    owner never reads them back.
//  - The ring indices follow fbuf/base/ring.h.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "fbuf/base/limits.h"
#include "fbuf/base/ring.h"

namespace fbuf::ipc {

using detail::Descriptor;
using detail::RingIndices;
using detail::kCacheLine;

// 2: the owner-written `cut_off` and `dropped` words.
// 3: the rings' `consumer_armed` word and the readiness socket, the
//    Welcome's fourth fd.
// 4: aggregates, descriptor chains marked by kMoreFollows.
// 5: the path: Descriptor::pool names a per-connection pool slot (0 the
//    owner's own pool, others announced by PoolAnnounce), lend records in
//    the return ring (flags bits 8..15), return rings sized for them; and
//    chains whose slices name several pool slots.
inline constexpr std::uint32_t kProtocolVersion = 5;
inline constexpr std::uint64_t kChannelMagic = 0x6662756663686e32ULL;  // "fbufchn2"

// Descriptor::flags. Bit 0: another descriptor of the same message
// follows; set on every slice of an aggregate but the last, which the
// owner publishes with one tail store (docs/design.md, "Aggregates").
// Bits 1..7 are reserved for aggregates and must be 0 (a receiver rejects
// a descriptor with one set); bits 8..15 belong to forwarding.
inline constexpr std::uint32_t kMoreFollows = 1u << 0;
inline constexpr std::uint32_t kAggregateReserved = 0xFEu;

struct ChannelHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t send_capacity;
  std::uint32_t return_capacity;
  std::uint32_t reserved;
  // Set by the owner when it closes the channel; the receiver reports
  // end-of-stream once the send ring is drained.
  alignas(kCacheLine) std::atomic<std::uint32_t> sender_closed{0};
  // Set by the owner when it cut this receiver off (slow-consumer policy);
  // the receiver then reports Errc::kCutOff once the ring is drained.
  std::atomic<std::uint32_t> cut_off{0};
  // Buffers the owner skipped for this receiver (slow-consumer budget).
  std::atomic<std::uint64_t> dropped{0};
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
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace fbuf::ipc
