// fbuf::Message: building, splitting and reading aggregates. Nothing here
// knows about channels; the send and receive paths reach the slices
// through MessageAccess (fbuf/buffers/slice_holder.h).
#include "fbuf/message.h"

#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "fbuf/base/limits.h"
#include "fbuf/buffers/slice_holder.h"

namespace fbuf {

static_assert(Message::kMaxSlices == detail::kMaxMessageSlices);
static_assert(Message::kMaxBytes == detail::kMaxMessageBytes);

namespace {

std::error_code no_memory() noexcept { return std::make_error_code(std::errc::not_enough_memory); }

bool range_ok(std::size_t size, std::size_t offset, std::size_t length) noexcept {
  return offset <= size && length <= size - offset;
}

}  // namespace

Message::Message() noexcept = default;
Message::~Message() = default;
Message::Message(Message&& o) noexcept : slices_(std::move(o.slices_)), size_(o.size_) {
  o.slices_.clear();
  o.size_ = 0;
}
Message& Message::operator=(Message&& o) noexcept {
  if (this != &o) {
    slices_ = std::move(o.slices_);
    size_ = o.size_;
    o.slices_.clear();
    o.size_ = 0;
  }
  return *this;
}

void Message::clear() noexcept {
  slices_.clear();
  size_ = 0;
}

std::error_code Message::insert(std::shared_ptr<detail::SliceHolder> h, std::size_t offset, std::size_t length,
                                bool front) noexcept {
  // Both checked by the callers before the handle moved into `h`.
  Slice s{std::move(h), nullptr, offset, length};
  s.data = s.holder->data() + offset;
  if (front) {
    slices_.insert(slices_.begin(), std::move(s));  // capacity reserved: cannot throw
  } else {
    slices_.push_back(std::move(s));
  }
  size_ += length;
  return {};
}

std::error_code Message::make_room(bool handle, std::size_t handle_size, std::size_t offset, std::size_t length,
                                   std::shared_ptr<detail::SliceHolder>& holder) noexcept {
  if (!handle || !range_ok(handle_size, offset, length)) return Errc::kInvalidArgument;
  if (slices_.size() >= kMaxSlices || std::uint64_t{size_} + length > kMaxBytes) return Errc::kInvalidArgument;
  try {
    slices_.reserve(std::max<std::size_t>(slices_.size() + 1, 4));
    holder = std::make_shared<detail::SliceHolder>();
  } catch (const std::bad_alloc&) {
    return no_memory();
  }
  return {};
}

std::error_code Message::append(Buffer&& b, std::size_t offset, std::size_t length) noexcept {
  std::shared_ptr<detail::SliceHolder> h;
  if (auto ec = make_room(static_cast<bool>(b), b.capacity(), offset, length, h)) return ec;
  h->buffer = std::move(b);
  return insert(std::move(h), offset, length, false);
}
std::error_code Message::prepend(Buffer&& b, std::size_t offset, std::size_t length) noexcept {
  std::shared_ptr<detail::SliceHolder> h;
  if (auto ec = make_room(static_cast<bool>(b), b.capacity(), offset, length, h)) return ec;
  h->buffer = std::move(b);
  return insert(std::move(h), offset, length, true);
}
std::error_code Message::append(View&& v) noexcept { return append(std::move(v), 0, v.size()); }
std::error_code Message::append(View&& v, std::size_t offset, std::size_t length) noexcept {
  std::shared_ptr<detail::SliceHolder> h;
  if (auto ec = make_room(static_cast<bool>(v), v.size(), offset, length, h)) return ec;
  h->view = std::move(v);
  return insert(std::move(h), offset, length, false);
}
std::error_code Message::prepend(View&& v) noexcept { return prepend(std::move(v), 0, v.size()); }
std::error_code Message::prepend(View&& v, std::size_t offset, std::size_t length) noexcept {
  std::shared_ptr<detail::SliceHolder> h;
  if (auto ec = make_room(static_cast<bool>(v), v.size(), offset, length, h)) return ec;
  h->view = std::move(v);
  return insert(std::move(h), offset, length, true);
}

std::error_code Message::append(Message&& other) noexcept {
  if (&other == this) return Errc::kInvalidArgument;
  if (other.slices_.empty()) return {};
  if (slices_.empty()) {
    *this = std::move(other);
    return {};
  }
  // Two slices that meet end to end over the same handle become one.
  const Slice& last = slices_.back();
  const Slice& next = other.slices_.front();
  const bool merge = last.holder == next.holder && last.offset + last.length == next.offset;
  const std::size_t count = slices_.size() + other.slices_.size() - (merge ? 1 : 0);
  if (count > kMaxSlices || std::uint64_t{size_} + other.size_ > kMaxBytes) return Errc::kInvalidArgument;
  try {
    slices_.reserve(count);
  } catch (const std::bad_alloc&) {
    return no_memory();
  }
  auto first = other.slices_.begin();
  if (merge) {
    slices_.back().length += first->length;
    ++first;
  }
  std::move(first, other.slices_.end(), std::back_inserter(slices_));
  size_ += other.size_;
  other.clear();
  return {};
}

std::error_code Message::prepend(Message&& other) noexcept {
  if (&other == this) return Errc::kInvalidArgument;
  if (auto ec = other.append(std::move(*this)); ec) return ec;
  *this = std::move(other);
  return {};
}

Result<Message> Message::split(std::size_t at) noexcept {
  if (at > size_) return Errc::kInvalidArgument;
  // The slice in which byte `at` falls (cut), or the first slice at or
  // after `at` (a boundary). Zero-length slices before `at` stay in front.
  std::size_t i = 0, start = 0;
  while (i < slices_.size() && start + slices_[i].length <= at) {
    start += slices_[i].length;
    ++i;
  }
  const bool cut = i < slices_.size() && start < at;
  Message rest;
  try {
    rest.slices_.reserve(std::max<std::size_t>(slices_.size() - i, 1));
  } catch (const std::bad_alloc&) {
    return no_memory();
  }
  if (cut) {
    // Both halves hold the slice's Buffer or View.
    Slice& s = slices_[i];
    const std::size_t keep = at - start;
    rest.slices_.push_back(Slice{s.holder, s.data + keep, s.offset + keep, s.length - keep});
    s.length = keep;
    ++i;
  }
  std::move(slices_.begin() + static_cast<std::ptrdiff_t>(i), slices_.end(), std::back_inserter(rest.slices_));
  slices_.erase(slices_.begin() + static_cast<std::ptrdiff_t>(i), slices_.end());
  rest.size_ = size_ - at;
  size_ = at;
  return rest;
}

std::error_code Message::clip(std::size_t offset, std::size_t length) noexcept {
  if (!range_ok(size_, offset, length)) return Errc::kInvalidArgument;
  const std::size_t end = offset + length;
  std::size_t start = 0, out = 0;
  for (std::size_t i = 0; i < slices_.size(); ++i) {
    Slice& s = slices_[i];
    const std::size_t s_end = start + s.length;
    const std::size_t from = std::max(start, offset), to = std::min(s_end, end);
    start = s_end;
    if (from >= to) continue;  // no byte of it is kept
    const std::size_t skip = from - (s_end - s.length);
    s.data += skip;
    s.offset += skip;
    s.length = to - from;
    if (out != i) slices_[out] = std::move(s);
    ++out;
  }
  slices_.erase(slices_.begin() + static_cast<std::ptrdiff_t>(out), slices_.end());
  size_ = length;
  return {};
}

std::span<std::byte> Message::writable_slice(std::size_t i) const noexcept {
  const Slice& s = slices_[i];
  if (!s.holder->buffer) return {};
  return {s.holder->buffer.data() + s.offset, s.length};
}

std::size_t Message::iovecs(struct ::iovec* out, std::size_t max) const noexcept {
  if (max < slices_.size()) return 0;
  for (std::size_t i = 0; i < slices_.size(); ++i) {
    // writev and sendmsg only read through iov_base; the cast is the
    // POSIX signature's.
    out[i].iov_base = const_cast<std::byte*>(slices_[i].data);
    out[i].iov_len = slices_[i].length;
  }
  return slices_.size();
}

std::size_t Message::copy_to(std::span<std::byte> out, std::size_t offset) const noexcept {
  std::size_t copied = 0, start = 0;
  for (const Slice& s : slices_) {
    if (copied == out.size()) break;
    const std::size_t s_end = start + s.length;
    if (s_end > offset) {
      const std::size_t from = std::max(offset, start) - start;
      const std::size_t n = std::min(s.length - from, out.size() - copied);
      if (n != 0) std::memcpy(out.data() + copied, s.data + from, n);
      copied += n;
    }
    start = s_end;
  }
  return copied;
}

namespace detail {

std::error_code MessageAccess::adopt(Message& m, std::span<View> views) noexcept {
  std::shared_ptr<SliceHolder> holders[Message::kMaxSlices];
  if (views.size() > Message::kMaxSlices) return Errc::kInvalidArgument;
  try {
    m.slices_.reserve(views.size());
    for (std::size_t i = 0; i < views.size(); ++i) holders[i] = std::make_shared<SliceHolder>();
  } catch (const std::bad_alloc&) {
    return no_memory();
  }
  for (std::size_t i = 0; i < views.size(); ++i) {
    const std::size_t length = views[i].size();
    holders[i]->view = std::move(views[i]);
    (void)m.insert(std::move(holders[i]), 0, length, false);
  }
  return {};
}

}  // namespace detail
}  // namespace fbuf
