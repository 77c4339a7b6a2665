#include "message.h"

#include <cstring>

namespace fbuf::bench::peers {

namespace {

// Each cache line carries its word in its last 8 bytes, so line 0 holds
// the header (bytes 0..15) and its word without overlap.
constexpr std::size_t kWordOffset = kLine - sizeof(std::uint64_t);

}  // namespace

const char* to_string(Mode m) noexcept {
  switch (m) {
    case Mode::kTransport: return "transport";
    case Mode::kTouch: return "touch";
  }
  return "?";
}

void produce(std::byte* p, std::size_t size, std::uint64_t seq, std::uint64_t flags,
             Mode mode) noexcept {
  if (mode == Mode::kTouch) {
    for (std::size_t off = kWordOffset; off < size; off += kLine) {
      std::memcpy(p + off, &seq, sizeof(seq));
    }
  }
  const Header h{seq, flags};
  std::memcpy(p, &h, sizeof(h));
}

Consumed consume(const std::byte* p, std::size_t size, Mode mode) noexcept {
  Consumed c;
  std::memcpy(&c.header, p, sizeof(c.header));
  if (mode == Mode::kTransport) {
    c.data_ok = true;
    return c;
  }
  // Every line is read and compared; the OR keeps each read alive and
  // costs no more than summing them would.
  std::uint64_t diff = 0;
  for (std::size_t off = kWordOffset; off < size; off += kLine) {
    std::uint64_t word;
    std::memcpy(&word, p + off, sizeof(word));
    diff |= word ^ c.header.seq;
  }
  c.data_ok = diff == 0;
  return c;
}

}  // namespace fbuf::bench::peers
