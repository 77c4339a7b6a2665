// fbuf::typed::read_in_place and InPlaceBounds: Boost.Interprocess
// containers read in place, every pointer bounded by the received buffer
// (the receiving side of <fbuf/typed/interprocess.h>, which says more).
#pragma once

#include <boost/core/pointer_traits.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/typed/in_place_builder.h"
#include "fbuf/typed/stats.h"

namespace fbuf::typed {

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
    // The entries' address by offset_ptr arithmetic alone: dereferencing
    // the iterator would bind a reference to an address not yet checked.
    const std::pair<K, V>* p = n == 0 ? nullptr : boost::to_address(m.nth(0).get_ptr());
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
