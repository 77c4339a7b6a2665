// fbuf::typed::InPlaceBuilder and the container types: Boost.Interprocess
// containers built in place in a pool buffer (the sending side of
// <fbuf/typed/interprocess.h>, which says more).
#pragma once

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
#include <system_error>
#include <utility>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/sender.h"

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
// buffer is full (std::length_error for a container larger than all of
// it). The segment handle's destructor writes nothing, and the root is
// never destroyed: its memory goes back to the pool with the buffer, so
// types built here must own nothing outside the segment.
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

}  // namespace fbuf::typed
