// Limits of the formats and structures fbuf shares with peers, defined
// once. Private to the library.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fbuf::detail {

// Size classes per pool (the SIGSEGV report's table and the handshake
// decoder hold this many).
inline constexpr std::size_t kMaxClasses = 64;
// Buffers per pool: a descriptor's index fits 24 bits with room to spare,
// and a return ring of this many slots is 32 MiB at most.
inline constexpr std::uint32_t kMaxBuffers = 1u << 24;
// Descriptors per ring.
inline constexpr std::uint32_t kMaxRingCapacity = 1u << 22;
// A cache line on every CPU fbuf is built for (x86-64, AArch64).
inline constexpr std::size_t kCacheLine = 64;
// Descriptors a stack array holds before a batch call allocates.
inline constexpr std::size_t kStackBatch = 64;
// An aggregate (fbuf::Message) has at most this many slices and bytes: a
// protocol limit, fixed by the protocol version (ipc/layout.h) and checked
// by every receiver. Message::kMaxSlices / kMaxBytes repeat them publicly.
inline constexpr std::size_t kMaxMessageSlices = 64;
inline constexpr std::uint64_t kMaxMessageBytes = 0xFFFFFFFFu;

}  // namespace fbuf::detail
