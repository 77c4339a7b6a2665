#include "bridge/wire.h"

#include <bit>
#include <cstring>

namespace fbuf::bridge {

static_assert(std::endian::native == std::endian::little,
              "the wire header is little-endian and copied as is");

const char* to_string(Reject r) noexcept {
  switch (r) {
    case Reject::kNone: return "ok";
    case Reject::kSize: return "header size is not 32 bytes";
    case Reject::kBadMagic: return "bad magic";
    case Reject::kBadVersion: return "version mismatch";
    case Reject::kKind: return "unexpected message kind";
    case Reject::kFlags: return "unknown flags";
    case Reject::kSequence: return "sequence number out of order";
    case Reject::kLength: return "length disagrees with the data or exceeds the largest buffer";
    case Reject::kCredits: return "data without a credit, or too many credits";
    case Reject::kHelloTwice: return "Hello missing or repeated";
    case Reject::kName: return "service name empty, too long or not exported here";
  }
  return "unknown";
}

namespace {

// The one copy out of the peer's bytes, and the checks every message shares.
Reject copy_common(std::span<const std::byte> header, Header& out) noexcept {
  if (header.size() != kHeaderSize) return Reject::kSize;
  std::memcpy(&out, header.data(), kHeaderSize);
  if (out.magic != kMagic) return Reject::kBadMagic;
  if (out.version != kVersion) return Reject::kBadVersion;
  if (out.flags != 0) return Reject::kFlags;
  return Reject::kNone;
}

}  // namespace

Reject decode_at_importer(std::span<const std::byte> header, std::size_t data_length,
                          const ImporterExpect& expect, Header& out) noexcept {
  Header h;
  if (Reject r = copy_common(header, h); r != Reject::kNone) return r;
  switch (static_cast<Kind>(h.kind)) {
    case Kind::kData:
      if (h.credits != 0) return Reject::kCredits;
      if (expect.credits == 0) return Reject::kCredits;
      if (h.sequence != expect.sequence) return Reject::kSequence;
      if (h.length != data_length || h.length > expect.max_length) return Reject::kLength;
      break;
    case Kind::kEnd:
      if (h.sequence != expect.sequence) return Reject::kSequence;
      if (h.length != 0 || data_length != 0 || h.credits != 0) return Reject::kLength;
      break;
    default:
      return Reject::kKind;
  }
  out = h;
  return Reject::kNone;
}

Reject decode_at_exporter(std::span<const std::byte> header, std::size_t data_length,
                          const ExporterExpect& expect, Header& out) noexcept {
  Header h;
  if (Reject r = copy_common(header, h); r != Reject::kNone) return r;
  switch (static_cast<Kind>(h.kind)) {
    case Kind::kHello:
      if (expect.hello_seen) return Reject::kHelloTwice;
      if (h.sequence != 0) return Reject::kSequence;
      if (data_length == 0 || data_length > kMaxServiceName || h.length == 0) return Reject::kName;
      if (h.credits > kMaxCredits) return Reject::kCredits;
      break;
    case Kind::kCredit:
      if (!expect.hello_seen) return Reject::kHelloTwice;
      if (h.sequence != 0 || h.length != 0 || data_length != 0) return Reject::kLength;
      if (h.credits == 0 || h.credits > kMaxCredits - expect.credits) return Reject::kCredits;
      break;
    default:
      return Reject::kKind;
  }
  out = h;
  return Reject::kNone;
}

}  // namespace fbuf::bridge
