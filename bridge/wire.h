// The bridge's wire header: the fixed 32 bytes that travel as the UCX
// active-message header of every message between an exporter and an
// importer (docs/design.md, "The bridge"). Private to the bridge library.
//
// Everything here reads bytes a remote peer chose: decode() copies them into
// a private Header and checks every field against what the receiving side
// expects; nothing else of the bridge looks at a peer's header bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace fbuf::bridge {

// "FBBR" little-endian; the version changes with any change of layout or
// meaning.
inline constexpr std::uint32_t kMagic = 0x52424246;
inline constexpr std::uint16_t kVersion = 1;

// UCX active-message ids: one for each direction.
inline constexpr unsigned kToExporter = 0x4642;  // Hello, Credit
inline constexpr unsigned kToImporter = 0x4643;  // Data, End

enum class Kind : std::uint16_t {
  kHello = 1,   // importer -> exporter: credits, max length; data: the service name
  kCredit = 2,  // importer -> exporter: more credits
  kData = 3,    // exporter -> importer: one buffer; data: its bytes
  kEnd = 4,     // exporter -> importer: the local stream ended; nothing follows
};

// Laid out in little-endian order, no padding.
struct Header {
  std::uint32_t magic = fbuf::bridge::kMagic;
  std::uint16_t version = fbuf::bridge::kVersion;
  std::uint16_t kind = 0;
  std::uint64_t sequence = 0;  // kData: 0, 1, 2, ... per connection
  std::uint64_t length = 0;    // kData: bytes of data; kHello: the largest the importer takes
  std::uint32_t credits = 0;   // kHello, kCredit: buffers granted
  std::uint32_t flags = 0;     // none defined: must be 0
};
inline constexpr std::size_t kHeaderSize = 32;
static_assert(sizeof(Header) == kHeaderSize);

// A longest service name (the same bound as a local service name).
inline constexpr std::size_t kMaxServiceName = 96;
// The most credits an importer may have outstanding: bounds the exporter's
// in-flight table.
inline constexpr std::uint32_t kMaxCredits = 1u << 16;

// Why a header was refused.
enum class Reject : std::uint8_t {
  kNone = 0,
  kSize,          // the AM header is not exactly kHeaderSize bytes
  kBadMagic,
  kBadVersion,
  kKind,          // unknown, or not one this side receives
  kFlags,
  kSequence,      // kData out of order
  kLength,        // kData: length disagrees with the data, or exceeds the largest buffer
  kCredits,       // kData without a credit; a grant over kMaxCredits
  kHelloTwice,    // a second Hello, or a Credit before the Hello
  kName,          // the Hello's service name is empty, too long or not the one exported
};
const char* to_string(Reject r) noexcept;

// What the importer expects of the next message from its exporter.
struct ImporterExpect {
  std::uint64_t sequence = 0;    // the next kData's sequence number
  std::uint64_t max_length = 0;  // the importer's buffer size
  std::uint32_t credits = 0;     // credits granted and not yet used
};

// What the exporter expects of the next message from its importer.
struct ExporterExpect {
  bool hello_seen = false;
  std::uint32_t credits = 0;  // credits it holds now
};

// Copies and checks a header arriving at an importer, whose data part is
// `data_length` bytes. On kNone, `out` holds the copy.
Reject decode_at_importer(std::span<const std::byte> header, std::size_t data_length,
                          const ImporterExpect& expect, Header& out) noexcept;
// Copies and checks a header arriving at an exporter.
Reject decode_at_exporter(std::span<const std::byte> header, std::size_t data_length,
                          const ExporterExpect& expect, Header& out) noexcept;

}  // namespace fbuf::bridge
