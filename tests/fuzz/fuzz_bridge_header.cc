// libFuzzer target for the bridge's wire header decoder (bridge/wire.h):
// what an importer and an exporter do with the 32-byte header a remote
// peer chose. Both decoders are compared against a reference written the
// slow, obvious way, over a sequence of messages that carries the
// expectations (sequence, credits, Hello seen) from one to the next.
//
// Input: records of one byte (bits 0-5: the header length 0..63; bit 6: to
// the importer or the exporter), four bytes of data length, then the header
// bytes, until the input ends.
#include <cstdint>
#include <cstring>
#include <vector>

#include "bridge/wire.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using fbuf::bridge::ExporterExpect;
using fbuf::bridge::Header;
using fbuf::bridge::ImporterExpect;
using fbuf::bridge::Kind;
using fbuf::bridge::Reject;

bool reference_importer_ok(const std::uint8_t* h, std::size_t n, std::size_t data, const ImporterExpect& e) {
  if (n != 32) return false;
  auto u32 = [&](int at) { std::uint32_t v; std::memcpy(&v, h + at, 4); return v; };
  auto u16 = [&](int at) { std::uint16_t v; std::memcpy(&v, h + at, 2); return v; };
  auto u64 = [&](int at) { std::uint64_t v; std::memcpy(&v, h + at, 8); return v; };
  if (u32(0) != fbuf::bridge::kMagic || u16(4) != fbuf::bridge::kVersion || u32(28) != 0) return false;
  const std::uint16_t kind = u16(6);
  if (kind == 3) {
    return u32(24) == 0 && e.credits > 0 && u64(8) == e.sequence && u64(16) == data && data <= e.max_length;
  }
  if (kind == 4) return u64(8) == e.sequence && u64(16) == 0 && data == 0 && u32(24) == 0;
  return false;
}

bool reference_exporter_ok(const std::uint8_t* h, std::size_t n, std::size_t data, const ExporterExpect& e) {
  if (n != 32) return false;
  auto u32 = [&](int at) { std::uint32_t v; std::memcpy(&v, h + at, 4); return v; };
  auto u16 = [&](int at) { std::uint16_t v; std::memcpy(&v, h + at, 2); return v; };
  auto u64 = [&](int at) { std::uint64_t v; std::memcpy(&v, h + at, 8); return v; };
  if (u32(0) != fbuf::bridge::kMagic || u16(4) != fbuf::bridge::kVersion || u32(28) != 0) return false;
  const std::uint16_t kind = u16(6);
  const std::uint64_t credits = u32(24);
  if (kind == 1) {
    return !e.hello_seen && u64(8) == 0 && data >= 1 && data <= 96 && u64(16) != 0 &&
           credits <= fbuf::bridge::kMaxCredits;
  }
  if (kind == 2) {
    return e.hello_seen && u64(8) == 0 && u64(16) == 0 && data == 0 && credits >= 1 &&
           credits + e.credits <= fbuf::bridge::kMaxCredits;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fbuf::fuzz::Input in(data, size);
  ImporterExpect im{.sequence = 0, .max_length = 1 << 20, .credits = 8};
  ExporterExpect ex;
  std::vector<std::uint8_t> bytes;
  while (!in.empty()) {
    const auto op = in.take<std::uint8_t>();
    const std::size_t length = op & 0x3f;
    const std::size_t data_length = in.take<std::uint32_t>() % (1u << 21);
    bytes.assign(length, 0);
    for (auto& b : bytes) b = in.take<std::uint8_t>();
    Header h;
    const auto span = std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
    if ((op & 0x40) == 0) {
      const Reject r = fbuf::bridge::decode_at_importer(span, data_length, im, h);
      FUZZ_CHECK((r == Reject::kNone) == reference_importer_ok(bytes.data(), length, data_length, im));
      if (r != Reject::kNone) continue;
      FUZZ_CHECK(std::memcmp(&h, bytes.data(), 32) == 0);
      ++im.sequence;
      if (static_cast<Kind>(h.kind) == Kind::kData) {
        FUZZ_CHECK(h.length <= im.max_length);
        --im.credits;
      }
      if (im.credits == 0) im.credits = 4;  // the importer grants more
    } else {
      const Reject r = fbuf::bridge::decode_at_exporter(span, data_length, ex, h);
      FUZZ_CHECK((r == Reject::kNone) == reference_exporter_ok(bytes.data(), length, data_length, ex));
      if (r != Reject::kNone) continue;
      ex.hello_seen = true;
      ex.credits += h.credits;
      FUZZ_CHECK(ex.credits <= fbuf::bridge::kMaxCredits);
      if (ex.credits > 1000) ex.credits = 0;  // the exporter spent them
    }
  }
  return 0;
}
