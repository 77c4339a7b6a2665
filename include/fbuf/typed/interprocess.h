// fbuf::typed, Boost.Interprocess: containers (vectors, strings, flat maps of
// them) built in place in a pool buffer by its owner, sent as a plain
// buffer, and read in place by receivers through their read-only mapping.
// Header-only; needs Boost's headers (libboost-dev), nothing else.
//
// Layout of the buffer: an InPlaceHeader (64 bytes) naming the root object
// by its offset, then a boost::interprocess::managed_external_buffer over
// the rest, in which the root and everything it holds is allocated. Its
// pointers are offset_ptrs (relative to their own address), so the bytes
// mean the same at every mapping address.
//
// A receiver never touches the segment manager: its name index and
// allocator take a mutex that lives in the buffer, and locking writes. It
// finds the root through the header (read_in_place: magic, type tag, size,
// offset in bounds and aligned) and then reads only through InPlaceBounds,
// whose accessors read a container's pointer and size once, check that
// every byte they name lies inside the received bytes, and hand out a
// span or string_view over them. Nothing there allocates, locks or writes.
// Node-based containers (map, list) cannot be read this way: their
// iterators follow pointers no one checked. docs/api.md, "Typed messages".
#pragma once

#include <boost/core/pointer_traits.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/flat_map.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/sender.h"
#include "fbuf/typed/stats.h"

namespace fbuf::typed {

using Segment = boost::interprocess::managed_external_buffer;
template <class T>
using Allocator = boost::interprocess::allocator<T, Segment::segment_manager>;
template <class T>
using Vector = boost::interprocess::vector<T, Allocator<T>>;
using String = boost::interprocess::basic_string<char, std::char_traits<char>, Allocator<char>>;
template <class K, class V>
using FlatMap = boost::interprocess::flat_map<K, V, std::less<K>, Allocator<std::pair<K, V>>>;

// The first bytes of a buffer built in place. Plain words, copied out by
// the receiver before it looks at them.
struct InPlaceHeader {
  std::uint64_t magic;        // kInPlaceMagic
  std::uint64_t type_tag;     // the application's name for the root's type
  std::uint64_t root_offset;  // from the buffer's first byte
  std::uint64_t root_size;    // sizeof the root's type
  std::uint64_t reserved[4];  // zero
};
inline constexpr std::uint64_t kInPlaceMagic = 0x3150'4946'5542'4600ull;  // "\0FBUFIP1"
inline constexpr std::size_t kInPlaceHeaderSize = 64;
static_assert(sizeof(InPlaceHeader) == kInPlaceHeaderSize);

// Builds one message in a Buffer. Owner side only; not thread-safe.
// Allocation in the segment throws boost::interprocess::bad_alloc when the
// buffer is full (std::length_error for a container larger than all of it). The segment handle's destructor writes nothing, and the
// root is never destroyed: its memory goes back to the pool with the
// buffer, so types built here must own nothing outside the segment.
class InPlaceBuilder {
 public:
  // Lays the header and the segment over the first `length` bytes of
  // `buffer` (its capacity when 0). Throws Error (kInvalidArgument) when
  // that is more than the capacity or too small for a segment.
  explicit InPlaceBuilder(Buffer buffer, std::size_t length = 0) : buffer_(std::move(buffer)) {
    length_ = length == 0 ? buffer_.capacity() : length;
    if (!buffer_ || length_ > buffer_.capacity() ||
        length_ < kInPlaceHeaderSize + Segment::segment_manager::get_min_size())
      throw Error(make_error_code(Errc::kInvalidArgument), "InPlaceBuilder: buffer too small");
    write_header(0, 0, 0);
    segment_ = Segment(boost::interprocess::create_only, buffer_.data() + kInPlaceHeaderSize,
                       length_ - kInPlaceHeaderSize);
  }

  // What the containers' allocators are made from.
  Segment::segment_manager* segment_manager() noexcept { return segment_.get_segment_manager(); }

  // Constructs the root (once) from `args` and records it in the header
  // with `type_tag`, which a receiver must name to read it.
  template <class T, class... Args>
  T& construct_root(std::uint64_t type_tag, Args&&... args) {
    T* root = segment_.construct<T>(boost::interprocess::anonymous_instance)(
        std::forward<Args>(args)...);
    write_header(type_tag, static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(root) - buffer_.data()),
                 sizeof(T));
    return *root;
  }

  // Sends the header and segment as one buffer (Sender::send). On success
  // the buffer is consumed and the builder must not be used again; on
  // failure it is left here, unchanged.
  std::error_code send(Sender& tx, std::chrono::nanoseconds timeout) noexcept {
    return tx.send(std::move(buffer_), length_, timeout);
  }
  // Hands the buffer over (to send it another way); `length()` bytes.
  Buffer release() && noexcept { return std::move(buffer_); }
  std::size_t length() const noexcept { return length_; }

 private:
  void write_header(std::uint64_t tag, std::uint64_t offset, std::uint64_t size) noexcept {
    const InPlaceHeader h{kInPlaceMagic, tag, offset, size, {}};
    std::memcpy(buffer_.data(), &h, sizeof h);
  }
  Buffer buffer_;
  std::size_t length_ = 0;
  Segment segment_;
};

// The bytes a receiver's reads may touch: one received buffer. Every
// accessor takes an object that itself lies in these bytes (the root, or
// an element of a span an accessor returned), reads its pointer and size
// once, and fails with Errc::kBadDescriptor (counted in `stats`) unless
// all the bytes they name are inside and aligned.
class InPlaceBounds {
 public:
  InPlaceBounds() noexcept = default;
  explicit InPlaceBounds(std::span<const std::byte> bytes, TypedStats* stats = nullptr) noexcept
      : begin_(reinterpret_cast<std::uintptr_t>(bytes.data())), size_(bytes.size()), stats_(stats) {}

  template <class T>
  bool contains(const T* p, std::size_t n = 1) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return a >= begin_ && a - begin_ <= size_ && (size_ - (a - begin_)) / sizeof(T) >= n &&
           a % alignof(T) == 0;
  }

  template <class T, class A>
  Result<std::span<const T>> elements(const boost::container::vector<T, A>& v) const noexcept {
    const std::size_t n = v.size();
    const T* p = boost::to_address(v.data());
    return checked(p, n, "vector elements outside the buffer");
  }

  template <class A>
  Result<std::string_view> text(const boost::container::basic_string<char, std::char_traits<char>, A>& s) const noexcept {
    const std::size_t n = s.size();
    const char* p = s.data();
    auto r = checked(p, n, "string outside the buffer");
    if (!r) return r.error();
    return std::string_view(r->data(), r->size());
  }

  // A flat map's entries in key order, contiguous.
  template <class K, class V, class C, class A>
  Result<std::span<const std::pair<K, V>>> entries(const boost::container::flat_map<K, V, C, A>& m) const noexcept {
    const std::size_t n = m.size();
    const std::pair<K, V>* p = n == 0 ? nullptr : &*m.nth(0);
    return checked(p, n, "map entries outside the buffer");
  }

 private:
  template <class T>
  Result<std::span<const T>> checked(const T* p, std::size_t n, const char* why) const noexcept {
    if (n == 0) return std::span<const T>{};
    if (!contains(p, n)) {
      detail::count_rejection(stats_, why);
      return Errc::kBadDescriptor;
    }
    return std::span<const T>(p, n);
  }
  std::uintptr_t begin_ = 0;
  std::size_t size_ = 0;
  TypedStats* stats_ = nullptr;
};

// Finds the root of type T in `bytes` (a received buffer), checking the
// header: magic, `type_tag`, sizeof(T), the root inside and aligned.
// Errc::kBadDescriptor (counted in `stats`) otherwise.
template <class T>
Result<const T*> in_place_root(std::span<const std::byte> bytes, std::uint64_t type_tag,
                               TypedStats* stats = nullptr) noexcept {
  const char* why = nullptr;
  InPlaceHeader h{};
  if (bytes.size() < sizeof h) {
    why = "shorter than the in-place header";
  } else {
    std::memcpy(&h, bytes.data(), sizeof h);
    if (h.magic != kInPlaceMagic) why = "not an in-place message (magic)";
    else if (h.type_tag != type_tag) why = "root of another type (type tag)";
    else if (h.root_size != sizeof(T)) why = "root of another size";
    else if (h.root_offset < sizeof h || h.root_offset > bytes.size() ||
             bytes.size() - h.root_offset < sizeof(T))
      why = "root offset outside the buffer";
  }
  const T* root = why ? nullptr : reinterpret_cast<const T*>(bytes.data() + h.root_offset);
  if (root && !InPlaceBounds(bytes).contains(root)) why = "root offset misaligned";
  if (why) {
    detail::count_rejection(stats, why);
    return Errc::kBadDescriptor;
  }
  if (stats) ++stats->accepted;
  return root;
}

// A received message read in place: the View (which keeps the bytes
// mapped and lent), its checked root and its bounds.
template <class T>
class InPlace {
 public:
  InPlace(View view, const T* root, TypedStats* stats) noexcept
      : view_(std::move(view)), root_(root), bounds_(view_.bytes(), stats) {}
  const T& root() const noexcept { return *root_; }
  const InPlaceBounds& bounds() const noexcept { return bounds_; }
  const View& view() const noexcept { return view_; }
  View release() && noexcept { return std::move(view_); }

 private:
  View view_;
  const T* root_;
  InPlaceBounds bounds_;
};

// read_in_place(std::move(view), tag): in_place_root over the View's
// bytes. On failure the View is dropped (returned to its owner).
template <class T>
Result<InPlace<T>> read_in_place(View view, std::uint64_t type_tag, TypedStats* stats = nullptr) noexcept {
  auto root = in_place_root<T>(view.bytes(), type_tag, stats);
  if (!root) return root.error();
  return InPlace<T>(std::move(view), *root, stats);
}

}  // namespace fbuf::typed
