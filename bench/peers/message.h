// What every peer_bench transport carries, and the work the two ends do on
// it in each mode.
//
// A message is `size` bytes (a multiple of 64). Its first 16 bytes are a
// Header (sequence number, flags). The two modes differ only in how much of
// the payload the application touches; the transport always delivers the
// whole `size` bytes (a copying transport copies all of them):
//  - kTransport: the producer writes the header, the consumer reads it.
//    What is left is the transport's own cost (as in iceoryx's iceperf).
//  - kTouch: the producer also writes one word into every 64-byte cache
//    line of the payload and the consumer reads (and checks) every one of
//    them: the end-to-end cost of producing and consuming the data.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace fbuf::bench::peers {

enum class Mode : std::uint8_t { kTransport = 0, kTouch = 1 };
const char* to_string(Mode m) noexcept;

struct Header {
  std::uint64_t seq;
  std::uint64_t flags;
};

// After consuming this message the consumer reports on the control socket
// (it ends a throughput window).
inline constexpr std::uint64_t kFlagAck = 1;
// After consuming this message the consumer replies through the reply path.
inline constexpr std::uint64_t kFlagReply = 2;
// The last message: the consumer sends its final report and stops.
inline constexpr std::uint64_t kFlagStop = 4;

inline constexpr std::size_t kLine = 64;
// Replies are one cache line: a header and nothing else.
inline constexpr std::size_t kReplySize = 64;

// The producer's work for message `seq` in `mode`, into `size` bytes at `p`.
void produce(std::byte* p, std::size_t size, std::uint64_t seq, std::uint64_t flags,
             Mode mode) noexcept;

struct Consumed {
  Header header{};
  bool data_ok = false;  // kTouch: every line holds this message's word
};
// The consumer's work on a received message of `size` bytes at `p`.
Consumed consume(const std::byte* p, std::size_t size, Mode mode) noexcept;

// A compiler barrier: memory written before it is treated as read, so a
// copy into a buffer nobody reads afterwards is not optimised away.
inline void clobber_memory() noexcept { asm volatile("" ::: "memory"); }

inline void cpu_relax() noexcept { __builtin_ia32_pause(); }

// Calls `ready` until it returns true or `spin` has passed since the call
// (the first half of every waiting side's policy: poll, then block).
// Returns whether `ready` said yes.
template <class Ready>
bool poll_for(std::chrono::nanoseconds spin, Ready ready) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (ready()) return true;
    if (std::chrono::steady_clock::now() - start >= spin) return false;
    cpu_relax();
  }
}

}  // namespace fbuf::bench::peers
