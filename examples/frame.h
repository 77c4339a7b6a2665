// Synthetic video frames for the example pipelines.
//
// A frame is a FrameHeader followed by a YUYV 4:2:2 image (two bytes per
// pixel) of a scrolling gradient with a box that bounces around, so that
// consecutive frames differ the way camera frames do. The header carries the
// frame's sequence number, geometry, capture time and a checksum of the
// image, so a consumer can tell a lost, repeated or damaged frame.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>

namespace fbuf_examples {

inline constexpr std::uint32_t kFrameMagic = 0x31565559;  // "YUV1"

struct FrameHeader {
  std::uint32_t magic = kFrameMagic;
  std::uint32_t width = 0;
  std::uint32_t height = 0;
  std::uint32_t reserved = 0;
  std::uint64_t sequence = 0;
  std::uint64_t image_size = 0;  // bytes after the header: width * height * 2
  std::int64_t capture_ns = 0;   // steady_clock (CLOCK_MONOTONIC) at capture
  std::uint64_t checksum = 0;    // checksum(kChecksumSeed, image)
};
static_assert(sizeof(FrameHeader) == 48);

inline std::size_t frame_size(std::uint32_t width, std::uint32_t height) {
  return sizeof(FrameHeader) + std::size_t{width} * height * 2;
}

inline std::int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline constexpr std::uint64_t kChecksumSeed = 0xcbf29ce484222325;  // FNV-1a 64 offset basis

// FNV-1a 64 over the bytes taken as native 64-bit words (then the tail
// bytes one at a time): eight times fewer multiplications than the byte-wise
// original, so the checksum does not hide the transfer. Chains from `h`.
inline std::uint64_t checksum(std::uint64_t h, std::span<const std::byte> bytes) {
  constexpr std::uint64_t kPrime = 0x00000100000001b3;
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = (h ^ w) * kPrime;
  }
  for (; i < bytes.size(); ++i) h = (h ^ std::to_integer<std::uint64_t>(bytes[i])) * kPrime;
  return h;
}

// Folds one frame's checksum into the checksum of a whole stream.
inline std::uint64_t add_to_stream(std::uint64_t stream, std::uint64_t frame_checksum) {
  return checksum(stream, std::as_bytes(std::span(&frame_checksum, 1)));
}

// Renders frame `sequence` into `out` (at least frame_size(width, height)
// bytes) and fills in its header. Returns the header.
inline FrameHeader render_frame(std::span<std::byte> out, std::uint64_t sequence,
                                std::uint32_t width, std::uint32_t height) {
  FrameHeader h;
  h.width = width;
  h.height = height;
  h.sequence = sequence;
  h.image_size = std::uint64_t{width} * height * 2;
  auto* image = reinterpret_cast<std::uint8_t*>(out.data() + sizeof(FrameHeader));

  // A 64x64 box bouncing between the edges, two pixels per frame.
  const std::uint32_t box = 64;
  const auto bounce = [](std::uint64_t t, std::uint32_t span) -> std::uint32_t {
    if (span == 0) return 0;
    const std::uint64_t period = 2 * std::uint64_t{span};
    const std::uint64_t p = t % period;
    return static_cast<std::uint32_t>(p < span ? p : period - p);
  };
  const std::uint32_t bx = bounce(sequence * 2, width > box ? width - box : 0);
  const std::uint32_t by = bounce(sequence * 3, height > box ? height - box : 0);
  const auto shift = static_cast<std::uint32_t>(sequence * 4);

  for (std::uint32_t y = 0; y < height; ++y) {
    std::uint8_t* row = image + std::size_t{y} * width * 2;
    const bool box_rows = y >= by && y < by + box;
    const auto u = static_cast<std::uint8_t>(128 + (y >> 2));
    const auto v = static_cast<std::uint8_t>(128 - (y >> 3));
    for (std::uint32_t x = 0; x < width; x += 2) {
      // Luma: a diagonal gradient scrolling right; the box is near white.
      const bool in_box = box_rows && x >= bx && x < bx + box;
      const auto y0 = static_cast<std::uint8_t>(in_box ? 235 : ((x + y + shift) & 0xff));
      const auto y1 = static_cast<std::uint8_t>(in_box ? 235 : ((x + 1 + y + shift) & 0xff));
      std::uint8_t* px = row + std::size_t{x} * 2;
      px[0] = y0;
      px[1] = u;
      px[2] = y1;
      px[3] = v;
    }
  }
  h.checksum = checksum(kChecksumSeed, out.subspan(sizeof(FrameHeader), h.image_size));
  h.capture_ns = monotonic_ns();
  std::memcpy(out.data(), &h, sizeof h);
  return h;
}

// Checks a received frame. Returns nullptr when it is the frame expected
// next and intact, otherwise what is wrong; `h` gets the header either way
// (as far as there is one).
inline const char* check_frame(std::span<const std::byte> in, std::uint64_t expected_sequence,
                               FrameHeader& h, std::uint64_t& image_checksum) {
  if (in.size() < sizeof(FrameHeader)) return "shorter than a frame header";
  std::memcpy(&h, in.data(), sizeof h);
  if (h.magic != kFrameMagic) return "not a frame (bad magic)";
  if (h.sequence != expected_sequence) return "out of sequence (lost, repeated or reordered)";
  if (h.image_size != std::uint64_t{h.width} * h.height * 2 ||
      h.image_size != in.size() - sizeof(FrameHeader)) {
    return "image size disagrees with the geometry or the received length";
  }
  image_checksum = checksum(kChecksumSeed, in.subspan(sizeof(FrameHeader)));
  if (image_checksum != h.checksum) return "image checksum mismatch (damaged)";
  return nullptr;
}

// One line of "what moved": buffers, bytes, seconds, GB/s, checksum.
inline void print_summary(const char* who, std::uint64_t frames, std::uint64_t bytes,
                          double seconds, std::uint64_t stream_checksum) {
  const double gbps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
  std::printf("%s: frames=%llu bytes=%llu seconds=%.3f GB/s=%.2f checksum=%016llx\n", who,
              static_cast<unsigned long long>(frames), static_cast<unsigned long long>(bytes),
              seconds, gbps, static_cast<unsigned long long>(stream_checksum));
  std::fflush(stdout);
}

}  // namespace fbuf_examples
