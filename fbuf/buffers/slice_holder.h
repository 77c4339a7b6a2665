// What a Message's slices hold (include/fbuf/message.h), and the library's
// access to a Message's slices for the send and receive paths. Private to
// the library.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <system_error>

#include "fbuf/buffer.h"
#include "fbuf/message.h"

namespace fbuf::detail {

// Exactly one of the two handles is set. Shared by every slice that names
// the same Buffer or View (after a split); the handle goes back when the
// last of them is dropped.
struct SliceHolder {
  Buffer buffer;
  View view;

  const std::byte* data() const noexcept { return buffer ? buffer.data() : view.data(); }
  std::size_t size() const noexcept { return buffer ? buffer.capacity() : view.size(); }
};

struct MessageAccess {
  using Slice = Message::Slice;
  static std::span<const Slice> slices(const Message& m) noexcept { return m.slices_; }
  // After a send: the Buffers were handed to the receivers (their handles
  // are empty now); the message lets go of its holders.
  static void forget(Message& m) noexcept { m.clear(); }
  // A message of `n` received Views (n <= Message::kMaxSlices), each taken
  // whole. All or nothing: on failure (ENOMEM) the Views stay in `views`.
  static std::error_code adopt(Message& m, std::span<View> views) noexcept;
};

}  // namespace fbuf::detail
