// The frames fault tests stream: a header (sequence, length, checksum of
// the payload) and a payload that depends on the sequence number, so a
// lost, duplicated, reordered or torn buffer is detected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fbuf::test {

struct FrameHeader {
  std::uint64_t seq;
  std::uint64_t length;
  std::uint64_t checksum;
};
inline constexpr std::size_t kMinFrame = sizeof(FrameHeader);

inline std::uint64_t fnv1a(const std::byte* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

// A frame length between kMinFrame and `max` that varies with seq.
inline std::size_t frame_length(std::uint64_t seq, std::size_t max) {
  std::uint64_t x = seq * 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  return kMinFrame + static_cast<std::size_t>(x % (max - kMinFrame + 1));
}

inline void fill_frame(std::byte* p, std::size_t length, std::uint64_t seq) {
  std::byte* payload = p + sizeof(FrameHeader);
  const std::size_t n = length - sizeof(FrameHeader);
  for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<std::byte>((seq * 131 + i * 7) & 0xff);
  FrameHeader h{seq, length, fnv1a(payload, n)};
  std::memcpy(p, &h, sizeof h);
}

// True if the frame is intact; its sequence number goes to *seq.
inline bool check_frame(const std::byte* p, std::size_t length, std::uint64_t* seq) {
  if (length < sizeof(FrameHeader)) return false;
  FrameHeader h;
  std::memcpy(&h, p, sizeof h);
  if (h.length != length) return false;
  *seq = h.seq;
  return h.checksum == fnv1a(p + sizeof h, length - sizeof h);
}

}  // namespace fbuf::test
