// fbuf::typed::read_capnp and CapnpMessage: a received Cap'n Proto message
// validated and read in place (the receiving side of <fbuf/typed/capnp.h>,
// which says more).
#pragma once

#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <new>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/receiver.h"
#include "fbuf/typed/capnp_builder.h"
#include "fbuf/typed/stats.h"

namespace fbuf::typed {

namespace detail {

inline void count_capnp_rejection(TypedStats* stats, const kj::Exception& e) noexcept {
  if (stats == nullptr) return;
  ++stats->rejected;
  std::snprintf(stats->last_reason_text, sizeof stats->last_reason_text, "%s",
                e.getDescription().cStr());
  stats->last_reason = stats->last_reason_text;
}

// Reads every pointer of the message once, through capnp's checked readers
// (each counted against the traversal limit, each struct against the
// nesting limit). Throws kj::Exception at the first thing it refuses.
inline void walk_capnp(capnp::AnyPointer::Reader p);
inline void walk_capnp(capnp::AnyStruct::Reader s) {
  for (auto q : s.getPointerSection()) walk_capnp(q);
}
inline void walk_capnp(capnp::AnyPointer::Reader p) {
  switch (p.getPointerType()) {
    case capnp::PointerType::NULL_:
      // A far pointer to a segment that is not there reads as null here;
      // reading it as a struct refuses it (a true null gives the default).
      p.getAs<capnp::AnyStruct>();
      return;
    case capnp::PointerType::STRUCT:
      walk_capnp(p.getAs<capnp::AnyStruct>());
      return;
    case capnp::PointerType::LIST: {
      auto list = p.getAs<capnp::AnyList>();
      if (list.getElementSize() == capnp::ElementSize::INLINE_COMPOSITE) {
        for (auto s : list.as<capnp::List<capnp::AnyStruct>>()) walk_capnp(s);
      } else if (list.getElementSize() == capnp::ElementSize::POINTER) {
        for (auto q : list.as<capnp::List<capnp::AnyPointer>>()) walk_capnp(q);
      }
      return;
    }
    case capnp::PointerType::CAPABILITY:
      throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                          kj::heapString("capability pointer in a message from a pool"));
  }
}

}  // namespace detail

namespace detail {
struct CapnpAccess;
}

// A received message, validated, read in place. Holds the received buffers
// (they stay mapped and lent until it is destroyed) and a capnp reader over
// them with the ReaderOptions it was validated with.
class CapnpMessage {
 public:
  // The root as `T` (a generated struct type). Reading can still throw
  // kj::Exception for what only the schema knows (a Text without its NUL, a
  // list read as a struct) or past the traversal limit; read() catches it.
  template <class T>
  typename T::Reader root() {
    return reader_->getRoot<T>();
  }
  capnp::MessageReader& reader() noexcept { return *reader_; }
  std::size_t segment_count() const noexcept { return segments_.size(); }
  std::span<const std::byte> segment(std::size_t i) const noexcept {
    return {reinterpret_cast<const std::byte*>(segments_[i].begin()), segments_[i].size() * sizeof(capnp::word)};
  }
  // Runs fn(*this), turning a kj::Exception into kBadDescriptor (counted).
  template <class Fn>
  std::error_code read(Fn&& fn, TypedStats* stats = nullptr) noexcept {
    try {
      fn(*this);
      return {};
    } catch (const kj::Exception& e) {
      detail::count_capnp_rejection(stats, e);
      return Errc::kBadDescriptor;
    }
  }

  CapnpMessage(CapnpMessage&&) noexcept = default;
  CapnpMessage& operator=(CapnpMessage&&) noexcept = default;

 private:
  friend struct detail::CapnpAccess;
  using Segments = kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>;
  static kj::ArrayPtr<const capnp::word> words(std::span<const std::byte> b) noexcept {
    return {reinterpret_cast<const capnp::word*>(b.data()), b.size() / sizeof(capnp::word)};
  }
  // `view` or `message` holds the segments (the other is empty).
  CapnpMessage(View view, Message message, capnp::ReaderOptions options)
      : view_(std::move(view)), message_(std::move(message)) {
    if (view_) segments_.push_back(words(view_.bytes()));
    for (std::size_t i = 0; i < message_.slice_count(); ++i) segments_.push_back(words(message_.slice(i)));
    reader_ = std::make_unique<capnp::SegmentArrayMessageReader>(Segments(segments_.data(), segments_.size()),
                                                                 options);
  }

  View view_;
  Message message_;
  std::vector<kj::ArrayPtr<const capnp::word>> segments_;  // heap: stays put when moved
  std::unique_ptr<capnp::SegmentArrayMessageReader> reader_;
};

// nestingLimit is capped at this (the validating walk recurses).
inline constexpr int kMaxCapnpNesting = 256;

namespace detail {

struct CapnpAccess {
  static Result<CapnpMessage> open(View view, Message message, capnp::ReaderOptions options,
                                   TypedStats* stats) noexcept {
    const char* why = nullptr;
    const std::size_t n = view ? 1 : message.slice_count();
    if (n == 0) why = "no segments";
    else if (n > kMaxCapnpSegments) why = "more segments than a message may have";
    for (std::size_t i = 0; i < n && !why; ++i) {
      const auto b = view ? view.bytes() : message.slice(i);
      if (b.empty()) why = "empty segment";
      else if (b.size() % sizeof(capnp::word) != 0) why = "segment not a whole number of words";
      else if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(capnp::word) != 0)
        why = "segment not word-aligned";
    }
    if (why) {
      count_rejection(stats, why);
      return Errc::kBadDescriptor;
    }
    options.nestingLimit = std::min(options.nestingLimit, kMaxCapnpNesting);
    try {
      CapnpMessage m(std::move(view), std::move(message), options);
      // A reader of its own for the walk, so that the message's reader
      // starts with its whole traversal budget.
      capnp::SegmentArrayMessageReader check(CapnpMessage::Segments(m.segments_.data(), m.segments_.size()),
                                             options);
      walk_capnp(check.getRoot<capnp::AnyPointer>());
      if (stats) ++stats->accepted;
      return m;
    } catch (const kj::Exception& e) {
      count_capnp_rejection(stats, e);
      return Errc::kBadDescriptor;
    } catch (const std::bad_alloc&) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
  }
};

}  // namespace detail

// Checks and validates a received message (see the top of this file): one
// buffer (a View), or an aggregate whose slices are its segments in order.
// Errc::kBadDescriptor, counted in `stats` with the reason, for a message
// refused; its buffers are then dropped (back to their owner).
inline Result<CapnpMessage> read_capnp(View view, capnp::ReaderOptions options = {},
                                       TypedStats* stats = nullptr) noexcept {
  if (!view) return Errc::kInvalidArgument;
  return detail::CapnpAccess::open(std::move(view), Message(), options, stats);
}
inline Result<CapnpMessage> read_capnp(Message message, capnp::ReaderOptions options = {},
                                       TypedStats* stats = nullptr) noexcept {
  return detail::CapnpAccess::open(View(), std::move(message), options, stats);
}

// Receives the next message (one buffer or an aggregate) and reads it:
// the receiver's errors as Receiver::receive_message(), then read_capnp's.
inline Result<CapnpMessage> receive_capnp(Receiver& rx, std::chrono::nanoseconds timeout,
                                          capnp::ReaderOptions options = {}, TypedStats* stats = nullptr) noexcept {
  auto m = rx.receive_message(timeout);
  if (!m) return m.error();
  return read_capnp(std::move(*m), options, stats);
}
}  // namespace fbuf::typed
