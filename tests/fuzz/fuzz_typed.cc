// libFuzzer target for the typed readers (include/fbuf/typed/): arbitrary
// bytes as a sender could put them into pool buffers.
//
// First byte even: a Cap'n Proto message. The second byte gives the number
// of segments (1 + its low two bits) and how each slice starts in its
// buffer (bit 2 + i set: 8 bytes in, or 4 if bit 6 is set too); then each
// segment is a u16 length (mod 2048; the last takes all that remains) and
// its bytes. read_capnp() must refuse (kBadDescriptor, counted) or accept
// without reading outside them; an accepted message is read again through
// read(), every pointer followed, which must not fail, and each struct's
// data section and list's bytes must lie in the segments.
//
// First byte odd: an in-place Boost.Interprocess message of a
// FlatMap<String, Vector<float>> root: a u16 root offset, then the bytes
// after the 64-byte header (at most 4032), which the target writes.
// in_place_root() and the checked accessors must refuse, or hand out only
// ranges inside the bytes.
#include <capnp/any.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/typed/capnp.h"
#include "fbuf/typed/interprocess.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using Readings = fbuf::typed::FlatMap<fbuf::typed::String, fbuf::typed::Vector<float>>;
constexpr std::uint64_t kTag = 0x5245'4144'494e'4701ull;

fbuf::Pool& pool() {
  static fbuf::Pool p(fbuf::PoolOptions{.name = "fuzz-typed", .classes = {{65536, 8}}});
  return p;
}

struct Segments {
  std::vector<std::span<const std::byte>> spans;
  bool contains(const void* p, std::size_t n) const {
    if (n == 0) return true;
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    for (auto s : spans) {
      const auto lo = reinterpret_cast<std::uintptr_t>(s.data());
      if (a >= lo && a - lo <= s.size() && s.size() - (a - lo) >= n) return true;
    }
    return false;
  }
};

void walk(capnp::AnyPointer::Reader p, const Segments& segs);
void walk(capnp::AnyStruct::Reader s, const Segments& segs) {
  auto data = s.getDataSection();
  FUZZ_CHECK(segs.contains(data.begin(), data.size()));
  for (auto q : s.getPointerSection()) walk(q, segs);
}
void walk(capnp::AnyPointer::Reader p, const Segments& segs) {
  switch (p.getPointerType()) {
    case capnp::PointerType::STRUCT:
      walk(p.getAs<capnp::AnyStruct>(), segs);
      break;
    case capnp::PointerType::LIST: {
      auto list = p.getAs<capnp::AnyList>();
      if (list.getElementSize() == capnp::ElementSize::INLINE_COMPOSITE) {
        for (auto s : list.as<capnp::List<capnp::AnyStruct>>()) walk(s, segs);
      } else if (list.getElementSize() == capnp::ElementSize::POINTER) {
        for (auto q : list.as<capnp::List<capnp::AnyPointer>>()) walk(q, segs);
      } else {  // data only: its bytes
        auto raw = list.getRawBytes();
        FUZZ_CHECK(segs.contains(raw.begin(), raw.size()));
      }
      break;
    }
    default:
      break;
  }
}

void fuzz_capnp(fbuf::fuzz::Input& in) {
  const auto shape = in.take<std::uint8_t>();
  const std::size_t count = 1 + shape % 4;
  fbuf::Message message;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t offset = (shape >> (2 + i)) & 1 ? ((shape >> 6) & 1 ? 4 : 8) : 0;
    std::size_t length = in.take<std::uint16_t>() % 2048;
    if (i + 1 == count || length > in.remaining()) length = in.remaining();
    if (length > 60000) length = 60000;
    auto b = pool().try_allocate(offset + length + 8);
    FUZZ_CHECK(b);
    for (std::size_t k = 0; k < length; ++k) b->data()[offset + k] = std::byte{in.take<std::uint8_t>()};
    if (length == 0) return;  // a Message refuses empty slices
    FUZZ_CHECK(!message.append(std::move(*b), offset, length));
  }
  Segments segs;
  for (std::size_t i = 0; i < message.slice_count(); ++i) segs.spans.push_back(message.slice(i));
  fbuf::typed::TypedStats stats;
  auto m = fbuf::typed::read_capnp(std::move(message), {.traversalLimitInWords = 1 << 16, .nestingLimit = 32},
                                   &stats);
  if (!m) {
    FUZZ_CHECK(m.error() == fbuf::Errc::kBadDescriptor);
    FUZZ_CHECK(stats.rejected == 1);
    return;
  }
  FUZZ_CHECK(stats.accepted == 1);
  FUZZ_CHECK(m->segment_count() == segs.spans.size());
  for (std::size_t i = 0; i < m->segment_count(); ++i) FUZZ_CHECK(m->segment(i).data() == segs.spans[i].data());
  // This walk reads a subset of what the validating walk read, with the
  // same limits: on an accepted message it never fails.
  auto ec = m->read([&](fbuf::typed::CapnpMessage& r) { walk(r.root<capnp::AnyPointer>(), segs); }, &stats);
  FUZZ_CHECK(!ec);
}

void fuzz_in_place(fbuf::fuzz::Input& in) {
  auto b = pool().try_allocate(65536);
  FUZZ_CHECK(b);
  // Every input is a header that names a root at the offset it gives: the
  // bytes after it are the root and whatever it points at.
  fbuf::typed::InPlaceHeader h{fbuf::typed::kInPlaceMagic, kTag, in.take<std::uint16_t>() % 4096u, sizeof(Readings),
                               {}};
  const std::size_t length = sizeof h + (in.remaining() < 4096 - sizeof h ? in.remaining() : 4096 - sizeof h);
  std::memcpy(b->data(), &h, sizeof h);
  for (std::size_t k = sizeof h; k < length; ++k) b->data()[k] = std::byte{in.take<std::uint8_t>()};
  const std::span<const std::byte> bytes(b->data(), length);
  fbuf::typed::TypedStats stats;
  auto root = fbuf::typed::in_place_root<Readings>(bytes, kTag, &stats);
  if (!root) return;
  const Segments segs{{bytes}};
  FUZZ_CHECK(segs.contains(*root, sizeof(Readings)));
  fbuf::typed::InPlaceBounds bounds(bytes, &stats);
  auto entries = bounds.entries(**root);
  if (!entries) return;
  FUZZ_CHECK(segs.contains(entries->data(), entries->size_bytes()));
  for (const auto& [key, values] : *entries) {
    if (auto t = bounds.text(key)) FUZZ_CHECK(segs.contains(t->data(), t->size()));
    if (auto v = bounds.elements(values)) {
      FUZZ_CHECK(segs.contains(v->data(), v->size_bytes()));
      float sum = 0;
      for (float f : *v) sum += f;
      (void)sum;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fbuf::fuzz::Input in(data, size);
  if (in.take<std::uint8_t>() % 2 == 0) {
    fuzz_capnp(in);
  } else {
    fuzz_in_place(in);
  }
  return 0;
}
