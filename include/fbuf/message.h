// fbuf::Message: an aggregate, a message made of several slices, each a
// whole Buffer or View or a byte range of one, from one pool or several.
// It is sent and received as one unit (Sender::send(Message&&),
// Receiver::receive_message()): a receiver gets every slice or none.
//
// Ownership: a slice holds its Buffer or View through a reference-counted
// holder. A split that cuts through a slice leaves both halves holding the
// same Buffer or View; it goes back to its pool (a Buffer, unsent) or to
// its owner (a View) when the last slice naming it is gone. A Buffer is
// writable (writable_slice()) until it is sent; a message can be sent only
// while it alone holds each of its Buffers, once (join the halves back, or
// drop the other half, first): anything else is kInvalidArgument.
//
// Not thread-safe: one thread builds, sends or reads a Message at a time.
// Building allocates (one small block per slice); reading does not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "fbuf/buffer.h"
#include "fbuf/error.h"

struct iovec;

namespace fbuf {

namespace detail {
struct SliceHolder;
struct MessageAccess;
}  // namespace detail

class Message {
 public:
  // Protocol limits: a message has at most kMaxSlices slices and at most
  // kMaxBytes bytes in all. Building past either is kInvalidArgument, and
  // a receiver rejects a message from a peer that exceeds them.
  static constexpr std::size_t kMaxSlices = 64;
  static constexpr std::uint64_t kMaxBytes = 0xFFFFFFFFu;

  Message() noexcept;
  ~Message();
  Message(Message&& o) noexcept;
  Message& operator=(Message&& o) noexcept;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  // Adds a slice at the end (append) or at the front (prepend): bytes
  // [offset, offset + length) of `b` (the first `length` bytes, without an
  // offset), or of `v` (the whole View, without a range). On success the
  // handle is consumed; on failure it is left with the caller:
  // kInvalidArgument (an empty handle, a range outside it, or a message
  // past kMaxSlices / kMaxBytes), ENOMEM.
  std::error_code append(Buffer&& b, std::size_t length) noexcept { return append(std::move(b), 0, length); }
  std::error_code append(Buffer&& b, std::size_t offset, std::size_t length) noexcept;
  std::error_code append(View&& v) noexcept;
  std::error_code append(View&& v, std::size_t offset, std::size_t length) noexcept;
  std::error_code prepend(Buffer&& b, std::size_t length) noexcept { return prepend(std::move(b), 0, length); }
  std::error_code prepend(Buffer&& b, std::size_t offset, std::size_t length) noexcept;
  std::error_code prepend(View&& v) noexcept;
  std::error_code prepend(View&& v, std::size_t offset, std::size_t length) noexcept;

  // Join: moves every slice of `other` to the end (append) or the front
  // (prepend) of this message; `other` is left empty. Two slices that meet
  // end to end over the same Buffer or View become one again. On failure
  // (the limits, ENOMEM) both messages are unchanged.
  std::error_code append(Message&& other) noexcept;
  std::error_code prepend(Message&& other) noexcept;

  // Keeps bytes [0, at) and returns bytes [at, size()) as a new message;
  // a slice cut in two is shared by both (see above). at == 0 moves
  // everything to the result, at == size() returns an empty message.
  // kInvalidArgument if at > size(), ENOMEM; this message is then unchanged.
  Result<Message> split(std::size_t at) noexcept;
  // Keeps bytes [offset, offset + length) and drops the rest (slices left
  // with no byte are dropped). kInvalidArgument if the range is outside
  // the message, which is then unchanged.
  std::error_code clip(std::size_t offset, std::size_t length) noexcept;
  // Drops every slice.
  void clear() noexcept;

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return slices_.empty(); }
  std::size_t slice_count() const noexcept { return slices_.size(); }
  // The bytes of slice `i` (i < slice_count()), read in place.
  std::span<const std::byte> slice(std::size_t i) const noexcept {
    return {slices_[i].data, slices_[i].length};
  }
  // The bytes of slice `i` if it is a range of a Buffer not sent yet,
  // which the caller may write; empty for a View slice.
  std::span<std::byte> writable_slice(std::size_t i) const noexcept;

  // Fills out[0 .. slice_count()) with one iovec per slice (for writev,
  // sendmsg, vmsplice) and returns slice_count(); returns 0 and writes
  // nothing if max < slice_count(). The iovecs point into the message's
  // memory: valid while the message holds its slices.
  std::size_t iovecs(struct ::iovec* out, std::size_t max) const noexcept;
  // The explicit copy for callers that need contiguous bytes: copies
  // bytes [offset, offset + out.size()) of the message (fewer at its end)
  // into `out` and returns how many were copied. Everything else in this
  // class reads in place.
  std::size_t copy_to(std::span<std::byte> out, std::size_t offset = 0) const noexcept;

 private:
  friend struct detail::MessageAccess;

  struct Slice {
    std::shared_ptr<detail::SliceHolder> holder;
    const std::byte* data = nullptr;  // holder's bytes + offset
    std::size_t offset = 0;           // within the Buffer or View
    std::size_t length = 0;
  };
  // Checks a new slice of a handle (`handle`: not empty; `handle_size`:
  // its bytes) against the limits and makes room for it, so that nothing
  // can fail once the caller's handle moves into `holder`.
  std::error_code make_room(bool handle, std::size_t handle_size, std::size_t offset, std::size_t length,
                            std::shared_ptr<detail::SliceHolder>& holder) noexcept;
  std::error_code insert(std::shared_ptr<detail::SliceHolder> h, std::size_t offset, std::size_t length,
                         bool front) noexcept;

  std::vector<Slice> slices_;
  std::size_t size_ = 0;
};

}  // namespace fbuf
