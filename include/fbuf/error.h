// Errors in fbuf come in three tiers (see docs/design.md):
//  - setup calls (create, listen, connect, map) throw fbuf::Error;
//  - hot-path calls (allocate, send, receive, release) are noexcept and
//    report through std::error_code or fbuf::Result<T>;
//  - bugs and API misuse abort through FBUF_ASSERT / FBUF_REQUIRE.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

namespace fbuf {

// Conditions reported by fbuf itself (as opposed to an errno).
enum class Errc {
  kOk = 0,
  kWouldBlock,      // try_*: no buffer free, ring full or ring empty
  kTimedOut,        // a timed call's deadline passed
  kPeerGone,        // the other end closed or died; nothing more will come
  kNoReceivers,     // send() with no receiver connected
  kInvalidArgument, // a caller's argument is out of range (size, length)
  kBadDescriptor,   // a descriptor from a peer failed validation
  kVersionMismatch, // handshake versions differ
  kProtocol,        // a malformed or unexpected control message
  kClosed,          // the local object was closed
  kTooLarge,        // no size class can hold the requested size
  kCorrupt,         // the peer corrupted the channel; reported once, then kPeerGone
  kCutOff,          // the sender cut this receiver off (slow-consumer policy)
  kMessage,         // receive(): the next item is a Message of several slices; use receive_message()
  kUnsupported,     // not supported: a View of this process's own pool in a Message sent on
};

// A timeout that never expires: every timed call accepts it (deadlines
// saturate instead of overflowing).
inline constexpr std::chrono::nanoseconds kForever = std::chrono::nanoseconds::max();

const std::error_category& fbuf_category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

// Thrown by setup calls. what() carries the context, e.g.
// "memfd_create(pool 'frames'): Too many open files".
class Error : public std::system_error {
 public:
  Error(std::error_code ec, const std::string& context) : std::system_error(ec, context) {}
};

namespace detail {
[[noreturn]] void result_misuse(const std::error_code& ec) noexcept;
}

// The outcome of a hot-path call that produces a value: either a T or an
// error code. Never throws; reading the value of an error result aborts
// with a message naming the error.
template <class T>
class Result {
 public:
  Result(T value) noexcept : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(std::error_code ec) noexcept : ec_(ec) {}        // NOLINT
  Result(Errc e) noexcept : ec_(make_error_code(e)) {}    // NOLINT

  explicit operator bool() const noexcept { return value_.has_value(); }
  bool ok() const noexcept { return value_.has_value(); }
  std::error_code error() const noexcept { return ec_; }

  T& operator*() & noexcept { return checked(); }
  T&& operator*() && noexcept { return std::move(checked()); }
  T* operator->() noexcept { return &checked(); }
  const T* operator->() const noexcept { return &const_cast<Result*>(this)->checked(); }

 private:
  T& checked() noexcept {
    if (!value_) detail::result_misuse(ec_);
    return *value_;
  }

  std::optional<T> value_;
  std::error_code ec_;
};

}  // namespace fbuf

template <>
struct std::is_error_code_enum<fbuf::Errc> : std::true_type {};
